# mhs-gateway on the real stack: the bad-input matrix, TLS, overload,
# deadlines, drain and readiness (issue 4).
add_executable(test_gateway
	${CMAKE_CURRENT_SOURCE_DIR}/integration/test_gateway.c
	${CMAKE_CURRENT_SOURCE_DIR}/integration/stack.c)
target_include_directories(test_gateway PRIVATE
	${CMAKE_CURRENT_SOURCE_DIR}/integration)
target_compile_definitions(test_gateway PRIVATE
	MHS_SOURCE_DIR="${PROJECT_SOURCE_DIR}" MHS_BUILD_DIR="${PROJECT_BINARY_DIR}"
	MHS_GATEWAY_BIN="$<TARGET_FILE:mhs-gateway>")
target_link_libraries(test_gateway PRIVATE mhs_common
	PkgConfig::CURL ${CRITERION_LIB})
foreach(t mhs-gateway mhs-store mhs-router mhs-spine-sim)
	if(TARGET ${t})
		add_dependencies(test_gateway ${t})
	endif()
endforeach()
add_test(NAME integration_gateway COMMAND test_gateway -j1 --timeout 300)
set_tests_properties(integration_gateway PROPERTIES
	LABELS integration TIMEOUT 900)
