"""LAMMPS `pair_style ocp` on 1 and 2 MPI ranks: time per MD step of the published PaiNN h512.

    python benchmarks/lammps_mpi.py [--sizes 1008,4000] [--steps 2] [--forces direct]
                                    [--lmp-ocp PATH] [--out benchmarks/results/lammps_mpi.md]

PaiNN h512 (6 layers, 12 A cutoff, cap 50; ``PUBLISHED["painn_h512"]``,
seeded random weights, noise 0) exported to TorchScript, on rattled fcc Cu
bulk cells, in Debian's ``lmp_ocp`` (built from cpp_demo unless
``--lmp-ocp`` is given; Open MPI). Per configuration one LAMMPS run: setup
and ``WARMUP_STEPS`` NVE steps untimed (TorchScript's profiling executor
optimises after its first calls), then ``--steps`` timed steps; time per
step = LAMMPS's "Loop time" of the timed run / steps (one force call per
step, neighbour lists and communication included), and the CPU time per step
of rank 0's process (LAMMPS's "% CPU use" of the loop, all LibTorch threads;
MPI waits busy-poll, so on an idle machine it is the wall time times the
threads). On a shared machine the wall time depends on the other processes;
the CPU time much less, so the table gives both, and the scaling tables use
the CPU time per rank and thread as the estimate of an idle machine's wall
time.

Configurations, for each size N (atoms) and for the weak-scaling partners:

* ``whole 1x1``, ``whole 1x2``: one rank, the whole-system call, 1 or 2 LibTorch threads;
* ``domain 1x1``: one rank, ``decomposition domain`` (the per-layer path with
  its ghost shell, no MPI traffic): the cost of the domain path itself;
* ``domain 2x1``: two ranks (``mpirun -np 2 --bind-to core``), 1 thread each.

Strong scaling: the same N on 1 and 2 ranks. Weak scaling: N/2 atoms on 1
rank against N on 2 ranks (the same number of owned atoms per rank; the
N/2 cell is the N cell halved along one axis). Writes a markdown table
naming the machine, the date and the command.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402

from compare import MATMUL_SIZE, machine_description, matmul_peak_gflops  # noqa: E402  (the benchmarks' machine record)
from ocpdeploy.exporter import lammps_host  # noqa: E402  (lmp_ocp build, LAMMPS data files, environment, Open MPI)

# Cu bulk cells: atoms -> fcc cubic cell repeats; each weak-scaling pair
# halves the larger cell along its last axis.
CELLS = {1008: (6, 6, 7), 2016: (6, 6, 14), 2000: (10, 10, 5), 4000: (10, 10, 10)}
WEAK_PARTNER = {1008: 2016, 2000: 4000}  # N on 1 rank -> 2N on 2 ranks
LATTICE = 3.61
RATTLE = 0.05  # Angstrom
SEED = 0
TEMPERATURE_K = 300.0
SKIN = 1.0  # Angstrom
WARMUP_STEPS = 2
RUN_TIMEOUT_S = 3600
# Shared machines: before each run, wait (up to QUIET_WAIT_S) until the other
# processes use less than QUIET_CORES cores, sampled over QUIET_SAMPLE_S.
PROC_STAT = Path("/proc/stat")
QUIET_CORES = 0.3
QUIET_SAMPLE_S = 3.0
QUIET_POLL_S = 10.0
QUIET_WAIT_S = 120.0

# label -> (ranks, threads per rank, pair_style keywords)
CONFIGS = {
    "whole 1x1": (1, 1, "decomposition whole"),
    "whole 1x2": (1, 2, "decomposition whole"),
    "domain 1x1": (1, 1, "decomposition domain"),
    "domain 2x1": (2, 1, "decomposition domain"),
}


def machine() -> str:
    """CPU model, instruction set, cores, memory, torch and the fp32 matmul peak measured now (one thread)."""
    return f"{machine_description()}; fp32 matmul peak {matmul_peak_gflops(1):.0f} GFLOP/s (one thread, torch.mm {MATMUL_SIZE}^2)"


def _cpu_times() -> Tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [float(v) for v in PROC_STAT.read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores(seconds: float = QUIET_SAMPLE_S) -> float:
    """Cores kept busy by all processes over the next ``seconds`` (NaN without /proc/stat)."""
    if not PROC_STAT.is_file():
        return float("nan")
    busy0, total0 = _cpu_times()
    time.sleep(seconds)
    busy1, total1 = _cpu_times()
    return (busy1 - busy0) / max(total1 - total0, 1.0) * (os.cpu_count() or 1)


def wait_until_quiet(limit_s: float = QUIET_WAIT_S) -> float:
    """Waits for the other processes to leave the cores (at most ``limit_s``); returns the last sample."""
    start = time.monotonic()
    load = busy_cores()
    while load > QUIET_CORES and time.monotonic() - start < limit_s:
        print(f"  other processes keep {load:.1f} cores busy; waiting", flush=True)
        time.sleep(QUIET_POLL_S)
        load = busy_cores()
    return load


def export_painn_h512(work: Path, forces: str) -> Path:
    from ocpdeploy.exporter.export import export_checkpoint
    from ocpdeploy.exporter.random_checkpoint import PUBLISHED, write_random_checkpoint

    checkpoint = work / "painn_h512.ckpt"
    artifact = work / f"painn_h512_{forces}.pt"
    write_random_checkpoint(*PUBLISHED["painn_h512"], str(checkpoint), seed=SEED, noise=0.0)
    export_checkpoint(str(checkpoint), str(artifact), format="torchscript", forces=forces)
    return artifact


def cell(natoms: int):
    atoms = bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat(CELLS[natoms])
    atoms.positions += np.random.default_rng(SEED).normal(scale=RATTLE, size=atoms.positions.shape)
    return lammps_host.lammps_cell(atoms)


def script(data: Path, artifact: Path, threads: int, keywords: str, steps: int) -> str:
    return "\n".join([
        "units metal",
        "atom_style atomic",
        "atom_modify map array",
        "boundary p p p",
        "newton on",
        f"read_data {data}",
        f"pair_style ocp {artifact} threads {threads} {keywords}",
        "pair_coeff * * Cu",
        f"neighbor {SKIN} bin",
        f"velocity all create {TEMPERATURE_K} 4928459 mom yes rot no dist gaussian",
        "fix integrate all nve",
        "timestep 0.001",
        "thermo_style custom step pe ke etotal temp",
        "thermo_modify format float %20.10f",
        "thermo 1",
        f"run {WARMUP_STEPS}",
        f"run {steps}",
    ]) + "\n"


LOOP = re.compile(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps")
# LAMMPS: the CPU time of rank 0's process (all its threads) over the loop's wall time.
CPU_USE = re.compile(r"([0-9.]+)% CPU use with (\d+) MPI tasks x (\d+) OpenMP threads")
NGHOST = re.compile(r"Nghost:\s+([0-9.]+) ave")
# pair ocp's setup line (domain path, rank 0).
ACTIVE = re.compile(r"rank 0 at setup: (\d+) owned atoms, (\d+) ghost atoms, of which (\d+) are edge sources; (\d+) edges")


def run(lmp_ocp: Path, natoms: int, label: str, artifact: Path, steps: int, folder: Path,
        quiet_wait_s: float = QUIET_WAIT_S) -> Dict[str, float]:
    ranks, threads, keywords = CONFIGS[label]
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.lmp"
    lammps_host.write_lammps_data(data, cell(natoms))
    (folder / "in.bench").write_text(script(data, artifact, threads, keywords, steps))
    command = [str(lmp_ocp), "-in", "in.bench", "-log", "none", "-nocite"]
    if ranks > 1:
        command = [str(lammps_host.OPENMPI_MPIRUN), "-np", str(ranks), "--oversubscribe", "--bind-to", "core"] + command
    env = lammps_host.host_environment()
    env["OMP_NUM_THREADS"] = str(threads)
    load_before = wait_until_quiet(quiet_wait_s)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=folder, env=env, timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - start
    output = result.stdout + result.stderr
    (folder / "output.txt").write_text(output)
    if result.returncode != 0:
        raise RuntimeError(f"{label} N={natoms} failed:\n{output[-3000:]}")
    loops = LOOP.findall(output)
    seconds, _, timed_steps = loops[-1]
    rows = lammps_host.thermo_rows(output, 5)
    ghosts = NGHOST.findall(output)
    active = ACTIVE.findall(output)
    cpu_use = CPU_USE.findall(output)
    cpu_fraction = float(cpu_use[-1][0]) / 100.0 if cpu_use else float("nan")
    return {"s_per_step": float(seconds) / int(timed_steps),
            "cpu_s_per_step": float(seconds) / int(timed_steps) * cpu_fraction, "wall_s": wall, "pe_step0": rows[0][1],
            "ghosts_per_rank": float(ghosts[-1]) if ghosts else float("nan"), "atoms_per_rank": natoms / ranks,
            "active_ghosts_rank0": float(active[-1][2]) if active else float("nan"), "load_before": load_before}


def idle_estimate(label: str, r: Dict[str, float]) -> float:
    """Idle-machine wall time per step: rank 0's CPU time per step / its threads."""
    return r["cpu_s_per_step"] / CONFIGS[label][1]


def render(results: Dict[Tuple[int, str], Dict[str, float]], args, command: str, machine_text: str) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"`{command}`, {date}, on {machine_text}.",
        "",
        f"PaiNN h512 (published configuration: 6 layers, 512 channels, 12 A cutoff, cap 50; random weights), "
        f"forces `{args.forces}`, TorchScript in Debian's `lmp_ocp` (LAMMPS 29Sep2021, Open MPI); fcc Cu bulk, "
        f"{TEMPERATURE_K:.0f} K NVE, skin {SKIN} A. Time per MD step: LAMMPS loop time of {args.steps} steps after "
        f"{WARMUP_STEPS} warm-up steps. `RxT` = MPI ranks x LibTorch threads per rank.",
        "",
        "Ghost atoms: LAMMPS's ghost shell per rank (cutoff + skin = 13 A); of those, the ones evaluated are the "
        "edge sources of rank 0 (with the cap of 50 they lie within ~6 A).",
        "",
        "Other load: cores busy just before the run (the runs wait for < "
        f"{QUIET_CORES} cores; the machine may be shared).",
        "",
        "| atoms | configuration | atoms per rank | ghost atoms per rank | evaluated ghosts (rank 0) | wall s / step | "
        "CPU s / step (rank 0) | pe at step 0 (eV) | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (natoms, label), r in sorted(results.items()):
        ghosts = active = "-"
        if label.startswith("domain"):
            ghosts, active = f"{r['ghosts_per_rank']:.0f}", f"{r['active_ghosts_rank0']:.0f}"
        lines.append(f"| {natoms} | {label} | {r['atoms_per_rank']:.0f} | {ghosts} | {active} | "
                     f"{r['s_per_step']:.2f} | {r['cpu_s_per_step']:.2f} | {r['pe_step0']:.4f} | {r['load_before']:.2f} |")
    lines += ["", "Strong scaling (same cell, speed-up = 1-rank time / 2-rank time, idle-machine estimates from CPU "
              "time per rank and thread; wall-time ratio in brackets):", "",
              "| atoms | whole 1x1 / domain 2x1 | whole 1x2 / domain 2x1 | domain 1x1 / domain 2x1 |", "|---|---|---|---|"]
    for natoms in sorted({n for n, _ in results}):
        two = results.get((natoms, "domain 2x1"))
        if two is None:
            continue
        ratios = []
        for label in ("whole 1x1", "whole 1x2", "domain 1x1"):
            one = results.get((natoms, label))
            ratios.append(f"{idle_estimate(label, one) / idle_estimate('domain 2x1', two):.2f} "
                          f"({one['s_per_step'] / two['s_per_step']:.2f})" if one else "-")
        if any(ratio != "-" for ratio in ratios):
            lines.append(f"| {natoms} | " + " | ".join(ratios) + " |")
    lines += ["", "Weak scaling (N atoms on 1 rank, 2N on 2 ranks; efficiency = 1-rank time / 2-rank time, ideal 1; "
              "idle-machine estimates, wall-time ratio in brackets):",
              "", "| N -> 2N | whole 1x1 (N) / domain 2x1 (2N) | domain 1x1 (N) / domain 2x1 (2N) |", "|---|---|---|"]
    for small, large in WEAK_PARTNER.items():
        two = results.get((large, "domain 2x1"))
        if two is None:
            continue
        ratios = []
        for label in ("whole 1x1", "domain 1x1"):
            one = results.get((small, label))
            ratios.append(f"{idle_estimate(label, one) / idle_estimate('domain 2x1', two):.2f} "
                          f"({one['s_per_step'] / two['s_per_step']:.2f})" if one else "-")
        lines.append(f"| {small} -> {large} | " + " | ".join(ratios) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1008,4000", help="cells for strong scaling (atoms: 1008, 2000, 2016, 4000)")
    parser.add_argument("--weak", action=argparse.BooleanOptionalAction, default=True,
                        help="also N/2 on 1 rank against N on 2 ranks (weak scaling)")
    parser.add_argument("--steps", type=int, default=2, help="timed MD steps per configuration")
    parser.add_argument("--forces", default="direct", choices=["direct", "conservative"])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="subset of: " + ", ".join(CONFIGS))
    parser.add_argument("--quiet-wait", type=float, default=QUIET_WAIT_S,
                        help="longest wait (s) before each run for other processes to leave the cores")
    parser.add_argument("--lmp-ocp", type=Path, help="an lmp_ocp executable (default: build cpp_demo)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lammps_mpi.md",
                        help="markdown result; the raw numbers go to the same name with .json")
    parser.add_argument("--merge", type=Path, help="a previous run's .json: its configurations are kept, not rerun")
    args = parser.parse_args()
    command = "python benchmarks/lammps_mpi.py " + " ".join(sys.argv[1:])
    work = args.work or Path(tempfile.mkdtemp(prefix="ocp-lammps-mpi-"))
    work.mkdir(parents=True, exist_ok=True)
    lmp_ocp = args.lmp_ocp
    if lmp_ocp is None:
        print("building cpp_demo ...", flush=True)
        lmp_ocp = lammps_host.build_hosts(REPO / "cpp_demo", work / "build")["lmp_ocp"]
        if lmp_ocp is None:
            sys.exit("lmp_ocp was not built: is Debian's LAMMPS installed (apt-get install lammps liblammps-dev)?")
    print("exporting PaiNN h512 ...", flush=True)
    artifact = export_painn_h512(work, args.forces)
    labels = [label.strip() for label in args.configs.split(",")]
    plan: List[Tuple[int, str]] = []
    for natoms in (int(n) for n in args.sizes.split(",")):
        plan += [(natoms, label) for label in labels]
        if args.weak:  # the partner cell of a weak-scaling pair: N/2 on 1 rank, or 2N on 2 ranks
            small = next((s for s, large in WEAK_PARTNER.items() if large == natoms), None)
            if small is not None:
                plan += [(small, label) for label in labels if CONFIGS[label][0] == 1 and label != "whole 1x2"]
            if natoms in WEAK_PARTNER:
                plan += [(WEAK_PARTNER[natoms], label) for label in labels if CONFIGS[label][0] > 1]
    results: Dict[Tuple[int, str], Dict[str, float]] = {}
    if args.merge:
        for key, value in json.loads(args.merge.read_text()).items():
            natoms, label = key.split(" ", 1)
            results[(int(natoms), label)] = value
    machine_text = machine()
    for natoms, label in plan:
        if (natoms, label) in results:
            continue
        folder = work / f"{natoms}_{label.replace(' ', '_')}"
        results[(natoms, label)] = r = run(lmp_ocp, natoms, label, artifact, args.steps, folder, args.quiet_wait)
        print(f"{natoms:6d} atoms  {label:11s}  {r['s_per_step']:8.2f} s/step, CPU {r['cpu_s_per_step']:.2f} s  (run {r['wall_s']:.0f} s, "
              f"pe {r['pe_step0']:.4f}, ghosts/rank {r['ghosts_per_rank']:.0f}, "
              f"evaluated {r['active_ghosts_rank0']:.0f}, other load {r['load_before']:.2f} cores)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render(results, args, command, machine_text))  # after every run: partial results survive
        args.out.with_suffix(".json").write_text(json.dumps({f"{n} {l}": r for (n, l), r in results.items()}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
