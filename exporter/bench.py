"""``export-model bench``: latency and memory of one energy+forces call of an artifact.

What is timed, per structure size (``repeats`` calls after ``warmup``
untimed calls, wall clock ``time.perf_counter``; on CUDA every clock read is
preceded by ``torch.cuda.synchronize``). A row reports the median call: the
timed call with the median total (of an even count, the faster of the two
middle ones) and that call's own graph, model and other times (TorchScript:
see below), so that the columns of a row add up to its total (medians taken
column by column would not: each would come from a different call).

* **total**: one ``DeployedModel.predict(atoms)`` call, the public path:
  ase.Atoms -> arrays, input validation, graph construction, the model,
  and the copy of the outputs to float64 numpy.
* **graph / model**, by backend:

  - ONNX: the artifact builds its graph inside its program, out of reach
    of a timer. The session run (``OnnxModel._run_bound``) is timed inside
    the ``predict`` call. After a size's calls (and its memory
    measurement) the graph alone is run on the same inputs with the same
    engine, once untimed and then once per timed call: the graph-only
    program (``exporter/graph_program.py``: the artifact's graph module
    from its metadata, exported to ONNX the way artifacts are, tens of
    seconds when the benchmark starts) in an ONNX Runtime session with the
    artifact session's options (threads, optimisation level, arena).
    ``model = session run - graph`` and ``other = total - session run``
    (validation, conversions, output copy).
  - AOTInductor: the graph is built inside the package and is not timed
    apart (compiling a graph-only package takes minutes;
    ``benchmarks/compare.py`` does it and times the graph that way): graph
    is reported as ``-``, ``model`` is the package's run
    (``AotiModel._run_package``, graph construction included) and
    ``other = total - model``.
  - TorchScript: the artifact builds its graph internally, out of reach of
    a timer. After each ``predict`` the same graph is built again on its own
    with the artifact's embedded scripted graph submodule (or, for an
    artifact without one, ``runtime.graphs.build_graph`` from the metadata)
    and timed; ``model = total - graph`` (so it includes the host overhead).

Memory, per size: on CPU the peak resident set size above its level just
before the size's calls (warm-up included, so one-time allocations such as
TorchScript's optimisation or ONNX Runtime's arena land in the first size;
memory the allocators kept from earlier sizes is reused, not counted again:
give sizes in ascending order). Linux's kernel-tracked high-water mark
``VmHWM`` is reset through ``/proc/self/clear_refs`` before and read after
the calls (exact, no overhead); where that reset is refused, a background thread
samples ``VmRSS`` instead (can miss spikes shorter than the sampling period,
and takes the GIL now and then). On CUDA: ``torch.cuda.max_memory_allocated``
above the allocation before the calls; memory ONNX Runtime allocates on the
GPU is not seen by torch.

Structures: fcc Cu bulk (a = 3.61 A, 4-atom cubic cell repeated r x r x r,
r chosen so the atom count is closest to the requested size), rattled with a
seeded 0.05 A Gaussian, every tag 1 (surface, so GemNet-OC builds
quadruplets), fully periodic.
"""

import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Tuple

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from ocpdeploy.runtime import AotiModel, DeployedModel, OnnxModel, TorchScriptModel, load_model
from ocpdeploy.runtime.graph_gemnet_oc import MAIN_EDGE_INDEX
from ocpdeploy.runtime.graphs import build_graph
from ocpdeploy.runtime.keys import EDGE_INDEX
from ocpdeploy.runtime.structures import atoms_to_arrays, stack_structures

DEVICES = ("cpu", "cuda")

ELEMENT = "Cu"
LATTICE_CONSTANT = 3.61  # Angstrom
ATOMS_PER_CUBIC_CELL = 4  # fcc
RATTLE_STDEV = 0.05  # Angstrom
RATTLE_SEED = 0
SURFACE_TAG = 1

# Main-graph keys of the graph modules' outputs (PaiNN, GemNet-OC).
MAIN_EDGE_KEYS = (EDGE_INDEX, MAIN_EDGE_INDEX)
EDGE_AXIS = 1  # edge_index is (2, E)

MS_PER_S = 1000.0
BYTES_PER_KIB = 1024
BYTES_PER_MIB = 1024 * 1024
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"  # clear_refs command: reset VmHWM to the current VmRSS (Linux >= 4.0)
RSS_SAMPLE_INTERVAL_S = 0.001
MEMORY_SCOPE = "during the size's warm-up and timed calls"
# TorchScript's profiling executor profiles, then optimises, in a process's first calls.
TORCHSCRIPT_PROFILING_CALLS = 2

COLUMNS = ("size", "atoms", "edges", "graph_ms", "model_ms", "other_ms", "total_ms", "atoms/s", "peak_MiB")
MISSING = "-"

Progress = Callable[[str], None]


def parse_sizes(text: str) -> List[int]:
    """``"100,1000"`` -> ``[100, 1000]``; every entry an integer >= 1."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        try:
            size = int(item)
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is not an integer (expected comma-separated atom counts, e.g. 100,1000)") from None
        if size < 1:
            raise ValueError(f"--sizes: every size must be >= 1, got {size}")
        sizes.append(size)
    return sizes


def check_counts(repeats: int, warmup: int) -> None:
    """``repeats`` >= 1 timed calls after ``warmup`` >= 0 untimed ones."""
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {warmup}")


def cubic_repeat(size: int) -> int:
    """The r >= 1 whose r^3-repeated cubic cell has the atom count closest to ``size`` (smaller r on ties)."""
    repeat = 1
    while abs(ATOMS_PER_CUBIC_CELL * (repeat + 1) ** 3 - size) < abs(ATOMS_PER_CUBIC_CELL * repeat**3 - size):
        repeat += 1
    return repeat


def bulk_structure(size: int) -> Atoms:
    """Rattled, fully periodic fcc Cu bulk with about ``size`` atoms, all tagged 1."""
    repeat = cubic_repeat(size)
    atoms = bulk(ELEMENT, "fcc", a=LATTICE_CONSTANT, cubic=True).repeat((repeat, repeat, repeat))
    atoms.rattle(stdev=RATTLE_STDEV, seed=RATTLE_SEED)
    atoms.set_tags([SURFACE_TAG] * len(atoms))
    return atoms


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _edge_count(graph: Dict[str, Any]) -> Optional[int]:
    """Main-graph edges of a graph module's (or graph-only program's) outputs by name: tensors, arrays or OrtValues."""
    for key in MAIN_EDGE_KEYS:
        if key in graph:
            shape = graph[key].shape
            return int((shape() if callable(shape) else shape)[EDGE_AXIS])
    return None


# ---------------------------------------------------------------------------
# Memory meters: start() before a size's calls, stop() -> peak growth in bytes.
# ---------------------------------------------------------------------------


class _MemoryMeter(Protocol):
    description: str

    def start(self) -> None: ...

    def stop(self) -> Optional[int]: ...


def _status_bytes(field: str) -> int:
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * BYTES_PER_KIB
    raise OSError(f"{PROC_STATUS} has no {field}")


def _reset_peak_rss() -> bool:
    try:
        PROC_CLEAR_REFS.write_text(RESET_PEAK_RSS)
        return _status_bytes("VmHWM") <= _status_bytes("VmRSS")
    except OSError:
        return False


class _PeakRss:
    description = f"peak RSS growth {MEMORY_SCOPE}: kernel high-water mark VmHWM (reset via /proc/self/clear_refs) minus VmRSS before"

    def start(self) -> None:
        _reset_peak_rss()
        self.baseline = _status_bytes("VmRSS")

    def stop(self) -> Optional[int]:
        return max(0, _status_bytes("VmHWM") - self.baseline)


class _SampledRss:
    description = (
        f"peak RSS growth {MEMORY_SCOPE}: VmRSS sampled every {RSS_SAMPLE_INTERVAL_S * MS_PER_S:g} ms by a background thread "
        "(VmHWM reset refused here; spikes between samples are missed)"
    )

    def start(self) -> None:
        self.baseline = _status_bytes("VmRSS")
        self.peak = self.baseline
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(RSS_SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, _status_bytes("VmRSS"))

    def stop(self) -> Optional[int]:
        self.done.set()
        self.thread.join()
        return max(0, max(self.peak, _status_bytes("VmRSS")) - self.baseline)


class _NoMemory:
    description = "peak memory: not measured (no /proc/self/status on this system)"

    def start(self) -> None:
        pass

    def stop(self) -> Optional[int]:
        return None


class _CudaPeak:
    def __init__(self, device: torch.device, onnx: bool) -> None:
        self.device = device
        self.description = f"peak CUDA memory growth {MEMORY_SCOPE}: torch.cuda.max_memory_allocated minus memory_allocated before"
        if onnx:
            self.description += "; ONNX Runtime's own GPU allocations (the session) are NOT captured, only torch's (graph module, inputs)"

    def start(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)
        self.baseline = torch.cuda.memory_allocated(self.device)

    def stop(self) -> Optional[int]:
        return torch.cuda.max_memory_allocated(self.device) - self.baseline


def _memory_meter(model: DeployedModel) -> _MemoryMeter:
    if model.device.type == "cuda":
        return _CudaPeak(model.device, isinstance(model, OnnxModel))
    if not PROC_STATUS.is_file():
        return _NoMemory()
    return _PeakRss() if _reset_peak_rss() else _SampledRss()


# ---------------------------------------------------------------------------
# Timed calls: each returns (total, graph or None, model or None, edges) in seconds.
# ---------------------------------------------------------------------------

Sample = Tuple[float, Optional[float], Optional[float], Optional[int]]


class _Timed:
    """Wraps a callable; remembers the duration, the arguments and the result of the last call."""

    def __init__(self, function: Callable[..., Any], device: Any) -> None:
        self.function = function
        self.device = device
        self.seconds = 0.0
        self.arguments: Tuple[Any, ...] = ()
        self.result: Any = None

    def __call__(self, *arguments: Any) -> Any:
        self.arguments = arguments
        start = _clock(self.device)
        self.result = self.function(*arguments)
        self.seconds = _clock(self.device) - start
        return self.result


@contextmanager
def _timing(model: DeployedModel, method: str) -> Iterator[_Timed]:
    """``model.<method>`` replaced by a ``_Timed`` wrapper of itself while the block runs."""
    timed = _Timed(getattr(model, method), model.device)
    setattr(model, method, timed)
    try:
        yield timed
    finally:
        delattr(model, method)


class _OnnxGraphSession:
    """The graph-only program of an ONNX artifact (``graph_program.write_graph_onnx``) in a session like the artifact's."""

    def __init__(self, model: OnnxModel, directory: str) -> None:
        import onnxruntime

        from .graph_program import write_graph_onnx

        path = str(Path(directory) / "graph.onnx")
        print(f"bench: exporting the graph-only ONNX program of {model.path} (takes tens of seconds)", file=sys.stderr, flush=True)
        write_graph_onnx(model.metadata, path)
        artifact_session = model.session
        # The artifact session's own options object: same threads, optimisation level, arena and logging.
        self.session = onnxruntime.InferenceSession(path, artifact_session.get_session_options(), providers=artifact_session.get_providers())
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.device = model.device

    def __call__(self, feeds: Dict[str, np.ndarray]) -> Dict[str, Any]:
        """Graph tensors by name (``OrtValue``s left where ONNX Runtime put them) from the artifact's feeds."""
        from onnxruntime import OrtValue

        binding = self.session.io_binding()
        held = []  # device copies of the inputs, held until the run has read them
        for name in self.input_names:
            if self.device.type == "cpu":
                binding.bind_cpu_input(name, feeds[name])
            else:
                held.append(OrtValue.ortvalue_from_numpy(feeds[name], self.device.type, self.device.index or 0))
                binding.bind_ortvalue_input(name, held[-1])
        for name in self.output_names:
            binding.bind_output(name, self.device.type, self.device.index or 0)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.get_outputs()))


class _OnnxCalls:
    """Timed calls of an ONNX artifact: the session run inside ``predict``; the graph-only program on the same feeds afterwards."""

    def __init__(self, model: OnnxModel, directory: str) -> None:
        self.model = model
        self.graph = _OnnxGraphSession(model, directory)
        self.split = (
            "ONNX: the artifact builds its graph inside its program; graph = the graph-only program (exporter/graph_program.py, "
            "the artifact's graph module exported to ONNX) in a session with the artifact's session options, run on the same inputs "
            "once per timed call after the size's calls (one untimed run first); model = the artifact's session run "
            "(OnnxModel._run_bound, timed inside predict) - graph; other = total - session run (validation, conversions, output copy)"
        )

    @contextmanager
    def installed(self) -> Iterator[None]:
        with _timing(self.model, "_run_bound") as run:
            self.run = run
            yield

    def __call__(self, atoms: Atoms) -> Sample:
        device = self.model.device
        start = _clock(device)
        self.model.predict(atoms)
        total = _clock(device) - start
        (self.feeds,) = self.run.arguments
        return total, None, self.run.seconds, None

    def completed(self, samples: List[Sample]) -> List[Sample]:
        """The samples with their graph part: the graph-only program timed once per sample, model = session run - graph.

        Run after the size's memory is measured, so the graph-only session's
        own arena is not counted in the artifact's peak.
        """
        device = self.model.device
        graph = self.graph(self.feeds)  # untimed: the session's first run allocates its arena
        edges = _edge_count(graph)
        completed: List[Sample] = []
        for total, _, program, _ in samples:
            start = _clock(device)
            self.graph(self.feeds)
            graph_seconds = _clock(device) - start
            completed.append((total, graph_seconds, (program or 0.0) - graph_seconds, edges))
        return completed


class _AotiCalls:
    """Timed calls of an AOTInductor package: the package run inside ``predict``; the graph inside it is not timed apart."""

    def __init__(self, model: AotiModel) -> None:
        self.model = model
        # Edges only (untimed, once per structure): the eager graph module of the same metadata.
        self.edge_graph = build_graph(model.metadata["model_kind"], model.metadata["graph"]).to(model.device)
        self.edges: Dict[int, Optional[int]] = {}
        self.split = (
            "AOTInductor: the graph is built inside the package and is not timed apart (graph -; compiling a graph-only "
            "package takes minutes: benchmarks/compare.py times the graph that way); model = the package's run "
            "(AotiModel._run_package, graph construction included), timed inside predict; other = total - model "
            "(validation, conversions, output copy)"
        )

    @contextmanager
    def installed(self) -> Iterator[None]:
        with _timing(self.model, "_run_package") as run:
            self.run = run
            yield

    def __call__(self, atoms: Atoms) -> Sample:
        device = self.model.device
        start = _clock(device)
        self.model.predict(atoms)
        total = _clock(device) - start
        if id(atoms) not in self.edges:
            (feeds,) = self.run.arguments
            with torch.no_grad():
                graph = self.edge_graph(feeds["positions"], feeds["cell"], feeds["pbc"], feeds["natoms"], feeds["tags"])
            self.edges[id(atoms)] = _edge_count(graph)
        return total, None, self.run.seconds, self.edges[id(atoms)]

    def completed(self, samples: List[Sample]) -> List[Sample]:
        return samples


class _TorchScriptCalls:
    def __init__(self, model: TorchScriptModel) -> None:
        self.model = model
        embedded = dict(model.module.named_children()).get("graph")
        if embedded is not None:
            self.graph: Callable[..., Dict[str, torch.Tensor]] = embedded
            source = "the artifact's embedded scripted graph submodule"
        else:
            self.graph = build_graph(model.metadata["model_kind"], model.metadata["graph"]).to(model.device)
            source = "runtime.graphs.build_graph(metadata) in Python"
        self.split = (
            f"TorchScript: the artifact builds its graph internally; graph = the same graph built again on its own by {source}, "
            "timed after each predict; model = total - graph (includes validation, conversions, output copy)"
        )

    @contextmanager
    def installed(self) -> Iterator[None]:
        yield

    def __call__(self, atoms: Atoms) -> Sample:
        device = self.model.device
        start = _clock(device)
        self.model.predict(atoms)
        total = _clock(device) - start
        tensors = self.model._tensors(stack_structures([atoms_to_arrays(atoms)]))
        with torch.no_grad():
            start = _clock(device)
            graph = self.graph(tensors["positions"], tensors["cell"], tensors["pbc"], tensors["natoms"], tensors["tags"])
            graph_seconds = _clock(device) - start
        return total, graph_seconds, None, _edge_count(graph)

    def completed(self, samples: List[Sample]) -> List[Sample]:
        return samples


# ---------------------------------------------------------------------------
# The benchmark.
# ---------------------------------------------------------------------------


def median_call(samples: List[Sample]) -> Tuple[float, Optional[float], float, Optional[float], Optional[int]]:
    """``(total, graph, model, other, edges)`` of the call with the median total, in seconds.

    Of an even count the faster of the two middle calls (a measured call,
    not an average of two), with that call's graph time. Where the model
    was timed with the call (ONNX, AOTInductor), ``other = total - graph
    - model``; where it was not (TorchScript, whose graph is built again
    right after the call), ``model = total - graph`` and ``other`` is None.
    A graph of None (AOTInductor: built inside the package, not timed
    apart) is part of ``model``. Either way the parts add up to ``total``.
    """
    total, graph, model, edges = sorted(samples, key=lambda sample: sample[0])[(len(samples) - 1) // 2]
    if model is None:
        return total, graph, total - (graph or 0.0), None, edges
    return total, graph, model, total - (graph or 0.0) - model, edges



@dataclass
class SizeResult:
    """The median call of one size, in seconds: ``graph + model (+ other) = total``; a part that is None is inside ``model``."""

    size: int
    atoms: int
    edges: Optional[int]
    graph: Optional[float]
    model: float
    other: Optional[float]
    total: float
    peak_bytes: Optional[int]

    @property
    def atoms_per_second(self) -> float:
        return self.atoms / self.total


class Benchmark:
    """Load ``artifact`` on ``device`` (with ``threads``), then ``run`` sizes; a context manager restoring torch's threads."""

    def __init__(self, artifact: str, device: str = "cpu", threads: Optional[int] = None) -> None:
        if device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        self.previous_threads = torch.get_num_threads()
        self.model = load_model(artifact, device=device, threads=threads)
        if threads is not None:
            torch.set_num_threads(threads)
        # Scratch space of the graph-only ONNX program, removed on exit.
        self.scratch = tempfile.TemporaryDirectory(prefix="ocpdeploy-bench-")
        self.calls: Any
        if isinstance(self.model, OnnxModel):
            self.calls = _OnnxCalls(self.model, self.scratch.name)
        elif isinstance(self.model, AotiModel):
            self.calls = _AotiCalls(self.model)
        else:
            self.calls = _TorchScriptCalls(self.model)
        self.memory = _memory_meter(self.model)

    def __enter__(self) -> "Benchmark":
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self.previous_threads)
        self.scratch.cleanup()

    @property
    def format(self) -> str:
        if isinstance(self.model, OnnxModel):
            return "onnx"
        return "aoti" if isinstance(self.model, AotiModel) else "torchscript"

    def threads_description(self) -> str:
        text = f"torch threads {torch.get_num_threads()}"
        if isinstance(self.model, OnnxModel):
            intra = self.model.session.get_session_options().intra_op_num_threads
            text += f", onnxruntime intra-op threads {intra if intra > 0 else 'default (all cores)'}"
        return text

    def run(self, sizes: List[int], repeats: int, warmup: int, progress: Optional[Progress] = None) -> List[SizeResult]:
        """Median timings and peak memory per size; ``progress(label)`` after every call."""
        check_counts(repeats, warmup)
        results = []
        with self.calls.installed():
            for size in sizes:
                results.append(self._run_size(size, repeats, warmup, progress))
        return results

    def _run_size(self, size: int, repeats: int, warmup: int, progress: Optional[Progress]) -> SizeResult:
        atoms = bulk_structure(size)
        label = f"bench {len(atoms)} atoms"
        samples: List[Sample] = []
        self.memory.start()
        for call in range(warmup + repeats):
            sample = self.calls(atoms)
            if call >= warmup:
                samples.append(sample)
            if progress is not None:
                progress(label)
        peak = self.memory.stop()
        total, graph, model, other, edges = median_call(self.calls.completed(samples))
        return SizeResult(
            size=size,
            atoms=len(atoms),
            edges=edges,
            graph=graph,
            model=model,
            other=other,
            total=total,
            peak_bytes=peak,
        )

    def description(self, repeats: int, warmup: int) -> List[str]:
        metadata = self.model.metadata
        timing = (
            f"timing: the median call (by total) of {repeats} energy+forces calls after {warmup} warm-up; "
            "total = one DeployedModel.predict call, and graph + model + other = total (that call's own parts; "
            "a part shown as - is inside the one the split names)"
        )
        if isinstance(self.model, TorchScriptModel) and warmup < TORCHSCRIPT_PROFILING_CALLS:
            timing += f" (TorchScript optimises during its first {TORCHSCRIPT_PROFILING_CALLS} calls: use --warmup {TORCHSCRIPT_PROFILING_CALLS} or more)"
        return [
            f"artifact: {self.model.path} ({metadata['model_kind']}, {self.format}, {metadata['dtype']}, forces {metadata['forces']}) "
            f"on {self.model.device}, {self.threads_description()}",
            f"structures: fcc {ELEMENT} bulk a={LATTICE_CONSTANT} A, cubic cell repeated r^3, rattled {RATTLE_STDEV} A "
            f"(seed {RATTLE_SEED}), tags {SURFACE_TAG}; edges = main graph",
            timing,
            f"split: {self.calls.split}",
            f"memory: {self.memory.description}",
        ]


# ---------------------------------------------------------------------------
# Output.
# ---------------------------------------------------------------------------


def _cells(result: SizeResult) -> List[str]:
    def ms(seconds: Optional[float]) -> str:
        return MISSING if seconds is None else f"{seconds * MS_PER_S:.3f}"

    return [
        str(result.size),
        str(result.atoms),
        MISSING if result.edges is None else str(result.edges),
        ms(result.graph),
        ms(result.model),
        ms(result.other),
        ms(result.total),
        f"{result.atoms_per_second:.1f}",
        MISSING if result.peak_bytes is None else f"{result.peak_bytes / BYTES_PER_MIB:.1f}",
    ]


def format_table(description: List[str], results: List[SizeResult]) -> str:
    """Plain-text table: the description lines, then right-aligned columns."""
    rows = [list(COLUMNS)] + [_cells(result) for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    return "\n".join(description + lines)


def format_markdown(description: List[str], results: List[SizeResult]) -> str:
    """The same as a markdown list and table."""
    lines = [f"- {line}" for line in description] + [""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---:" for _ in COLUMNS) + "|")
    lines.extend("| " + " | ".join(_cells(result)) + " |" for result in results)
    return "\n".join(lines) + "\n"
