"""LAMMPS `pair_style ocp` with a TorchScript artifact (.pt) and an AOTInductor package (.pt2): time per MD step.

    python benchmarks/lammps_formats.py [--atoms 1008] [--steps 5] [--repeats 2] [--threads 1]
                                        [--lmp-ocp PATH] [--work DIR] [--out benchmarks/results/lammps_formats.md]

The published PaiNN h512 (``PUBLISHED["painn_h512"]``, seeded random
weights, noise 0; forces direct) exported twice from the same checkpoint,
``--format torchscript`` and ``--format aoti`` (compiled for this CPU), run
in Debian's ``lmp_ocp`` on one MPI rank (the whole-system call) on a rattled
fcc Cu bulk cell, as benchmarks/lammps_mpi.py runs it: setup and
``lammps_mpi.WARMUP_STEPS`` NVE steps untimed, then ``--steps`` timed steps;
time per step = LAMMPS's loop time / steps, CPU time per step = that times
LAMMPS's "% CPU use" of rank 0. The two formats alternate, ``--repeats``
times each, and the table gives every run and the median, with the cores
other processes kept busy just before each run (the machine may be shared).
Artifacts already in ``--work`` are reused.
"""

import argparse
import datetime
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

import lammps_mpi  # noqa: E402  (the LAMMPS run, cells, machine record and load sampling of the MPI benchmark)
from ocpdeploy.exporter import lammps_host  # noqa: E402

# --format -> artifact suffix.
FORMATS = {"torchscript": ".pt", "aoti": ".pt2"}
CONFIG = "whole 1x1"  # lammps_mpi.CONFIGS: 1 rank, the whole-system call
FORCES = "direct"
# Longest wait (s) before each run for other processes to leave the cores:
# short, the load is recorded instead.
QUIET_WAIT_S = 10.0


def export(work: Path, format: str) -> Path:
    """PaiNN h512 (published configuration) exported to ``format`` in ``work`` (reused when present)."""
    from ocpdeploy.exporter.export import export_checkpoint
    from ocpdeploy.exporter.random_checkpoint import PUBLISHED, write_random_checkpoint

    checkpoint = work / "painn_h512.ckpt"
    if not checkpoint.exists():
        write_random_checkpoint(*PUBLISHED["painn_h512"], str(checkpoint), seed=lammps_mpi.SEED, noise=0.0)
    artifact = work / f"painn_h512_{FORCES}{FORMATS[format]}"
    if not artifact.exists():
        partial = artifact.with_name("partial_" + artifact.name)
        export_checkpoint(str(checkpoint), str(partial), format=format, forces=FORCES)
        partial.rename(artifact)
    return artifact


def render(runs: Dict[str, List[Dict[str, float]]], args, command: str, machine_text: str) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"`{command}`, {date}, on {machine_text}.",
        "",
        f"PaiNN h512 (published configuration: 6 layers, 512 channels, 12 A cutoff, cap 50; random weights), forces "
        f"`{FORCES}`, float32, in Debian's `lmp_ocp` (LAMMPS 29Sep2021) on 1 MPI rank with {args.threads} LibTorch "
        f"thread(s) (`pair_style ocp ARTIFACT threads {args.threads} decomposition whole`); fcc Cu bulk, {args.atoms} "
        f"atoms, {lammps_mpi.TEMPERATURE_K:.0f} K NVE. Time per MD step: LAMMPS loop time of {args.steps} steps after "
        f"{lammps_mpi.WARMUP_STEPS} warm-up steps; CPU time: rank 0's process over the loop. The formats alternate; "
        "other load = cores kept busy by other processes just before the run (at most the core count), load "
        "average = the 1-minute load average then (this machine is shared: wall times carry that load, the CPU "
        "time much less).",
        "",
        "| artifact | run | ms / step (wall) | CPU ms / step | pe at step 0 (eV) | other load (cores) | load average (1 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for format, results in runs.items():
        for k, r in enumerate(results, start=1):
            lines.append(f"| {format} ({FORMATS[format]}) | {k} | {1e3 * r['s_per_step']:.0f} | "
                         f"{1e3 * r['cpu_s_per_step']:.0f} | {r['pe_step0']:.4f} | {r['load_before']:.2f} | "
                         f"{r.get('load_average', float('nan')):.1f} |")
    lines += ["", "| artifact | median ms / step (wall) | median CPU ms / step |", "|---|---|---|"]
    for format, results in runs.items():
        if results:
            lines.append(f"| {format} ({FORMATS[format]}) | {1e3 * statistics.median(r['s_per_step'] for r in results):.0f} | "
                         f"{1e3 * statistics.median(r['cpu_s_per_step'] for r in results):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=1008, choices=sorted(lammps_mpi.CELLS), help="fcc Cu cell size")
    parser.add_argument("--steps", type=int, default=5, help="timed MD steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per format (alternating)")
    parser.add_argument("--threads", type=int, default=1, help="LibTorch threads")
    parser.add_argument("--lmp-ocp", type=Path, help="an lmp_ocp executable (default: build cpp_demo)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one); artifacts there are reused")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lammps_formats.md", help="markdown result")
    args = parser.parse_args()
    # The command as recorded: the options that shape the numbers, local paths as placeholders.
    command = (f"python benchmarks/lammps_formats.py --atoms {args.atoms} --steps {args.steps} --repeats {args.repeats} "
               f"--threads {args.threads}" + (" --lmp-ocp LMP_OCP" if args.lmp_ocp else "")
               + (" --work WORK" if args.work else ""))
    work = args.work or Path(tempfile.mkdtemp(prefix="ocp-lammps-formats-"))
    work.mkdir(parents=True, exist_ok=True)
    lmp_ocp = args.lmp_ocp
    if lmp_ocp is None:
        print("building cpp_demo ...", flush=True)
        lmp_ocp = lammps_host.build_hosts(REPO / "cpp_demo", work / "build")["lmp_ocp"]
        if lmp_ocp is None:
            sys.exit("lmp_ocp was not built: is Debian's LAMMPS installed (apt-get install lammps liblammps-dev)?")
    artifacts = {}
    for format in FORMATS:
        print(f"exporting PaiNN h512 ({format}) ...", flush=True)
        artifacts[format] = export(work, format)
    lammps_mpi.CONFIGS[CONFIG] = (1, args.threads, "decomposition whole")
    machine_text = lammps_mpi.machine()
    runs: Dict[str, List[Dict[str, float]]] = {format: [] for format in FORMATS}
    for repeat in range(args.repeats):
        for format, artifact in artifacts.items():
            folder = work / f"{format}_{repeat}"
            load_average = os.getloadavg()[0]  # runnable processes per core count: how oversubscribed the cores are
            r = lammps_mpi.run(lmp_ocp, args.atoms, CONFIG, artifact, args.steps, folder, QUIET_WAIT_S)
            r["load_average"] = load_average
            runs[format].append(r)
            print(f"{format:11s} run {repeat + 1}: {1e3 * r['s_per_step']:.0f} ms/step, CPU {1e3 * r['cpu_s_per_step']:.0f} ms "
                  f"(pe {r['pe_step0']:.4f}, other load {r['load_before']:.2f} cores)", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(render(runs, args, command, machine_text))  # after every run: partial results survive
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
