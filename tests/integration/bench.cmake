# mhs-bench against the real stack (scripts/run): the --baseline contract
# line of DESIGN §6, --count, and the failure exits.
if(TARGET mhs-bench)
	add_executable(test_bench
		${CMAKE_CURRENT_SOURCE_DIR}/integration/test_bench.c
		${CMAKE_CURRENT_SOURCE_DIR}/integration/stack.c)
	target_include_directories(test_bench PRIVATE
		${CMAKE_CURRENT_SOURCE_DIR}/integration)
	target_compile_definitions(test_bench PRIVATE
		MHS_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
		MHS_BUILD_DIR="${PROJECT_BINARY_DIR}"
		MHS_BENCH_BIN="$<TARGET_FILE:mhs-bench>")
	target_link_libraries(test_bench PRIVATE mhs_common PkgConfig::CURL
		${CRITERION_LIB} m)
	foreach(t mhs-bench mhs-gateway mhs-store mhs-router mhs-spine-sim)
		if(TARGET ${t})
			add_dependencies(test_bench ${t})
		endif()
	endforeach()
	add_test(NAME integration_bench COMMAND test_bench -j1 --timeout 120)
	set_tests_properties(integration_bench PROPERTIES
		LABELS integration TIMEOUT 300)
endif()
