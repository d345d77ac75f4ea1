# The router's circuit breaker: pure logic, in-process.
mhs_unit_test(breaker
	SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_breaker.c
		${CMAKE_CURRENT_SOURCE_DIR}/../router/breaker.c
	LIBS mhs_common)
target_include_directories(test_breaker PRIVATE
	${CMAKE_CURRENT_SOURCE_DIR}/../router)
