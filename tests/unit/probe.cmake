# The HTTP probe server (common/probe.c), over real loopback sockets.
mhs_unit_test(probe
	SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_probe.c
	LIBS mhs_common)
