# The router and Spine (DESIGN §5, issue 5) on the real stack: the inbound
# listener and each fault class. One executable, one ctest entry per suite
# (each test starts its own stack).
add_executable(test_router
	${CMAKE_CURRENT_SOURCE_DIR}/integration/test_router.c
	${CMAKE_CURRENT_SOURCE_DIR}/integration/stack.c)
target_include_directories(test_router PRIVATE
	${CMAKE_CURRENT_SOURCE_DIR}/integration)
target_compile_definitions(test_router PRIVATE
	MHS_SOURCE_DIR="${PROJECT_SOURCE_DIR}" MHS_BUILD_DIR="${PROJECT_BINARY_DIR}")
target_link_libraries(test_router PRIVATE mhs_ebxml mhs_common
	PkgConfig::CURL ${CRITERION_LIB})
foreach(t mhs-gateway mhs-store mhs-router mhs-spine-sim)
	if(TARGET ${t})
		add_dependencies(test_router ${t})
	endif()
endforeach()
foreach(suite router_inbound router_inbound_limits router_faults)
	add_test(NAME integration_${suite}
		COMMAND test_router -j1 --timeout 300 --filter ${suite}/*)
	set_tests_properties(integration_${suite} PROPERTIES
		LABELS integration TIMEOUT 1200)
endforeach()
