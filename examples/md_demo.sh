#!/usr/bin/env bash
# Checkpoint -> export-model -> energy-conserving NVE in md_host and lmp_ocp,
# with the drift and a verdict.
#
#   examples/md_demo.sh [CHECKPOINT] [STRUCTURE]
#
# Defaults: a small PaiNN checkpoint that this script builds (see step 2) on
# a 32-atom fcc Cu bulk. Environment: OUT (work folder, default
# /tmp/ocp_md_demo), BUILD (cpp_demo build folder, default cpp_demo/build),
# STEPS (default 200), DT (fs, default 0.5), TEMPERATURE (K, default 300),
# DRIFT_TOLERANCE (eV/atom/ps, default 1e-3: |drift| at or below it is
# "conserved").
# Needs: pip install -e . (export-model), cmake + g++, and for lmp_ocp
# apt-get install lammps liblammps-dev.
#
# Energy is conserved only where the model's energy is a smooth function of
# the positions (README, "Energy conservation in MD"): conservative forces
# (-dE/dx), a time step small for the fastest vibration, and no jumps in the
# energy. fairchem's strict max-neighbour cap makes the energy jump whenever
# the capped neighbour set changes, and a PaiNN checkpoint with non-zero
# rbf_proj biases jumps whenever an edge crosses the cutoff. The default
# checkpoint avoids both; step 5 checks the cap for any checkpoint and
# structure given.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECKPOINT="${1:-}"
STRUCTURE="${2:-}"
OUT="${OUT:-/tmp/ocp_md_demo}"
BUILD="${BUILD:-$ROOT/cpp_demo/build}"
STEPS="${STEPS:-200}"
DT="${DT:-0.5}"
TEMPERATURE="${TEMPERATURE:-300}"
DRIFT_TOLERANCE="${DRIFT_TOLERANCE:-1e-3}"
mkdir -p "$OUT"

echo "== 1. build the C++ hosts (LibTorch from the torch wheel)"
cmake -S "$ROOT/cpp_demo" -B "$BUILD" \
  -DCMAKE_PREFIX_PATH="$(python -c 'import torch;print(torch.utils.cmake_prefix_path)')" > "$OUT/cmake.log"
cmake --build "$BUILD" -j2 >> "$OUT/cmake.log"

if [[ -z "$CHECKPOINT" ]]; then
  echo "== 2. build a PaiNN checkpoint (random weights, smooth energy surface)"
  # Random weights from the modules' own initialisation (no extra noise: its
  # forces stay moderate), cutoff 6 A and a cap of 100 neighbours (fcc Cu
  # has 78 within 6 A, 86 when the next shell moves in: the cap never
  # binds). The message layers' rbf_proj biases are zero, as fairchem
  # initialises them: with a bias, an edge's message does not vanish at the
  # cutoff and the energy jumps whenever a pair crosses it.
  CHECKPOINT="$OUT/painn_smooth.pt"
  python - "$CHECKPOINT" <<'EOF'
import sys

import torch

from ocpdeploy.exporter.random_checkpoint import write_random_checkpoint

path = sys.argv[1]
write_random_checkpoint("painn", {"hidden_channels": 64, "num_layers": 3, "num_rbf": 32, "cutoff": 6.0,
                                  "max_neighbors": 100, "regress_forces": True, "direct_forces": True,
                                  "use_pbc": True}, path, seed=0, noise=0.0)
checkpoint = torch.load(path, weights_only=True)
for key, value in checkpoint["state_dict"].items():
    if key.endswith("rbf_proj.bias"):
        value.zero_()
torch.save(checkpoint, path)
print(f"wrote {path}")
EOF
else
  echo "== 2. checkpoint: $CHECKPOINT"
fi

echo "== 3. export the checkpoint with conservative forces (-dE/dx: the energy's own gradient)"
export-model "$CHECKPOINT" --format torchscript --forces conservative -o "$OUT/model.pt"

echo "== 4. structure files (extxyz for md_host, data file for LAMMPS)"
if [[ -z "$STRUCTURE" ]]; then
  # The perfect lattice: forces vanish there by symmetry for any model.
  python "$ROOT/examples/lammps/make_data.py" --bulk Cu --repeat 2 --out "$OUT"
else
  python "$ROOT/examples/lammps/make_data.py" "$STRUCTURE" --out "$OUT"
fi

echo "== 5. does a max-neighbour cap bind on this structure?"
export-model info "$OUT/model.pt" > "$OUT/metadata.json"
python - "$OUT/metadata.json" "$OUT/structure.extxyz" <<'EOF'
import json
import sys

import numpy as np
import torch
from ase.io import read

from ocpdeploy.runtime.radius_graph import radius_graph_pbc

graph = json.load(open(sys.argv[1]))["graph"]
atoms = read(sys.argv[2])
binding = False
for key, cap in graph.items():
    if not key.startswith("max_neighbors"):
        continue
    cutoff = graph["cutoff" + key[len("max_neighbors"):]]
    edge_index, _ = radius_graph_pbc(torch.tensor(atoms.positions), torch.tensor(np.asarray(atoms.cell)),
                                     torch.tensor(atoms.pbc), float(cutoff), 0)  # cap 0: every neighbour
    most = int(np.bincount(edge_index[1].numpy(), minlength=len(atoms)).max())
    # One shell more than today's count may move in during the run; the cap
    # binds as soon as the count exceeds it.
    verdict = "binds: the energy jumps whenever the capped set changes" if most > cap else "does not bind now"
    binding |= most > cap
    print(f"{key} {cap}: at most {most} neighbours within {cutoff} A -> the cap {verdict}")
if binding:
    print("expect no energy conservation (README, 'Energy conservation in MD')")
EOF

echo "== 6. md_host: NVE velocity Verlet, $DT fs, $STEPS steps, T0 $TEMPERATURE K"
"$BUILD/md_host" "$OUT/model.pt" "$OUT/structure.extxyz" --steps "$STEPS" --dt "$DT" \
  --temperature "$TEMPERATURE" --drift-tolerance "$DRIFT_TOLERANCE" \
  --trajectory "$OUT/md_host.extxyz" --trajectory-every 10

if [[ -x "$BUILD/lmp_ocp" ]]; then
  echo "== 7. lmp_ocp: the same system with pair_style ocp"
  # Open MPI refuses to start as root unless told (containers). LAMMPS takes
  # the time step in ps.
  DT_PS="$(python -c "print($DT / 1000)")"
  (cd "$OUT" && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    "$BUILD/lmp_ocp" -in "$ROOT/examples/lammps/in.ocp" -var artifact model.pt -var steps "$STEPS" \
    -var dt "$DT_PS" -var temperature "$TEMPERATURE" -log lammps.log -nocite)
  # Drift of LAMMPS's etotal, as md_host computes it (least-squares slope, per atom).
  python - "$OUT/lammps.log" "$DRIFT_TOLERANCE" <<'EOF'
import sys

import numpy as np

rows, columns, reading, atoms = [], [], False, 0
for line in open(sys.argv[1]):  # the thermo table between "Step ..." and "Loop time ... with N atoms"
    words = line.split()
    if words[:1] == ["Step"]:
        columns, reading = words, True
    elif line.startswith("Loop time"):
        reading, atoms = False, int(words[-2])
    elif reading and len(words) == len(columns):
        rows.append([float(word) for word in words])
table = np.array(rows)
drift = np.polyfit(table[:, columns.index("Time")], table[:, columns.index("TotEng")], 1)[0] / atoms
tolerance = float(sys.argv[2])
verdict = "conserved" if abs(drift) <= tolerance else "NOT conserved"
sign = "<=" if abs(drift) <= tolerance else ">"
print(f"lmp_ocp nve_drift_eV_per_atom_per_ps {drift:.6e}")
print(f"lmp_ocp nve_verdict {verdict}: |drift| {abs(drift):.2e} {sign} {tolerance:.2e} eV/atom/ps")
EOF
else
  echo "== 7. lmp_ocp not built (install lammps liblammps-dev and re-run)"
fi
echo "outputs in $OUT"
