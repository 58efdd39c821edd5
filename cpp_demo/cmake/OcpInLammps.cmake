# Compiles pair_style ocp into a LAMMPS CMake build. Included at the end of
# LAMMPS's cmake/CMakeLists.txt by lammps/patch_lammps.sh, which also copies
# pair_ocp.{h,cpp} and full_list_request.h into LAMMPS's src/ (there LAMMPS
# picks up pair_ocp.cpp with its own sources and registers the
# PairStyle(ocp,PairOCP) line of pair_ocp.h like any built-in style).
#
# Here: the ocp-deploy core (LibTorch behind a torch-free header) is built
# from this checkout and linked into the `lammps` target, and the API probe
# runs against this LAMMPS's own headers. Needs CMAKE_PREFIX_PATH to point at
# LibTorch (python -c 'import torch;print(torch.utils.cmake_prefix_path)').
cmake_minimum_required(VERSION 3.18)  # the core's minimum
get_filename_component(OCP_DEPLOY_CPP_DIR ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)

if(NOT TARGET lammps)
  message(FATAL_ERROR "OcpInLammps.cmake: include it at the end of LAMMPS's cmake/CMakeLists.txt "
                      "(after the lammps target exists); see cpp_demo/lammps/patch_lammps.sh")
endif()
if(NOT EXISTS ${LAMMPS_SOURCE_DIR}/pair_ocp.cpp)
  message(FATAL_ERROR "OcpInLammps.cmake: ${LAMMPS_SOURCE_DIR}/pair_ocp.cpp is missing; run "
                      "cpp_demo/lammps/patch_lammps.sh on this LAMMPS tree")
endif()

# Only the core: no md_host, no lmp_ocp, no plugin inside a LAMMPS build.
set(OCP_DEPLOY_BUILD_MD_HOST OFF CACHE BOOL "" FORCE)
set(OCP_DEPLOY_BUILD_LAMMPS OFF CACHE BOOL "" FORCE)
set(OCP_DEPLOY_LAMMPS_PLUGIN_HEADERS "" CACHE PATH "" FORCE)
add_subdirectory(${OCP_DEPLOY_CPP_DIR} ${CMAKE_BINARY_DIR}/ocp_deploy)
# The core requires C++17 (PUBLIC compile feature): this raises the lammps
# target's standard where the LAMMPS release defaults to an older one.
target_link_libraries(lammps PRIVATE ocp_deploy_core)

include(${OCP_DEPLOY_CPP_DIR}/cmake/OcpLammpsApi.cmake)
if(BUILD_MPI)
  set(ocp_mpi_includes ${MPI_CXX_INCLUDE_DIRS})
else()
  set(ocp_mpi_includes ${LAMMPS_SOURCE_DIR}/STUBS)
endif()
ocp_lammps_probe_api(ocp_api ${LAMMPS_SOURCE_DIR} ${ocp_mpi_includes})
if(ocp_api STREQUAL "MODERN")
  set_property(SOURCE ${LAMMPS_SOURCE_DIR}/pair_ocp.cpp APPEND PROPERTY COMPILE_DEFINITIONS OCP_LAMMPS_MODERN_API)
endif()
message(STATUS "pair_style ocp compiled into LAMMPS (${ocp_api} API), LibTorch from ${Torch_DIR}")
