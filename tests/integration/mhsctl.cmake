# mhsctl as an operator runs it (README), against the real stack.
add_executable(test_mhsctl
	${CMAKE_CURRENT_SOURCE_DIR}/integration/test_mhsctl.c
	${CMAKE_CURRENT_SOURCE_DIR}/integration/stack.c)
target_include_directories(test_mhsctl PRIVATE
	${CMAKE_CURRENT_SOURCE_DIR}/integration)
target_compile_definitions(test_mhsctl PRIVATE
	MHS_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
	MHS_BUILD_DIR="${PROJECT_BINARY_DIR}"
	MHSCTL_BIN="$<TARGET_FILE:mhsctl>")
target_link_libraries(test_mhsctl PRIVATE mhs_common PkgConfig::CURL
	${CRITERION_LIB})
foreach(t mhs-gateway mhs-store mhs-router mhs-spine-sim mhsctl)
	if(TARGET ${t})
		add_dependencies(test_mhsctl ${t})
	endif()
endforeach()
add_test(NAME integration_mhsctl COMMAND test_mhsctl -j1 --timeout 240)
set_tests_properties(integration_mhsctl PROPERTIES
	LABELS integration TIMEOUT 400)
