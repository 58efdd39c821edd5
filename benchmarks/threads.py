"""OpenMP threads on an idle and on a busy machine: md_host steps and Python calls, spinning vs passive waiting.

    python benchmarks/threads.py --md-host cpp_demo/build/md_host [--out benchmarks/results/threads.md]

Runs a small TorchScript artifact (``painn_tiny`` exported with conservative
forces, made in a temporary folder unless ``--artifact`` is given) on the
29-atom Cu slab with CO (``tests/data/structures/v1.extxyz``) two ways:

* ``md_host`` NVE steps (its steady wall and CPU time per step);
* ``ocpdeploy.runtime`` ``predict`` calls in a fresh Python process
  (median wall and CPU time per call);

each with the OpenMP wait policy that was the default before
(``GOMP_SPINCOUNT=300000``: libgomp's own default, threads spin that long
before they sleep) and the one md_host, lmp_ocp and ``ocpdeploy.runtime``
now choose (nothing set: ``OMP_WAIT_POLICY=PASSIVE``), with LibTorch's
default thread count and with 1 thread, first on the machine as it is, then
with one busy-loop process per core that this script starts and stops
(each loop also ends itself after ``--load-limit`` seconds). A larger cell
(Cu fcc, 256 atoms) is run without load, to show where a second thread pays.
CPU time counts every thread of the process: spinning shows there as CPU
time without progress. Other processes on the machine are not controlled;
the load average before each phase is recorded.
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
STRUCTURE = REPO / "tests" / "data" / "structures" / "v1.extxyz"
CHECKPOINT = REPO / "tests" / "data" / "checkpoints" / "painn_tiny.pt"
# libgomp's documented default spin count when OMP_WAIT_POLICY is unset: the
# behaviour of every host before it chose a policy.
SPIN = {"GOMP_SPINCOUNT": "300000"}
PASSIVE: Dict[str, str] = {}  # nothing set: the hosts and the runtime choose OMP_WAIT_POLICY=PASSIVE
POLICIES = {"spin (before)": SPIN, "passive (now)": PASSIVE}
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
BULK_REPEAT = 4  # 4x4x4 cubic fcc cells: 256 atoms

PYTHON_CHILD = r"""
import json, statistics, sys, time
import ocpdeploy.runtime  # first: it chooses the OpenMP wait policy before torch is loaded
from ase.io import read
import torch
from ocpdeploy.runtime import load_model

artifact, structure, threads, calls, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
if threads > 0:
    torch.set_num_threads(threads)
model = load_model(artifact)
atoms = read(structure)
for _ in range(3):  # TorchScript's profiling executor optimises during the first calls
    model.predict(atoms)
walls, cpus = [], []
deadline = time.perf_counter() + budget
while len(walls) < calls and (len(walls) < 3 or time.perf_counter() < deadline):
    wall, cpu = time.perf_counter(), time.process_time()
    model.predict(atoms)
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
print(json.dumps({"threads": torch.get_num_threads(), "calls": len(walls),
                  "wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
                  "policy": ocpdeploy.runtime.threads.wait_policy_status()}))
"""

BUSY_LOOP = "import time\nend = time.monotonic() + float({limit})\nwhile time.monotonic() < end:\n    pass\n"


def machine() -> Dict[str, str]:
    info = {"cpu": platform.processor() or "unknown", "cores": str(os.cpu_count()), "isa": "unknown"}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return info
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    info["cpu"] = fields.get("Model name", info["cpu"]).strip()
    flags = fields.get("Flags", "").split()
    info["isa"] = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    return info


def clean_environment(extra: Dict[str, str], threads: int) -> Dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in WAIT_VARIABLES and key != "OMP_NUM_THREADS"}
    env.update(extra)  # threads are set by --threads / torch.set_num_threads, not OMP_NUM_THREADS
    return env


def run_md_host(md_host: Path, artifact: Path, structure: Path, policy: Dict[str, str], threads: int,
                steps: int) -> Dict[str, float]:
    env = clean_environment(policy, threads)
    result = subprocess.run([str(md_host), str(artifact), str(structure), "--steps", str(steps), "--dt", "0.25",
                             "--threads", str(threads), "--temperature", "100"],
                            capture_output=True, text=True, env=env, check=True)
    wall = float(re.search(r"steady \(after \d+ warm-up steps\): ([0-9.]+) ms/step", result.stdout).group(1))
    cpu = float(re.search(r"cpu_ms_per_step_steady ([0-9.eE+-]+)", result.stdout).group(1))
    wait = re.search(r"openmp_wait: (.*)", result.stdout).group(1)
    return {"wall_ms": wall, "cpu_ms": cpu, "wait": wait}


def run_python(artifact: Path, structure: Path, policy: Dict[str, str], threads: int, calls: int,
               budget_s: float) -> Dict[str, float]:
    env = clean_environment(policy, threads)
    result = subprocess.run([sys.executable, "-c", PYTHON_CHILD, str(artifact), str(structure), str(threads),
                             str(calls), str(budget_s)], capture_output=True, text=True, env=env, check=True)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    return {"wall_ms": 1e3 * record["wall_s"], "cpu_ms": 1e3 * record["cpu_s"], "wait": record["policy"],
            "threads": record["threads"], "calls": record["calls"]}


class BusyLoad:
    """One busy-loop process per core, each ending itself after `limit_s` at the latest."""

    def __init__(self, processes: int, limit_s: float) -> None:
        self.processes = processes
        self.limit_s = limit_s
        self.children: List[subprocess.Popen] = []

    def __enter__(self) -> "BusyLoad":
        code = BUSY_LOOP.format(limit=self.limit_s)
        self.children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.processes)]
        time.sleep(1.0)  # let them reach the loop
        return self

    def __exit__(self, *exc) -> None:
        for child in self.children:
            child.kill()
        for child in self.children:
            child.wait()


def export_artifact(folder: Path) -> Path:
    artifact = folder / "painn_tiny_conservative.pt"
    subprocess.run(["export-model", str(CHECKPOINT), "--format", "torchscript", "--forces", "conservative",
                    "-o", str(artifact)], check=True, capture_output=True)
    return artifact


def write_bulk(folder: Path) -> Path:
    from ase.build import bulk
    from ase.io import write

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((BULK_REPEAT,) * 3)
    atoms.rattle(0.05, seed=3)
    path = folder / f"cu{len(atoms)}.extxyz"
    write(path, atoms)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--md-host", type=Path, required=True, help="md_host built from cpp_demo")
    parser.add_argument("--artifact", type=Path, help="TorchScript artifact (default: painn_tiny, conservative)")
    parser.add_argument("--steps", type=int, default=13, help="md_host steps per run (3 warm-up steps excluded)")
    parser.add_argument("--calls", type=int, default=10, help="Python calls per run (after 3 warm-up calls)")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds after which a Python run stops (>= 3 calls)")
    parser.add_argument("--load-limit", type=float, default=300.0, help="each busy loop ends itself after this (s)")
    parser.add_argument("--out", type=Path, help="write the results as markdown here")
    args = parser.parse_args()

    info = machine()
    started = datetime.datetime.now()
    with tempfile.TemporaryDirectory(prefix="ocp-threads-") as tmp:
        folder = Path(tmp)
        artifact = args.artifact or export_artifact(folder)
        bulk_path = write_bulk(folder)
        rows = []

        def measure(load: str, structure: Path, atoms: int, configurations) -> None:
            load_average = os.getloadavg()[0]
            for policy_name, policy in configurations["policies"].items():
                for threads in configurations["threads"]:
                    for host in ("md_host", "python"):
                        if host == "md_host":
                            record = run_md_host(args.md_host, artifact, structure, policy, threads, args.steps)
                        else:
                            record = run_python(artifact, structure, policy, threads, args.calls, args.budget)
                        record.update(load=load, policy=policy_name, threads=threads or "default", host=host,
                                      atoms=atoms, load_average=load_average)
                        rows.append(record)
                        print(json.dumps(record), flush=True)

        every = {"policies": POLICIES, "threads": [0, 1]}
        measure("as found", STRUCTURE, 29, every)
        measure("as found", bulk_path, BULK_REPEAT ** 3 * 4, {"policies": {"passive (now)": PASSIVE}, "threads": [0, 1]})
        with BusyLoad(os.cpu_count() or 1, args.load_limit):
            measure(f"+{os.cpu_count()} busy loops", STRUCTURE, 29, every)
    elapsed = (datetime.datetime.now() - started).total_seconds()

    import torch

    lines = [
        "# OpenMP threads on an idle and a busy machine",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['isa']}; torch {torch.__version__} "
        f"(LibTorch default threads here: {torch.get_num_threads()}). Date: {started:%Y-%m-%d}. "
        f"Took {elapsed:.0f} s.",
        "",
        "Command: `python benchmarks/threads.py --md-host BUILD/md_host"
        + (f" --out {args.out}`" if args.out else "`") + " (BUILD: a cmake build of cpp_demo)",
        "",
        "Artifact: `painn_tiny` (PaiNN, 2 layers, 32 channels) exported with `--forces conservative`; md_host:",
        f"steady time per NVE step over {args.steps - 3} steps; Python: median of up to {args.calls} "
        "`predict` calls (fewer when one takes long). CPU = all threads of the process. 'spin (before)' =",
        "`GOMP_SPINCOUNT=300000` (libgomp's default when nothing is set, the behaviour before the hosts",
        "chose a policy); 'passive (now)' = nothing set, so md_host re-executes itself with, and",
        "`ocpdeploy.runtime` sets, `OMP_WAIT_POLICY=PASSIVE`. 'as found' = whatever else ran on the",
        "machine (its 1-minute load average is listed: other jobs shared this machine).",
        "",
        "| load | load avg before | atoms | host | wait policy | threads | wall ms | CPU ms | policy reported |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['load']} | {row['load_average']:.1f} | {row['atoms']} | {row['host']} | {row['policy']} | "
                     f"{row['threads']} | {row['wall_ms']:.1f} | {row['cpu_ms']:.1f} | {row['wait']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
