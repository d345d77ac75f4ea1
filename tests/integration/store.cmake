# The store's guarantees (G2, G3, G5; DESIGN §4) on the real stack: one
# executable, one ctest entry per suite (each test starts its own stack).
add_executable(test_store
	${CMAKE_CURRENT_SOURCE_DIR}/integration/test_store.c
	${CMAKE_CURRENT_SOURCE_DIR}/integration/stack.c)
target_include_directories(test_store PRIVATE
	${CMAKE_CURRENT_SOURCE_DIR}/integration)
target_compile_definitions(test_store PRIVATE
	MHS_SOURCE_DIR="${PROJECT_SOURCE_DIR}" MHS_BUILD_DIR="${PROJECT_BINARY_DIR}")
target_link_libraries(test_store PRIVATE mhs_journal mhs_common
	PkgConfig::CURL Threads::Threads ${CRITERION_LIB})
foreach(t mhs-gateway mhs-store mhs-router mhs-spine-sim)
	if(TARGET ${t})
		add_dependencies(test_store ${t})
	endif()
endforeach()
foreach(suite store_durability store_recovery store_outage store_idempotency
		store_audit store_dead_letters store_search store_handshake
		store_priority)
	add_test(NAME integration_${suite}
		COMMAND test_store -j1 --timeout 300 --filter ${suite}/*)
	set_tests_properties(integration_${suite} PROPERTIES
		LABELS integration TIMEOUT 600)
endforeach()
# store_handshake breaks the store's ipc listener on purpose (nng 1.5.2);
# nng never frees the broken one (tests/lsan-nng-ipc.supp).
set_tests_properties(integration_store_handshake PROPERTIES ENVIRONMENT
	"LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/lsan-nng-ipc.supp:print_suppressions=0")
