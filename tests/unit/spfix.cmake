# nng 1.5.2's ipc handshake bug and its workarounds (common/spfix.c), over
# real ipc:// sockets.
mhs_unit_test(spfix
	SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_spfix.c
	LIBS mhs_common)
# The guard test breaks a listener on purpose; nng never frees it.
set_tests_properties(unit_spfix PROPERTIES ENVIRONMENT
	"LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/lsan-nng-ipc.supp:print_suppressions=0")
