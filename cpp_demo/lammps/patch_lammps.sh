#!/usr/bin/env bash
# patch_lammps.sh LAMMPS_DIR - compile pair_style ocp into a LAMMPS source tree
# (CMake build). Copies pair_ocp.{h,cpp} and full_list_request.h into
# LAMMPS_DIR/src and appends one include() of cpp_demo/cmake/OcpInLammps.cmake
# to LAMMPS_DIR/cmake/CMakeLists.txt (once). Rerun after updating this checkout.
# Then build LAMMPS as usual, with LibTorch on CMAKE_PREFIX_PATH:
#   cmake -S LAMMPS_DIR/cmake -B build \
#         -DCMAKE_PREFIX_PATH=$(python -c 'import torch;print(torch.utils.cmake_prefix_path)')
#   cmake --build build -j
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 LAMMPS_DIR" >&2
  exit 2
fi
lammps=$(cd "$1" 2>/dev/null && pwd) || { echo "patch_lammps.sh: error: no directory '$1'" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
cmakelists="$lammps/cmake/CMakeLists.txt"
if [ ! -f "$lammps/src/pair.h" ] || [ ! -f "$cmakelists" ]; then
  echo "patch_lammps.sh: error: '$lammps' is not a LAMMPS source tree (no src/pair.h or cmake/CMakeLists.txt)" >&2
  exit 1
fi

cp "$here/pair_ocp.h" "$here/pair_ocp.cpp" "$here/full_list_request.h" "$lammps/src/"
marker="# ocp-deploy: pair_style ocp"
if ! grep -qF "$marker" "$cmakelists"; then
  printf '\n%s\ninclude("%s")\n' "$marker" "$(cd "$here/../cmake" && pwd)/OcpInLammps.cmake" >> "$cmakelists"
fi
echo "patched $lammps: src/pair_ocp.{h,cpp}, src/full_list_request.h, cmake/CMakeLists.txt"
