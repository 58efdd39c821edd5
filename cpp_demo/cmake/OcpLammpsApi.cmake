# ocp_lammps_probe_api(<result_var> <include dir> ...)
#
# Compile probes (no link) of the LAMMPS headers in the given include
# directories: sets <result_var> to MODERN when they have the mid-2022+ API
# that pair ocp uses (neighbor->add_request(pair, NeighConst::REQ_FULL),
# comm->forward_comm(pair) and comm->reverse_comm(pair)), to LEGACY when they
# have the 2021 API (neighbor->request(pair, instance),
# comm->forward_comm_pair(pair), comm->reverse_comm_pair(pair)), and
# stops with an error when neither compiles (wrong directory, no mpi.h, no
# fmt). The include directories must also provide mpi.h (or LAMMPS's STUBS)
# and fmt/format.h.
#
# ocp_lammps_apply_api(<target> <api>) adds OCP_LAMMPS_MODERN_API to
# <target> for MODERN.
#
# ocp_lammps_package_version(<result_var> <lammps/__init__.py>) sets
# <result_var> to the LAMMPS version of a Python package (__version__ =
# YYYYMMDD) in LAMMPS's own spelling ("22 Jul 2025"), or to "" when the file
# has none.
include_guard(GLOBAL)

set(_OCP_LAMMPS_PROBE_MODERN [=[
#include "comm.h"
#include "neighbor.h"
#include "pair.h"
namespace LAMMPS_NS {
class OcpProbePair : public Pair {
 public:
  explicit OcpProbePair(LAMMPS* lmp) : Pair(lmp) {}
  void compute(int, int) override {}
  void settings(int, char**) override {}
  void coeff(int, char**) override {}
  void init_style() override {
    neighbor->add_request(this, NeighConst::REQ_FULL);
    comm->forward_comm(this);
    comm->reverse_comm(this);
  }
};
}  // namespace LAMMPS_NS
]=])

set(_OCP_LAMMPS_PROBE_LEGACY [=[
#include "comm.h"
#include "neighbor.h"
#include "pair.h"
namespace LAMMPS_NS {
class OcpProbePair : public Pair {
 public:
  explicit OcpProbePair(LAMMPS* lmp) : Pair(lmp) {}
  void compute(int, int) override {}
  void settings(int, char**) override {}
  void coeff(int, char**) override {}
  void init_style() override {
    neighbor->request(this, instance_me);
    comm->forward_comm_pair(this);
    comm->reverse_comm_pair(this);
  }
};
}  // namespace LAMMPS_NS
]=])

# try_compile of one probe source; result in ${ok_var}, compiler output in ${log_var}.
function(_ocp_lammps_try name source include_dirs ok_var log_var)
  set(dir "${CMAKE_BINARY_DIR}/ocp_lammps_probe/${name}")
  file(WRITE "${dir}/probe.cpp" "${source}")
  # Headers only: compiled into a static library, never linked to liblammps.
  set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
  try_compile(ok "${dir}/build" SOURCES "${dir}/probe.cpp"
    CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${include_dirs}"
    CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
    OUTPUT_VARIABLE output)
  file(WRITE "${dir}/probe.log" "${output}")
  set(${ok_var} ${ok} PARENT_SCOPE)
  set(${log_var} "${dir}/probe.log" PARENT_SCOPE)
endfunction()

function(ocp_lammps_probe_api result_var)
  set(include_dirs ${ARGN})
  # The probes' text is part of the key: a changed probe runs again.
  string(SHA1 key "${include_dirs}${_OCP_LAMMPS_PROBE_MODERN}${_OCP_LAMMPS_PROBE_LEGACY}")
  set(cache_var "OCP_LAMMPS_API_${key}")
  if(NOT DEFINED ${cache_var})
    _ocp_lammps_try("${key}_modern" "${_OCP_LAMMPS_PROBE_MODERN}" "${include_dirs}" modern modern_log)
    if(modern)
      set(api MODERN)
    else()
      _ocp_lammps_try("${key}_legacy" "${_OCP_LAMMPS_PROBE_LEGACY}" "${include_dirs}" legacy legacy_log)
      if(NOT legacy)
        message(FATAL_ERROR "pair ocp: the LAMMPS headers in '${include_dirs}' compile with neither "
                            "the modern nor the 2021 pair-style API (see ${modern_log})")
      endif()
      set(api LEGACY)
    endif()
    set(${cache_var} ${api} CACHE INTERNAL "LAMMPS API of ${include_dirs}")
  endif()
  set(${result_var} ${${cache_var}} PARENT_SCOPE)
endfunction()

function(ocp_lammps_apply_api target api)
  if(api STREQUAL "MODERN")
    target_compile_definitions(${target} PRIVATE OCP_LAMMPS_MODERN_API)
    message(STATUS "${target}: modern LAMMPS API (add_request, forward_comm(Pair*), reverse_comm(Pair*))")
  else()
    message(STATUS "${target}: 2021 LAMMPS API (request + NeighRequest mirror)")
  endif()
endfunction()

# Month names as LAMMPS_VERSION spells them.
set(_OCP_LAMMPS_MONTHS Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec)

function(ocp_lammps_package_version result_var init_file)
  set(version "")
  if(EXISTS ${init_file})
    file(STRINGS ${init_file} line REGEX "^__version__ *= *[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]")
    if(line MATCHES "([0-9][0-9][0-9][0-9])([0-9][0-9])([0-9][0-9])")
      set(year ${CMAKE_MATCH_1})
      math(EXPR month "${CMAKE_MATCH_2} - 1")
      math(EXPR day "${CMAKE_MATCH_3}")  # no leading zero, as LAMMPS writes it
      list(GET _OCP_LAMMPS_MONTHS ${month} month_name)
      set(version "${day} ${month_name} ${year}")
    endif()
  endif()
  set(${result_var} "${version}" PARENT_SCOPE)
endfunction()
