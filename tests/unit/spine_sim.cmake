# mhs-spine-sim against the real binary (HTTPS, client certificates, fault
# injection, /_sim/), plus its message table and config reader in-process.
set(MHS_SIM_DIR ${CMAKE_CURRENT_SOURCE_DIR}/../tools/spine-sim)
mhs_unit_test(spine_sim
	SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_spine_sim.c
		${MHS_SIM_DIR}/sim_table.c ${MHS_SIM_DIR}/sim_json.c
	LIBS mhs_ebxml mhs_common PkgConfig::CURL)
target_include_directories(test_spine_sim PRIVATE ${MHS_SIM_DIR})
target_compile_definitions(test_spine_sim PRIVATE
	MHS_SPINE_SIM_BIN="$<TARGET_FILE:mhs-spine-sim>")
add_dependencies(test_spine_sim mhs-spine-sim)
