"""Where NVE cannot conserve energy: the max-neighbour cap, non-zero rbf_proj biases, random weights, time steps.

    python benchmarks/nve_cap.py [--out benchmarks/results/nve_cap.md] [--threads 1]

Velocity Verlet (ASE's ``VelocityVerlet``) with the Python runtime
(``ocpdeploy.runtime``, TorchScript artifacts exported with
``--forces conservative``, float32) on an fcc Cu bulk started on the perfect
lattice with Maxwell-Boltzmann velocities (seeded). Models (PaiNN, 3 layers,
64 channels, cutoff 6 A, the same seeded weights, built in a temporary
folder with ``exporter/random_checkpoint.py``):

* ``smooth``: cap 100 (fcc Cu has 78-86 neighbours within 6 A: the cap never
  binds) and the message layers' ``rbf_proj`` biases zero, as fairchem
  initialises them: the energy is a smooth function of the positions;
* ``rbf bias``: as ``smooth`` with the biases left as the random
  initialisation drew them (a trained checkpoint has non-zero biases too):
  an edge's message does not vanish at the cutoff, so the energy jumps
  when a pair crosses it;
* ``cap 50``: as ``smooth`` with the published PaiNN cap of 50 neighbours:
  the strict cap keeps 50 of the 54 atoms within the fourth shell
  (8 of its 12 equidistant atoms), so the capped set changes as atoms move;
* ``painn_tiny``: the test checkpoint (random weights with noise, cap 12)
  on the 29-atom Cu slab with CO, the old demo's setup: steep random forces.

Part 1: 1 ps at 0.5 fs, 300 K, 32 atoms (``--repeat 3``: 108) for
``smooth``, ``rbf bias`` and ``cap 50``. At every step the model's own graph (``runtime/graph_painn.py``:
the capped radius graph, symmetrised) is compared with the previous step's;
a step where it changed is an event. |dE| is the change of the total energy
over one step, at event steps and at the others. Part 2: drift and largest
deviation of the total energy against the time step (0.25-2 fs, 100 fs
runs, 32 atoms; the slab for ``painn_tiny``).
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

from ocpdeploy.runtime import DeployedCalculator  # first: it sets OpenMP's wait policy before torch loads

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.io import read
from ase.md import velocitydistribution
from ase.md.verlet import VelocityVerlet

from ocpdeploy.exporter.random_checkpoint import write_random_checkpoint
from ocpdeploy.runtime.graph_painn import PaiNNGraph

REPO = Path(__file__).resolve().parents[1]
SLAB = REPO / "tests" / "data" / "structures" / "v1.extxyz"
PAINN_TINY = REPO / "tests" / "data" / "checkpoints" / "painn_tiny.pt"
ARCHITECTURE = {"hidden_channels": 64, "num_layers": 3, "num_rbf": 32, "cutoff": 6.0, "regress_forces": True,
                "direct_forces": True, "use_pbc": True}
MODELS = {"smooth": (100, True), "rbf bias": (100, False), "cap 50": (50, True)}  # name: (cap, zero rbf_proj biases)
LATTICE = 3.61
TEMPERATURE_K = 300.0
SEED = 1
SHIFT_RANGE = 8  # |image shift| per lattice vector of any edge here (cells >= 7 A, cutoff 6 A)


def machine() -> str:
    cpu, isa = platform.processor() or "unknown", "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        cpu = fields.get("Model name", cpu).strip()
        flags = fields.get("Flags", "").split()
        isa = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {isa}"


def build_artifacts(folder: Path) -> Dict[str, Tuple[Path, int, float]]:
    """name -> (TorchScript artifact, cap, cutoff)."""
    artifacts = {}
    for name, (cap, zero_bias) in MODELS.items():
        checkpoint = folder / f"{name.replace(' ', '_')}.pt"
        write_random_checkpoint("painn", dict(ARCHITECTURE, max_neighbors=cap), checkpoint, seed=0, noise=0.0)
        if zero_bias:
            state = torch.load(checkpoint, weights_only=True)
            for key, value in state["state_dict"].items():
                if key.endswith("rbf_proj.bias"):
                    value.zero_()
            torch.save(state, checkpoint)
        artifacts[name] = (export(checkpoint, folder), cap, ARCHITECTURE["cutoff"])
    tiny = torch.load(PAINN_TINY, weights_only=True)["config"]["model_attributes"]
    artifacts["painn_tiny"] = (export(PAINN_TINY, folder), tiny["max_neighbors"], tiny["cutoff"])
    return artifacts


def export(checkpoint: Path, folder: Path) -> Path:
    artifact = folder / f"{checkpoint.stem}_ts.pt"
    subprocess.run(["export-model", str(checkpoint), "--format", "torchscript", "--forces", "conservative",
                    "-o", str(artifact)], check=True, capture_output=True)
    return artifact


def cu_bulk(repeat: int) -> Atoms:
    return bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat((repeat,) * 3)


def edge_keys(graph: PaiNNGraph, atoms: Atoms) -> torch.Tensor:
    """The model's edges (source, target, image shift) as sorted int64 keys.

    On the unwrapped positions of the run, so that an atom crossing the cell
    boundary changes no key: two steps have the same graph exactly when
    their keys are equal.
    """
    out = graph(torch.tensor(atoms.positions), torch.tensor(np.asarray(atoms.cell))[None],
                torch.tensor(atoms.pbc)[None], torch.tensor([len(atoms)]), torch.tensor(atoms.get_tags()))
    shifts = out["cell_offsets"].round().long() + SHIFT_RANGE  # each component in [0, 2 SHIFT_RANGE]
    width = 2 * SHIFT_RANGE + 1
    shift_code = (shifts[:, 0] * width + shifts[:, 1]) * width + shifts[:, 2]
    source, target = out["edge_index"]
    return torch.sort((source * len(atoms) + target) * width ** 3 + shift_code).values


def run_nve(artifact: Path, atoms: Atoms, dt_fs: float, duration_fs: float, cap: int, cutoff: float,
            watch_graph: bool) -> Dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = DeployedCalculator(str(artifact))
    # thermalize_momenta (ASE >= 3.27) replaces MaxwellBoltzmannDistribution
    thermalize = getattr(velocitydistribution, "thermalize_momenta", velocitydistribution.MaxwellBoltzmannDistribution)
    thermalize(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(SEED))
    velocitydistribution.Stationary(atoms)
    graph = PaiNNGraph(cutoff, cap)
    totals = [atoms.get_potential_energy() + atoms.get_kinetic_energy()]
    changed = [False]
    previous = edge_keys(graph, atoms) if watch_graph else torch.zeros(0)
    dynamics = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    for _ in range(int(round(duration_fs / dt_fs))):
        dynamics.run(1)
        totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        if watch_graph:
            current = edge_keys(graph, atoms)
            changed.append(not torch.equal(current, previous))
            previous = current
    return {"time_fs": dt_fs * np.arange(len(totals)), "total": np.array(totals), "changed": np.array(changed),
            "atoms": len(atoms), "temperature_end": atoms.get_temperature()}


def drift_per_atom_per_ps(run: Dict[str, np.ndarray]) -> float:
    return float(np.polyfit(run["time_fs"] / 1000.0, run["total"], 1)[0] / run["atoms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the results as markdown here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--duration", type=float, default=1000.0, help="part 1 run length, fs")
    parser.add_argument("--sweep-duration", type=float, default=100.0, help="part 2 run length, fs")
    parser.add_argument("--repeat", type=int, default=2, help="part 1 cell: repeat x repeat x repeat cubic fcc cells")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = datetime.datetime.now()
    lines: List[str] = [
        "# NVE energy conservation: the max-neighbour cap, rbf_proj biases, random weights, time step",
        "",
        f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s). Date: {started:%Y-%m-%d}.",
        "",
        "Command: `python benchmarks/nve_cap.py" + (f" --out {args.out}" if args.out else "")
        + (f" --threads {args.threads}" if args.threads != 1 else "") + "`",
        "",
        "Velocity Verlet (ASE) with `ocpdeploy.runtime`, TorchScript float32 artifacts with",
        "`--forces conservative`; fcc Cu (a = 3.61 A) from the perfect lattice, Maxwell-Boltzmann",
        f"velocities at {TEMPERATURE_K:g} K (seed {SEED}). PaiNN 3 layers x 64 channels, cutoff 6 A, same",
        "seeded weights: `smooth` = cap 100 (never binds here) and zero `rbf_proj` biases; `rbf bias` =",
        "the biases left non-zero; `cap 50` = the published cap of 50 neighbours (binds: fcc Cu has 54",
        "atoms up to the fourth shell). See the script's docstring.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="ocp-nve-") as tmp:
        artifacts = build_artifacts(Path(tmp))

        bulk_atoms = cu_bulk(args.repeat)
        lines += [
            f"## 1. Graph changes and energy jumps: {args.duration:g} fs at 0.5 fs, {len(bulk_atoms)} atoms",
            "",
            "An event is a step at which the model's graph (capped, symmetrised edge set) differs from the",
            "previous step's. |dE| = |E_tot(step) - E_tot(step - 1)|.",
            "",
            "| model | events per ps | median / max abs(dE) at events (eV) | median / max abs(dE) at other steps (eV) |"
            " drift (eV/atom/ps) | T at the end (K) |",
            "|---|---|---|---|---|---|",
        ]
        for name in MODELS:
            artifact, cap, cutoff = artifacts[name]
            clock = time.perf_counter()
            run = run_nve(artifact, bulk_atoms, 0.5, args.duration, cap, cutoff, watch_graph=True)
            steps = np.abs(np.diff(run["total"]))
            events = run["changed"][1:]
            at_events = steps[events]
            others = steps[~events]

            def median_max(values: np.ndarray) -> str:
                return f"{np.median(values):.2e} / {values.max():.2e}" if values.size else "none"

            per_ps = events.sum() / (args.duration / 1000.0)
            lines.append(f"| {name} | {per_ps:.0f} | {median_max(at_events)} | {median_max(others)} | "
                         f"{drift_per_atom_per_ps(run):.2e} | {run['temperature_end']:.0f} |")
            print(lines[-1], f"({time.perf_counter() - clock:.0f} s)", flush=True)

        sweep = [0.25, 0.5, 1.0, 2.0]
        lines += [
            "",
            f"## 2. Drift against the time step: {args.sweep_duration:g} fs runs",
            "",
            "drift = least-squares slope of E_tot (eV/atom/ps); max dev = largest |E_tot - E_tot(0)| per atom (eV).",
            "",
            "| model | structure | " + " | ".join(f"dt {dt:g} fs: drift, max dev" for dt in sweep) + " |",
            "|---|---|" + "---|" * len(sweep),
        ]
        small_bulk = cu_bulk(2)
        slab = read(SLAB)
        for name in list(MODELS) + ["painn_tiny"]:
            artifact, cap, cutoff = artifacts[name]
            atoms, label = (slab, f"Cu slab + CO, {len(slab)} atoms") if name == "painn_tiny" else (
                small_bulk, f"Cu bulk, {len(small_bulk)} atoms")
            cells = []
            for dt in sweep:
                run = run_nve(artifact, atoms, dt, args.sweep_duration, cap, cutoff, watch_graph=False)
                deviation = np.abs(run["total"] - run["total"][0]).max() / run["atoms"]
                cells.append(f"{drift_per_atom_per_ps(run):.1e}, {deviation:.1e}")
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    elapsed = (datetime.datetime.now() - started).total_seconds()
    lines += ["", f"Took {elapsed:.0f} s (other jobs shared the machine)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
