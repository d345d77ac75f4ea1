# The journal's suite: append, recovery, faults, policies (DESIGN §4).
mhs_unit_test(journal SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_journal.c LIBS mhs_journal mhs_common)
