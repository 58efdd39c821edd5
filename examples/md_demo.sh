#!/usr/bin/env bash
# Checkpoint -> export-model -> md_host and lmp_ocp.
#
#   examples/md_demo.sh [CHECKPOINT] [STRUCTURE]
#
# Defaults: tests/data/checkpoints/painn_tiny.pt on tests/data/structures/v1.extxyz.
# Environment: OUT (work folder, default /tmp/ocp_md_demo), BUILD (cpp_demo
# build folder, default cpp_demo/build), STEPS (default 50).
# Needs: pip install -e . (export-model), cmake + g++, and for lmp_ocp
# apt-get install lammps liblammps-dev.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECKPOINT="${1:-$ROOT/tests/data/checkpoints/painn_tiny.pt}"
STRUCTURE="${2:-$ROOT/tests/data/structures/v1.extxyz}"
OUT="${OUT:-/tmp/ocp_md_demo}"
BUILD="${BUILD:-$ROOT/cpp_demo/build}"
STEPS="${STEPS:-50}"
mkdir -p "$OUT"

echo "== 1. build the C++ hosts (LibTorch from the torch wheel)"
cmake -S "$ROOT/cpp_demo" -B "$BUILD" \
  -DCMAKE_PREFIX_PATH="$(python -c 'import torch;print(torch.utils.cmake_prefix_path)')" > "$OUT/cmake.log"
cmake --build "$BUILD" -j2 >> "$OUT/cmake.log"

echo "== 2. export the checkpoint (conservative forces: -dE/dx, energy-conserving MD)"
export-model "$CHECKPOINT" --format torchscript --forces conservative -o "$OUT/model.pt"

echo "== 3. structure files (extxyz for md_host, data file for LAMMPS)"
python "$ROOT/examples/lammps/make_data.py" "$STRUCTURE" --out "$OUT"

echo "== 4. md_host: NVE velocity Verlet, 1 fs"
"$BUILD/md_host" "$OUT/model.pt" "$OUT/structure.extxyz" --steps "$STEPS" --dt 1.0 \
  --temperature 300 --trajectory "$OUT/md_host.extxyz" --trajectory-every 10

if [[ -x "$BUILD/lmp_ocp" ]]; then
  echo "== 5. lmp_ocp: the same system with pair_style ocp"
  # Open MPI refuses to start as root unless told (containers).
  (cd "$OUT" && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    "$BUILD/lmp_ocp" -in "$ROOT/examples/lammps/in.ocp" -var artifact model.pt -var steps "$STEPS" \
    -log lammps.log -nocite)
else
  echo "== 5. lmp_ocp not built (install lammps liblammps-dev and re-run)"
fi
echo "outputs in $OUT"
