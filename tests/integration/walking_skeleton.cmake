# The end-to-end walking skeleton on the real stack (scripts/run).
add_executable(test_walking_skeleton
	${CMAKE_CURRENT_SOURCE_DIR}/integration/test_walking_skeleton.c
	${CMAKE_CURRENT_SOURCE_DIR}/integration/stack.c)
target_include_directories(test_walking_skeleton PRIVATE
	${CMAKE_CURRENT_SOURCE_DIR}/integration)
target_compile_definitions(test_walking_skeleton PRIVATE
	MHS_SOURCE_DIR="${PROJECT_SOURCE_DIR}" MHS_BUILD_DIR="${PROJECT_BINARY_DIR}")
target_link_libraries(test_walking_skeleton PRIVATE mhs_common
	PkgConfig::CURL ${CRITERION_LIB})
foreach(t mhs-gateway mhs-store mhs-router mhs-spine-sim)
	if(TARGET ${t})
		add_dependencies(test_walking_skeleton ${t})
	endif()
endforeach()
add_test(NAME integration_walking_skeleton
	COMMAND test_walking_skeleton -j1 --timeout 300)
set_tests_properties(integration_walking_skeleton PROPERTIES
	LABELS integration TIMEOUT 600)
