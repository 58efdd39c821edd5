"""Side-by-side benchmark: fairchem-core 1.10.0 eager vs our eager rewrite, TorchScript, ONNX Runtime and AOTInductor.

    python benchmarks/compare.py [--quick] [--threads 2] [--out benchmarks/results] [--engines eager,torchscript,onnx,aoti] [--work DIR]
    /path/to/python-with-fairchem benchmarks/compare.py      # adds the reference columns

Models: the published PaiNN (h512, 6 layers, 12 A, cap 50) and GemNet-OC
base configurations (``ocpdeploy.exporter.random_checkpoint.PUBLISHED``),
with the same seeded random weights for every engine (``aoti``: the
``export-model --format aoti`` package, skipped where no C++ compiler is
found). Structures: an
81-atom Pt(111) slab with an O adsorbate, ~1,000- and ~5,000-atom Cu bulk
cells (tags 1, so GemNet-OC builds quadruplets), and for PaiNN a ~10,000-atom
bulk. Every (model, engine, structure) runs in a fresh worker process: two
warm-up calls (``WARMUP_CALLS``), then the median of the timed energy+forces
calls through ``load_model(...).predict`` (graph construction included; the
eager rewrite: its graph module, then the model), and the worker's peak RSS
(our engines run with the malloc setting
``ocpdeploy.runtime.allocator.tune_malloc`` applies for
``OCPDEPLOY_KEEP_FREED_MEMORY``, as a user's process gets it; the reference
with glibc's defaults); a worker whose RSS passes ``--memory-limit`` GB is
killed and reported as such. After the peak is read, the graph construction
alone is timed (same median) with the engine's own code for it (``GRAPH_TIMING``):
TorchScript the artifact's scripted graph module, ONNX an ONNX Runtime
session of the graph-only program (``ocpdeploy.exporter.graph_program``)
with the artifact session's options (threads, optimisation level, arena),
AOTInductor the graph-only package compiled with the artifact's compiler
settings, eager the Python graph module. ONNX and AOTInductor artifacts
build their graph inside the program, so that part of their call is
priced by the graph-only program on the same structure. Graph construction
alone is also compared for the reference ``radius_graph_pbc``, ours,
vesin and ase.neighborlist. A PaiNN h512 forward pass is priced in FLOPs
(Linear-layer MACs: 26.0M per atom + 1.18M per edge) against this machine's
fp32 matmul peak measured in the same run (torch.mm 4096^2).

Writes ``OUT/compare.md`` (tables, ratios to the reference), ``OUT/compare.json``
and ``OUT/compare.png``. The reference columns appear when fairchem-core,
torch_scatter and torch_sparse import (see ``fairchem_reference.py``);
otherwise they are skipped and the ratios are to our eager rewrite.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
BYTES_PER_GB = 1024**3
KB_PER_GB = 1024**2
RSS_POLL_SECONDS = 0.05
WORKER_TIMEOUT_SECONDS = 1800
FAILURE_MESSAGE_CHARACTERS = 80
RATTLE = 0.05  # Angstrom
# Untimed calls per worker before the timed ones, for every engine alike:
# TorchScript's profiling executor runs its first two calls unoptimised
# (measured: GemNet-OC slab 3.8 s, 6.0 s, then 1.3-1.4 s per call).
WARMUP_CALLS = 2
MATMUL_SIZE = 4096
MATMUL_REPEATS = 5
PAINN_MACS_PER_ATOM = 26.0e6
PAINN_MACS_PER_EDGE = 1.18e6
ENGINES = ["reference", "eager", "torchscript", "onnx", "aoti"]
ARTIFACT_SUFFIXES = {"torchscript": "_ts.pt", "onnx": ".onnx", "aoti": ".pt2"}
# Engines whose artifacts build the graph inside the program, and the file
# suffix of their graph-only program.
GRAPH_PROGRAM_SUFFIXES = {"onnx": "_graph.onnx", "aoti": "_graph.pt2"}
# What the "graph" column times, per engine.
GRAPH_TIMING = {
    "reference": "not timed apart",
    "eager": "the Python graph module",
    "torchscript": "the artifact's scripted graph module",
    "onnx": "ONNX Runtime session of the graph-only program, the artifact session's options",
    "aoti": "the graph-only AOTInductor package",
}
MODELS = ["painn_h512", "gemnet_oc_base"]
# structure -> models it runs for
CASES = {
    "slab_81": MODELS,
    "bulk_1008": MODELS,
    "bulk_4840": MODELS,
    "bulk_10192": ["painn_h512"],
}
SCALE_BASE = "bulk_1008"  # the scale table's growth ratios are relative to it
QUICK_CASES = {"slab_81": MODELS, "bulk_1008": MODELS}
GRAPH_CASES = {"bulk_1008": (12.0, 50), "bulk_10140": (6.0, 50)}
# Timed calls per neighbour-list backend (median), after one untimed call.
GRAPH_REPEATS = 5
BULK_REPEATS = {"bulk_1008": (6, 6, 7), "bulk_4840": (11, 11, 10), "bulk_10192": (14, 14, 13), "bulk_10140": (13, 13, 15)}


# --------------------------------------------------------------------------- structures
def structure(name: str):
    """The benchmark structures (seeded rattle)."""
    from ase.build import add_adsorbate, bulk, fcc111

    rng = np.random.default_rng(0)
    if name == "slab_81":
        atoms = fcc111("Pt", size=(4, 4, 5), vacuum=10.0, a=3.92)
        tags = np.zeros(len(atoms), dtype=int)
        tags[atoms.positions[:, 2] > atoms.positions[:, 2].max() - 3.0] = 1  # top two layers: surface
        atoms.set_tags(tags)
        add_adsorbate(atoms, "O", 1.8, "fcc")
        tags = atoms.get_tags()
        tags[-1] = 2  # adsorbate
        atoms.set_tags(tags)
    else:
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(BULK_REPEATS[name])
        atoms.set_tags(np.ones(len(atoms), dtype=int))
    atoms.positions += rng.normal(scale=RATTLE, size=atoms.positions.shape)
    return atoms


# --------------------------------------------------------------------------- worker
class _PeakRss:
    """Peak RSS of this process while the block runs, in bytes (``peak``).

    The kernel's high-water mark VmHWM, reset on entry through
    /proc/self/clear_refs (``ocpdeploy.exporter.bench``), read on exit: exact.
    Where the reset is refused, VmRSS sampled by a thread instead; that
    misses spikes between samples, and everything while a call holds the GIL.
    """

    def __init__(self) -> None:
        from ocpdeploy.exporter.bench import _reset_peak_rss

        self.peak = 0
        self.exact = _reset_peak_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(RSS_POLL_SECONDS):
            self.peak = max(self.peak, _rss_bytes("VmRSS"))

    def __enter__(self) -> "_PeakRss":
        if not self.exact:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.exact:
            self.peak = _rss_bytes("VmHWM")
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes("VmRSS"))


def _rss_bytes(field: str) -> int:
    from ocpdeploy.exporter.bench import _status_bytes

    try:
        return _status_bytes(field)
    except OSError:
        return 0


def _process_rss_bytes(pid: int) -> int:
    """VmRSS of another process (the parent watching a worker), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(task: Dict[str, Any]) -> Dict[str, Any]:
    """One (model, engine, structure) measurement in this process."""
    import torch

    torch.set_num_threads(task["threads"])
    atoms = structure(task["structure"])
    engine = task["engine"]
    repeats = task["repeats"]
    graph_fn = None
    if engine == "reference":
        from fairchem_reference import reference_model, reference_predict

        model, normalizers = reference_model(task["checkpoint"])

        def call():
            return reference_predict(model, normalizers, atoms)

    elif engine == "eager":
        from ocpdeploy.exporter.checkpoint import load_rewrite
        from ocpdeploy.exporter.deployed import PhysicalModel
        from ocpdeploy.runtime.allocator import tune_malloc
        from ocpdeploy.runtime.structures import atoms_to_arrays

        tune_malloc()  # as load_model does for the artifacts
        core, graph, checkpoint = load_rewrite(task["checkpoint"])
        core.requires_grad_(False)
        n = checkpoint.normalizers
        physical = PhysicalModel(core, "direct", n.energy_mean, n.energy_std, n.forces_mean, n.forces_std)
        arrays = atoms_to_arrays(atoms)
        inputs = _graph_inputs(arrays)

        def graph_fn():
            with torch.no_grad():
                return graph(*inputs)

        def call():
            with torch.no_grad():
                prepared = graph(*inputs)
                out = physical(inputs[0], inputs[1], torch.tensor(arrays["atomic_numbers"]), torch.zeros(len(atoms), dtype=torch.long), prepared)
            return {"energy": float(out["energy"][0]), "forces": out["forces"].double().numpy()}

    else:
        from ocpdeploy.runtime import load_model

        artifact = load_model(task["artifact"], threads=task["threads"] if engine in ("onnx", "aoti") else None)

        def call():
            return artifact.predict(atoms)

        graph_fn = _Once(lambda: _engine_graph(engine, artifact, task.get("graph_program"), atoms))

    result: Dict[str, Any] = {"atoms": len(atoms)}
    with _PeakRss() as rss:
        first = call()
        for _ in range(WARMUP_CALLS - 1):
            call()
        result["seconds"] = _timed(call, repeats)
    result["peak_rss_gb"] = rss.peak / BYTES_PER_GB
    result["energy"] = float(first["energy"])
    result["max_force"] = float(np.abs(first["forces"]).max())
    if graph_fn is not None:
        prepared = graph_fn()  # untimed: loads the graph-only program, and every engine's first call allocates
        result["graph_seconds"] = _timed(graph_fn, repeats)
        result["graph_timing"] = GRAPH_TIMING[engine]
        edge_key = "main_edge_index" if "main_edge_index" in prepared else "edge_index"
        result["edges"] = int(prepared[edge_key].shape[-1])
        if "quad_out" in prepared:
            result["quadruplets"] = int(prepared["quad_out"].shape[0])
    return result


class _Once:
    """``factory()`` on the first call gives the function that this and every later call runs."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.function = None

    def __call__(self):
        if self.function is None:
            self.function = self.factory()
        return self.function()


def _engine_graph(engine: str, artifact, graph_program: Optional[str], atoms):
    """A function building the graph of ``atoms`` alone with ``engine``'s own code; it returns the graph tensors by name.

    Made after the peak RSS is read: the graph-only program's memory is not the artifact's.
    """
    import torch

    from ocpdeploy.runtime.structures import atoms_to_arrays, stack_structures

    stacked = stack_structures([atoms_to_arrays(atoms)])
    dtype = np.float64 if artifact.metadata["dtype"] == "float64" else np.float32
    feeds = {
        "positions": stacked["positions"].astype(dtype),
        "atomic_numbers": stacked["atomic_numbers"],
        "cell": stacked["cell"].astype(dtype),
        "pbc": stacked["pbc"],
        "tags": stacked["tags"],
        "natoms": stacked["natoms"],
    }
    if engine == "torchscript":
        graph = dict(artifact.module.named_children())["graph"]
        tensors = {name: torch.from_numpy(array) for name, array in feeds.items()}

        def run():
            with torch.no_grad():
                return graph(tensors["positions"], tensors["cell"], tensors["pbc"], tensors["natoms"], tensors["tags"])

        return run
    if engine == "onnx":
        import onnxruntime

        # The artifact session's own options object: the same threads, optimisation level and arena.
        session = onnxruntime.InferenceSession(graph_program, artifact.session.get_session_options(), providers=artifact.session.get_providers())
        input_names = [i.name for i in session.get_inputs()]
        output_names = [o.name for o in session.get_outputs()]

        def run():
            # IO binding, as the runtime runs the artifact.
            binding = session.io_binding()
            for name in input_names:
                binding.bind_cpu_input(name, feeds[name])
            for name in output_names:
                binding.bind_output(name, "cpu")
            session.run_with_iobinding(binding)
            return dict(zip(output_names, binding.copy_outputs_to_cpu()))

        return run
    from torch._inductor import aoti_load_package

    from ocpdeploy.exporter.graph_program import GraphProgram
    from ocpdeploy.runtime.graphs import build_graph

    package = aoti_load_package(graph_program)
    output_names = GraphProgram(build_graph(artifact.metadata["model_kind"], artifact.metadata["graph"])).output_names
    tensors = [torch.from_numpy(feeds[name]) for name in ("positions", "atomic_numbers", "cell", "pbc", "tags", "natoms")]

    def run():
        with torch.no_grad():
            return dict(zip(output_names, package(*tensors)))

    return run


def _graph_inputs(arrays: Dict[str, np.ndarray]):
    import torch

    return (
        torch.tensor(arrays["positions"], dtype=torch.float32),
        torch.tensor(arrays["cell"], dtype=torch.float32).unsqueeze(0),
        torch.tensor(arrays["pbc"]).unsqueeze(0),
        torch.tensor([len(arrays["positions"])]),
        torch.tensor(arrays["tags"]),
    )


def graph_worker(task: Dict[str, Any]) -> Dict[str, Any]:
    """Neighbour-list construction alone for one backend."""
    import torch

    torch.set_num_threads(task["threads"])
    atoms = structure(task["structure"])
    atoms.wrap()
    cutoff, cap = task["cutoff"], task["cap"]
    backend = task["backend"]
    positions = torch.tensor(atoms.positions, dtype=torch.float32)
    cell = torch.tensor(atoms.cell.array, dtype=torch.float32)
    pbc = torch.tensor(atoms.pbc)
    if backend == "reference":
        from fairchem_reference import install_stand_ins

        install_stand_ins()
        from fairchem.core.common.utils import radius_graph_pbc as reference_radius_graph
        from torch_geometric.data import Batch, Data

        data = Batch.from_data_list([Data(pos=positions, cell=cell.unsqueeze(0), natoms=torch.tensor([len(atoms)]), pbc=pbc)])

        def call():
            return reference_radius_graph(data, cutoff, cap, enforce_max_neighbors_strictly=True, pbc=[bool(p) for p in atoms.pbc])

    elif backend == "ours":
        from ocpdeploy.runtime.radius_graph import radius_graph_pbc

        def call():
            return radius_graph_pbc(positions, cell, pbc, cutoff, cap)

    elif backend == "vesin":
        from vesin import NeighborList

        def call():
            return NeighborList(cutoff=cutoff, full_list=True).compute(atoms.positions, atoms.cell.array, True, quantities="ijS")

    else:
        from ase.neighborlist import neighbor_list

        def call():
            return neighbor_list("ijS", atoms, cutoff)

    result: Dict[str, Any] = {"atoms": len(atoms)}
    with _PeakRss() as rss:
        call()
        result["seconds"] = _timed(call, task["repeats"])
    result["peak_rss_gb"] = rss.peak / BYTES_PER_GB
    return result


# --------------------------------------------------------------------------- driver
def run_worker(task: Dict[str, Any], memory_limit_gb: float) -> Dict[str, Any]:
    """Run ``task`` in a fresh interpreter; kill it above ``memory_limit_gb`` of RSS."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(HERE))
    peak = 0
    start = time.time()
    while process.poll() is None:
        peak = max(peak, _process_rss_bytes(process.pid))
        if peak > memory_limit_gb * BYTES_PER_GB:
            process.kill()
            process.wait()
            return {"failed": f"killed above {memory_limit_gb:.0f} GB RSS"}
        if time.time() - start > WORKER_TIMEOUT_SECONDS:
            process.kill()
            process.wait()
            return {"failed": f"timed out after {WORKER_TIMEOUT_SECONDS} s"}
        time.sleep(RSS_POLL_SECONDS)
    stdout, stderr = process.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        message = (stderr.strip().splitlines() or ["no output"])[-1]
        if "can't allocate memory" in message:
            message = "out of memory"
        return {"failed": f"exit {process.returncode}: {message[:FAILURE_MESSAGE_CHARACTERS]}"}
    return json.loads(lines[-1])


def matmul_peak_gflops(threads: int) -> float:
    """fp32 torch.mm 4096^2 rate of the fastest of ``MATMUL_REPEATS`` calls: a peak, so the fastest.

    (Session 8's run took the median of 3 and got 32 GFLOP/s on a shared host
    where 53 was measured minutes apart, so its PaiNN rates read above 100%.)
    """
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    torch.mm(a, b)
    seconds = []
    for _ in range(MATMUL_REPEATS):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * MATMUL_SIZE**3 / min(seconds) / 1e9


def prepare_artifacts(work: Path, models: List[str], engines: List[str]) -> Dict[str, Dict[str, str]]:
    from ocpdeploy.exporter import export_checkpoint
    from ocpdeploy.exporter.random_checkpoint import PUBLISHED, write_random_checkpoint

    paths: Dict[str, Dict[str, str]] = {}
    for name in models:
        model_name, attributes = PUBLISHED[name]
        checkpoint = work / f"{name}.pt"
        if not checkpoint.is_file():
            write_random_checkpoint(model_name, attributes, checkpoint, seed=0, noise=0.0)
        paths[name] = {"checkpoint": str(checkpoint)}
        for format, suffix in ARTIFACT_SUFFIXES.items():
            if format not in engines:
                continue
            output = work / f"{name}{suffix}"
            # A file already in --work is reused (AOTInductor compiles of these models take minutes).
            if not output.is_file():
                start = time.perf_counter()
                export_checkpoint(str(checkpoint), str(output), format=format)
                print(f"exported {name} {format} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            paths[name][format] = str(output)
            if format in GRAPH_PROGRAM_SUFFIXES:
                graph = work / f"{name}{GRAPH_PROGRAM_SUFFIXES[format]}"
                if not graph.is_file():
                    export_graph_program(str(output), format, str(graph))
                paths[name][f"{format}_graph"] = str(graph)
    return paths


def export_graph_program(artifact: str, format: str, path: str) -> str:
    """The graph-only program (``ocpdeploy.exporter.graph_program``) of ``artifact``'s metadata, as ``format`` at ``path``."""
    from ocpdeploy.exporter.graph_program import write_graph_aoti, write_graph_onnx
    from ocpdeploy.runtime import load_model

    metadata = load_model(artifact).metadata
    start = time.perf_counter()
    (write_graph_onnx if format == "onnx" else write_graph_aoti)(metadata, path)
    print(f"exported the graph-only {format} program of {Path(artifact).name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return path


def _repeats(structure_name: str) -> int:
    return 5 if structure_name.startswith("slab") else 1


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="slab and 1,008-atom bulk only")
    parser.add_argument("--memory-limit", type=float, default=20.0, help="GB of RSS above which a worker is killed")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--structures", default=None, help=f"comma-separated subset of {','.join(CASES)} (default: all, or the --quick ones)")
    parser.add_argument("--no-graphs", action="store_true", help="skip the neighbour-list comparison")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of the engines (reference only where fairchem imports)")
    parser.add_argument(
        "--work", default=None,
        help="directory for the checkpoints, artifacts and graph-only programs, kept afterwards; files already there are reused "
        "(made by this version: nothing checks). Default: a temporary directory, removed afterwards",
    )
    args = parser.parse_args(argv)
    if args.worker:
        task = json.loads(args.worker)
        print(json.dumps(graph_worker(task) if "backend" in task else worker(task)))
        return

    sys.path.insert(0, str(HERE))
    from fairchem_reference import available

    from ocpdeploy.exporter.write_aoti import compiler_available

    engines = [e for e in args.engines.split(",") if e]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    if "reference" in engines and not available():
        engines.remove("reference")
    if "aoti" in engines and not compiler_available():
        print("no C++ compiler found: the aoti engine is skipped", file=sys.stderr)
        engines.remove("aoti")
    selected = [m for m in args.models.split(",") if m]
    unknown = [m for m in selected if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    all_cases = QUICK_CASES if args.quick else CASES
    if args.structures:
        names = [n for n in args.structures.split(",") if n]
        unknown = [n for n in names if n not in CASES]
        if unknown:
            parser.error(f"unknown structure(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
        all_cases = {n: CASES[n] for n in names}
    cases = {name: [m for m in models if m in selected] for name, models in all_cases.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = args.work is not None
    work = Path(args.work) if keep else Path(tempfile.mkdtemp(prefix="ocp-deploy-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        paths = prepare_artifacts(work, selected, engines)
        results: Dict[str, Any] = {
            "machine": machine_description(args.threads),
            "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/compare.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "engines": engines,
            "matmul_peak_gflops": matmul_peak_gflops(args.threads),
            "runs": [],
            "graphs": [],
        }
        for structure_name, models in cases.items():
            for model in models:
                for engine in engines:
                    task = {
                        "engine": engine, "structure": structure_name, "threads": args.threads, "repeats": _repeats(structure_name),
                        "checkpoint": paths[model]["checkpoint"], "artifact": paths[model].get(engine),
                        "graph_program": paths[model].get(f"{engine}_graph"),
                    }
                    print(f"{model} {structure_name} {engine} ...", file=sys.stderr, flush=True)
                    result = run_worker(task, args.memory_limit)
                    results["runs"].append({"model": model, "structure": structure_name, "engine": engine, **result})
                    print(f"  {result}", file=sys.stderr, flush=True)
        backends = (["reference"] if "reference" in engines else []) + ["ours", "vesin", "ase"]
        for structure_name, (cutoff, cap) in ({} if args.no_graphs else GRAPH_CASES).items():
            for backend in backends:
                task = {"backend": backend, "structure": structure_name, "cutoff": cutoff, "cap": cap, "threads": args.threads, "repeats": GRAPH_REPEATS}
                print(f"graph {structure_name} {backend} ...", file=sys.stderr, flush=True)
                result = run_worker(task, args.memory_limit)
                results["graphs"].append({"structure": structure_name, "cutoff": cutoff, "cap": cap, "backend": backend, **result})
                print(f"  {result}", file=sys.stderr, flush=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)  # the artifacts are 0.7-0.9 GB per run
    (out / "compare.json").write_text(json.dumps(results, indent=1) + "\n")
    markdown = render_markdown(results)
    (out / "compare.md").write_text(markdown)
    plot(results, out / "compare.png")
    print(markdown)


# --------------------------------------------------------------------------- report
def _painn_flops(edges: int, atoms: int) -> float:
    return 2 * (PAINN_MACS_PER_ATOM * atoms + PAINN_MACS_PER_EDGE * edges)


def _scale_lines(runs: List[Dict[str, Any]]) -> List[str]:
    """Growth from the 1,008-atom bulk to the larger bulks, per model and engine (linear: time ratio <= atoms ratio)."""
    lines: List[str] = []
    for run in runs:
        base = next(
            (r for r in runs if r["model"] == run["model"] and r["engine"] == run["engine"] and r["structure"] == SCALE_BASE),
            {},
        )
        if run["structure"] == SCALE_BASE or not run["structure"].startswith("bulk") or "seconds" not in base or "seconds" not in run:
            continue
        if not lines:
            lines = ["", f"Growth from {SCALE_BASE} (linear in N: time and memory ratios at most the atoms ratio):", ""]
            lines += ["| model | structure | engine | atoms ratio | time ratio | peak RSS ratio |", "|---|---|---|---|---|---|"]
        lines.append(
            f"| {run['model']} | {run['structure']} | {run['engine']} | {run['atoms'] / base['atoms']:.1f} "
            f"| {run['seconds'] / base['seconds']:.1f} | {run['peak_rss_gb'] / base['peak_rss_gb']:.1f} |"
        )
    return lines


CPUINFO = Path("/proc/cpuinfo")
MEMINFO = Path("/proc/meminfo")
# Vector instruction sets that decide which kernels torch, ONNX Runtime and Inductor pick.
ISA_NAMES = {"avx512f": "AVX-512", "avx2": "AVX2"}  # widest first
KIB_PER_GIB = 1024 * 1024


def machine_description(threads: Optional[int] = None) -> str:
    """CPU model, instruction set, cores, memory and threads: what a benchmark's numbers depend on."""
    model, isa = platform.processor() or platform.machine(), "unknown ISA"
    if CPUINFO.is_file():
        text = CPUINFO.read_text()
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
        model = names[0] if names else model
        isa = next((name for flag, name in ISA_NAMES.items() if flag in flags), "no AVX2")
    memory = ""
    if MEMINFO.is_file():
        total_kib = int(MEMINFO.read_text().split()[1])
        memory = f", {total_kib / KIB_PER_GIB:.0f} GiB"
    import torch  # the coordinator imports torch lazily, like its workers

    thread_text = "" if threads is None else f", {threads} threads"
    return f"{model}, {isa}, {os.cpu_count()} cores{memory}{thread_text}, torch {torch.__version__}"


def render_markdown(results: Dict[str, Any]) -> str:
    baseline = "reference" if "reference" in results["engines"] else "eager"
    lines = [
        f"Machine: {results['machine']}; fp32 matmul peak {results['matmul_peak_gflops']:.0f} GFLOP/s (torch.mm {MATMUL_SIZE}^2).",
        f"Date: {results.get('date', 'not recorded')}. Command: `{results.get('command', 'not recorded')}`.",
        f"time: one energy+forces call through load_model(...).predict (graph construction included), median; "
        f"speed-up = {baseline} time / engine time.",
        "graph: the graph construction alone, median, timed with the engine's own code for it, after the call's peak RSS is read "
        "(share = graph / time): " + "; ".join(f"{engine}: {GRAPH_TIMING[engine]}" for engine in results["engines"] if engine in GRAPH_TIMING) + ".",
        "",
        "| model | structure | atoms | engine | time (s) | graph (s) | graph share | speed-up | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    runs = results["runs"]
    for run in runs:
        base = next((r for r in runs if r["model"] == run["model"] and r["structure"] == run["structure"] and r["engine"] == baseline), {})
        if "failed" in run:
            lines.append(f"| {run['model']} | {run['structure']} | | {run['engine']} | {run['failed']} | | | | |")
            continue
        ratio = f"{base['seconds'] / run['seconds']:.1f}x" if "seconds" in base else "-"
        graph = f"{run['graph_seconds']:.3f}" if "graph_seconds" in run else "-"
        share = f"{run['graph_seconds'] / run['seconds']:.0%}" if "graph_seconds" in run else "-"
        lines.append(
            f"| {run['model']} | {run['structure']} | {run['atoms']} | {run['engine']} | {run['seconds']:.3f} | {graph} | {share} "
            f"| {ratio} | {run['peak_rss_gb']:.2f} |"
        )
    lines += ["", "PaiNN h512 model time (total - graph) priced at 26.0M MAC/atom + 1.18M MAC/edge:", ""]
    lines += ["| structure | engine | GFLOP | GFLOP/s | fraction of matmul peak |", "|---|---|---|---|---|"]
    for run in runs:
        if run["model"] == "painn_h512" and "graph_seconds" in run and "edges" in run:
            flops = _painn_flops(run["edges"], run["atoms"])
            rate = flops / max(run["seconds"] - run["graph_seconds"], 1e-9) / 1e9
            lines.append(f"| {run['structure']} | {run['engine']} | {flops / 1e9:.0f} | {rate:.0f} | {rate / results['matmul_peak_gflops']:.0%} |")
    lines += _scale_lines(runs)
    if not results["graphs"]:
        return "\n".join(lines) + "\n"
    lines += ["", "Graph construction alone (with the cap), median:", ""]
    lines += ["| structure | cutoff / cap | backend | time (s) | vs vesin | peak RSS (GB) |", "|---|---|---|---|---|---|"]
    for graph in results["graphs"]:
        vesin = next((g for g in results["graphs"] if g["structure"] == graph["structure"] and g["backend"] == "vesin"), {})
        if "failed" in graph:
            lines.append(f"| {graph['structure']} | {graph['cutoff']} / {graph['cap']} | {graph['backend']} | {graph['failed']} | | |")
            continue
        ratio = f"{graph['seconds'] / vesin['seconds']:.1f}x" if "seconds" in vesin else "-"
        lines.append(f"| {graph['structure']} | {graph['cutoff']} / {graph['cap']} | {graph['backend']} | {graph['seconds']:.3f} | {ratio} | {graph['peak_rss_gb']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(results: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(MODELS), figsize=(6 * len(MODELS), 4))
    for axis, model in zip(np.atleast_1d(axes), MODELS):
        for engine in results["engines"]:
            points = [(r["atoms"], r["seconds"]) for r in results["runs"] if r["model"] == model and r["engine"] == engine and "seconds" in r]
            if points:
                x, y = zip(*sorted(points))
                axis.loglog(x, y, marker="o", label=engine)
        axis.set_title(f"{model}: one energy+forces call")
        axis.set_xlabel("atoms")
        axis.set_ylabel("seconds")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
