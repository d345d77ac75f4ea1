# Journal retention in the running store (real redis-server and mhs-store).
add_executable(test_retention
	${CMAKE_CURRENT_SOURCE_DIR}/integration/test_retention.c
	${CMAKE_CURRENT_SOURCE_DIR}/integration/stack.c)
target_include_directories(test_retention PRIVATE
	${CMAKE_CURRENT_SOURCE_DIR}/integration)
target_compile_definitions(test_retention PRIVATE
	MHS_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
	MHS_BUILD_DIR="${PROJECT_BINARY_DIR}"
	MHS_STORE_BIN="$<TARGET_FILE:mhs-store>"
	JOURNAL_BENCH_BIN="$<TARGET_FILE:mhs-journal-bench>")
target_link_libraries(test_retention PRIVATE mhs_common PkgConfig::CURL
	${CRITERION_LIB})
add_dependencies(test_retention mhs-store mhs-journal-bench)
add_test(NAME integration_store_retention
	COMMAND test_retention -j1 --timeout 120)
set_tests_properties(integration_store_retention PROPERTIES
	LABELS integration TIMEOUT 300)
