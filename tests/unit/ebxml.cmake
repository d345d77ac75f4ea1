# ebXML wire format: build, parse, classify (router/ebxml).
mhs_unit_test(ebxml SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_ebxml.c
	LIBS mhs_ebxml mhs_common)
