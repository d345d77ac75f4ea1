# cmake/install.cmake: what `cmake --install` puts beside the programs (whose
# own install(TARGETS) rules are in their directories). Included from the
# top-level CMakeLists.txt:
#
#   systemd units   deploy/systemd/*          -> MHS_SYSTEMD_UNIT_DIR
#   sysusers        deploy/sysusers/mhs.conf  -> MHS_SYSUSERS_DIR
#   configuration   deploy/config/*           -> <sysconfdir>/mhs (kept if
#                   already there; MHS_INSTALL_OVERWRITE_CONFIG=ON replaces)
#   documentation   README.md, docs/*.md      -> <docdir>
#   examples        config and units (as installed) -> <docdir>/examples
#
# The files in deploy/ name the Debian paths (/usr/bin, /etc/mhs,
# /usr/share/doc/mhs). The installed copies name this build's paths
# instead, so a unit always starts the binary installed with it:
#   cmake -S . -B build -DCMAKE_INSTALL_PREFIX=/usr && cmake --build build
#   cmake --install build        # /usr/bin, /etc/mhs, /usr/lib/systemd/system
# Set the prefix when configuring (the paths are written into the units
# then), not with `cmake --install --prefix`. DESTDIR works as usual.
#
# Configuration goes to CMAKE_INSTALL_FULL_SYSCONFDIR, not the relative
# CMAKE_INSTALL_SYSCONFDIR: GNUInstallDirs maps prefix /usr to /etc only in
# the FULL form (the relative one would give /usr/etc).
include(GNUInstallDirs)

set(MHS_SYSTEMD_UNIT_DIR "${CMAKE_INSTALL_PREFIX}/lib/systemd/system"
	CACHE PATH "Where the systemd unit files are installed")
set(MHS_SYSUSERS_DIR "${CMAKE_INSTALL_PREFIX}/lib/sysusers.d"
	CACHE PATH "Where the sysusers.d file creating the mhs account is installed")
option(MHS_INSTALL_OVERWRITE_CONFIG
	"Replace configuration files already present in <sysconfdir>/mhs" OFF)

set(MHS_CONFIG_DIR "${CMAKE_INSTALL_FULL_SYSCONFDIR}/mhs")
set(_mhs_deploy "${PROJECT_SOURCE_DIR}/deploy")
set(_mhs_gen "${PROJECT_BINARY_DIR}/deploy")

# _mhs_localize(SRC DST): copy SRC to DST with the Debian paths replaced by
# this build's. Re-run when SRC changes (it is a configure dependency).
function(_mhs_localize src dst)
	file(READ "${src}" text)
	string(REPLACE "/usr/bin/" "${CMAKE_INSTALL_FULL_BINDIR}/" text "${text}")
	string(REPLACE "/usr/share/doc/mhs" "${CMAKE_INSTALL_FULL_DOCDIR}" text "${text}")
	string(REPLACE "/etc/mhs" "${MHS_CONFIG_DIR}" text "${text}")
	file(WRITE "${dst}" "${text}")
	set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${src}")
endfunction()

# ---- systemd units and the mhs account ----
file(GLOB _mhs_units CONFIGURE_DEPENDS
	"${_mhs_deploy}/systemd/*.service" "${_mhs_deploy}/systemd/*.target")
set(_mhs_units_gen "")
foreach(src IN LISTS _mhs_units)
	get_filename_component(name "${src}" NAME)
	_mhs_localize("${src}" "${_mhs_gen}/systemd/${name}")
	list(APPEND _mhs_units_gen "${_mhs_gen}/systemd/${name}")
endforeach()
install(FILES ${_mhs_units_gen} DESTINATION "${MHS_SYSTEMD_UNIT_DIR}"
	PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES "${_mhs_deploy}/sysusers/mhs.conf"
	DESTINATION "${MHS_SYSUSERS_DIR}"
	PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# ---- configuration: never replaces what an operator has edited ----
file(GLOB _mhs_configs CONFIGURE_DEPENDS
	"${_mhs_deploy}/config/*.ini" "${_mhs_deploy}/config/*.example")
set(_mhs_config_names "")
foreach(src IN LISTS _mhs_configs)
	get_filename_component(name "${src}" NAME)
	_mhs_localize("${src}" "${_mhs_gen}/config/${name}")
	list(APPEND _mhs_config_names "${name}")
endforeach()
# store.ini carries secrets (redis-password, nhs-index-key): not for
# everyone's eyes. Ownership (root:mhs) is the operator's step: the mhs
# account may not exist when this runs (docs/operations.md, Install).
install(CODE "
	set(_dir \"${MHS_CONFIG_DIR}\")
	foreach(_f ${_mhs_config_names})
		if(_f STREQUAL \"store.ini\")
			set(_perm OWNER_READ OWNER_WRITE GROUP_READ)
		else()
			set(_perm OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
		endif()
		if(${MHS_INSTALL_OVERWRITE_CONFIG} OR NOT EXISTS \"\$ENV{DESTDIR}\${_dir}/\${_f}\")
			file(INSTALL DESTINATION \"\${_dir}\" TYPE FILE
				PERMISSIONS \${_perm} FILES \"${_mhs_gen}/config/\${_f}\")
		else()
			message(STATUS \"Kept: \$ENV{DESTDIR}\${_dir}/\${_f} (the shipped one is in ${CMAKE_INSTALL_FULL_DOCDIR}/examples/config)\")
		endif()
	endforeach()
")

# ---- documentation, and the configuration and units for reference ----
file(GLOB _mhs_docs CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/docs/*.md")
install(FILES "${PROJECT_SOURCE_DIR}/README.md" ${_mhs_docs}
	DESTINATION "${CMAKE_INSTALL_DOCDIR}")
install(DIRECTORY "${_mhs_gen}/config" "${_mhs_gen}/systemd"
	DESTINATION "${CMAKE_INSTALL_DOCDIR}/examples")
