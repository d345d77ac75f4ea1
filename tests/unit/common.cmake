# Unit suites for common/ (libmhs_common).
mhs_unit_test(validate
	SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_validate.c
	LIBS mhs_common)
mhs_unit_test(config
	SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_config.c
	LIBS mhs_common)
mhs_unit_test(rpc
	SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_rpc.c
	LIBS mhs_common)
mhs_unit_test(common_misc
	SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_common_misc.c
	LIBS mhs_common)
