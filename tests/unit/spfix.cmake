# nng 1.5.2's ipc handshake bug and its workarounds (common/spfix.c), over
# real ipc:// sockets.
mhs_unit_test(spfix
	SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_spfix.c
	LIBS mhs_common)
