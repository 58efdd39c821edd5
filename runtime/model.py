"""Load an artifact and run it: ``load_model(path, device)``.

Three backends behind one interface (``DeployedModel``):

* ``TorchScriptModel``: ``torch.jit.load``; the artifact builds its own graph.
* ``OnnxModel``: ONNX Runtime; this runtime builds the graph with the same
  scriptable module the TorchScript artifacts embed, then runs the session
  with IO binding (inputs and outputs stay on the session's device; on CUDA
  no host round trip between graph construction and the model).
* ``AotiModel``: an AOTInductor package (``.pt2``, ``torch.export`` compiled
  ahead of time for one device type); the graph is built as for ONNX and
  the tensors are passed on the device where they are.

``predict(atoms)`` returns ``{"energy": float (eV), "forces": (N,3) float64
(eV/A)}`` plus ``"stress"`` (3,3) for conservative artifacts on fully
periodic structures; ``predict_many(list, batch_size)`` batches structures
into one call each ``batch_size`` and returns the same per structure.

Files that are not artifacts are refused before any loader runs, in one
line naming what the file is (``filekind``: a trainer checkpoint gets the
export command, a truncated archive is called damaged); a loader's own
failure is quoted in whole sentences, never cut inside one.
"""

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from ase import Atoms

from .allocator import tune_malloc
from .contract import INPUT_SHAPES_KEY, check_feeds
from .filekind import error_reason, non_artifact_message
from .graphs import build_graph
from .keys import AOTI_DEVICE_KEY, AOTI_METADATA_KEY, RACE_FREE_KEY, ENERGY, FORCES, FORCES_DIRECT, METADATA_FILE, STRESS
from .metadata import ArtifactError, check_metadata, from_onnx_props
from .structures import atoms_to_arrays, stack_structures
from .validate import check_structure

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# ONNX Runtime session log severity (0 verbose .. 4 fatal): failures reach
# the user as exceptions, not as the runtime's own stderr log.
ORT_LOG_FATAL_ONLY = 4
# First line of a TorchScript interpreter error, whose last line names the cause.
TORCHSCRIPT_TRACEBACK = "The following operation failed in the TorchScript interpreter"
# Intra-op threads for ONNX artifacts without race-free aggregation.
SAFE_ONNX_CPU_THREADS = 1
# ONNX Runtime prefixes its messages with "[ONNXRuntimeError] : <status code> : ".
ORT_ERROR_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : ")
# ONNX Runtime's status for bytes that do not parse as an ONNX protobuf (the
# file kind was sniffed as ONNX, so the file is truncated or damaged).
ORT_INVALID_PROTOBUF = "INVALID_PROTOBUF"
# Characters of an inference failure's reason kept in an InferenceError.
INFERENCE_REASON_CHARACTERS = 300


def _device(device: str) -> torch.device:
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but torch sees no CUDA device")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:k]', got '{device}'")
    return resolved


class InferenceError(RuntimeError):
    """The artifact's runtime (ONNX Runtime, an AOTInductor package, TorchScript) failed on an input."""


class DeployedModel:
    """Common interface; subclasses implement ``_run`` on stacked tensors."""

    path: str
    metadata: Dict[str, Any]
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.metadata["dtype"]]

    @property
    def forces_mode(self) -> str:
        return self.metadata["forces"]

    @property
    def has_stress(self) -> bool:
        return STRESS in self.metadata["outputs"]

    def _tensors(self, stacked: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
        return {
            "positions": torch.as_tensor(stacked["positions"], dtype=self.dtype, device=self.device),
            "atomic_numbers": torch.as_tensor(stacked["atomic_numbers"], dtype=torch.long, device=self.device),
            "cell": torch.as_tensor(stacked["cell"], dtype=self.dtype, device=self.device),
            "pbc": torch.as_tensor(stacked["pbc"], dtype=torch.bool, device=self.device),
            "tags": torch.as_tensor(stacked["tags"], dtype=torch.long, device=self.device),
            "natoms": torch.as_tensor(stacked["natoms"], dtype=torch.long, device=self.device),
        }

    def _check(self, structure: Dict[str, np.ndarray], index: int) -> None:
        try:
            check_structure(
                torch.as_tensor(structure["positions"]),
                torch.as_tensor(structure["atomic_numbers"]),
                torch.as_tensor(structure["cell"]),
                torch.as_tensor(structure["pbc"]),
                torch.as_tensor(structure["tags"]),
                int(self.metadata["min_atomic_number"]),
                int(self.metadata["max_atomic_number"]),
            )
        except ValueError as error:
            prefix = f"structure {index}: " if index >= 0 else ""
            raise ValueError(prefix + str(error)) from None

    def _run(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def _split(self, outputs: Dict[str, torch.Tensor], structures: List[Dict[str, np.ndarray]]) -> List[Dict[str, Any]]:
        energy = outputs[ENERGY].detach().to("cpu", torch.float64).numpy()
        forces = outputs[FORCES].detach().to("cpu", torch.float64).numpy()
        stress = outputs[STRESS].detach().to("cpu", torch.float64).numpy() if STRESS in outputs else None
        results = []
        first = 0
        for b, structure in enumerate(structures):
            n = len(structure["atomic_numbers"])
            result: Dict[str, Any] = {"energy": float(energy[b]), "forces": forces[first : first + n].copy()}
            if stress is not None and bool(np.all(structure["pbc"])):
                result["stress"] = stress[b].copy()
            results.append(result)
            first += n
        return results

    def predict(self, atoms: Atoms) -> Dict[str, Any]:
        """Energy (eV), forces (N,3) eV/A [and stress (3,3) eV/A^3] of one structure."""
        structure = atoms_to_arrays(atoms)
        self._check(structure, -1)
        outputs = self._run_checked(stack_structures([structure]), f"the structure ({_describe(structure)})")
        return self._split(outputs, [structure])[0]

    def predict_many(self, atoms_list: List[Atoms], batch_size: int = 16) -> List[Dict[str, Any]]:
        """``predict`` for many structures, ``batch_size`` structures per model call."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        structures = [atoms_to_arrays(atoms) for atoms in atoms_list]
        for index, structure in enumerate(structures):
            self._check(structure, index)
        results: List[Dict[str, Any]] = []
        for start in range(0, len(structures), batch_size):
            chunk = structures[start : start + batch_size]
            what = f"structures {start}-{start + len(chunk) - 1} ({'; '.join(_describe(s) for s in chunk)})"
            results.extend(self._split(self._run_checked(stack_structures(chunk), what), chunk))
        return results

    def _run_checked(self, stacked: Dict[str, np.ndarray], what: str) -> Dict[str, torch.Tensor]:
        """``_run``, with a failure inside the artifact's runtime turned into one ``InferenceError`` line."""
        try:
            return self._run(self._tensors(stacked))
        except (ValueError, InferenceError):
            raise
        except Exception as error:  # noqa: BLE001 - ONNX Runtime, AOTInductor and TorchScript raise their own types
            raise InferenceError(f"{self.path}: the artifact failed on {what}: {_first_line(error)}") from None


def _describe(structure: Dict[str, np.ndarray]) -> str:
    """``"21 atoms, pbc TTF"``: how an error message names a structure."""
    pbc = "".join("T" if flag else "F" for flag in np.asarray(structure["pbc"]).reshape(-1))
    return f"{len(structure['atomic_numbers'])} atoms, pbc {pbc}"


def _first_line(error: BaseException) -> str:
    """The line of an error's text that says what went wrong (TorchScript puts it last, after its traceback)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = lines[-1] if lines[0].startswith(TORCHSCRIPT_TRACEBACK) else lines[0]
    return error_reason(RuntimeError(line), INFERENCE_REASON_CHARACTERS)


def _load_failure(path: str, error: BaseException, failure: str) -> ArtifactError:
    """The error for a file a backend's loader refused.

    What the file is when it is not an artifact of that suffix (a model
    class can be built directly, without ``load_model``'s check), else
    ``failure``, a sentence with ``{reason}`` for the loader's own words.
    """
    refusal = non_artifact_message(path) if Path(path).is_file() else None
    if refusal is not None:
        return ArtifactError(refusal)
    return ArtifactError(failure.format(path=path, reason=error_reason(error)))


class TorchScriptModel(DeployedModel):
    """A TorchScript artifact (``.pt``) run with ``torch.jit.load``."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        self.path = path
        self.device = _device(device)
        extra = {METADATA_FILE: ""}
        try:
            self.module = torch.jit.load(path, map_location=self.device, _extra_files=extra)
        except RuntimeError as error:
            raise _load_failure(
                path, error, "{path}: torch.jit.load cannot read this TorchScript archive ({reason}); export it again with the installed torch"
            ) from None
        if not extra[METADATA_FILE]:
            raise ArtifactError(f"{path}: TorchScript file has no {METADATA_FILE}; not exported by ocp-deploy")
        self.metadata = check_metadata(json.loads(extra[METADATA_FILE]), path)
        self.module.eval()

    def _run(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        arguments = (
            tensors["positions"],
            tensors["atomic_numbers"],
            tensors["cell"],
            tensors["pbc"],
            tensors["tags"],
            tensors["natoms"],
        )
        if self.forces_mode == FORCES_DIRECT:
            with torch.no_grad():
                return self.module.forward_batch(*arguments)
        return self.module.forward_batch(*arguments)


class PreparedGraphModel(DeployedModel):
    """A model that takes prepared graph tensors; ``self.graph`` (the scriptable graph module) makes them."""

    graph: torch.nn.Module

    def _feeds(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Structure inputs plus the prepared graph, by input name, on ``self.device``."""
        with torch.no_grad():
            positions = tensors["positions"]
            batch = torch.repeat_interleave(torch.arange(tensors["natoms"].shape[0], device=self.device), tensors["natoms"])
            graph = self.graph(positions, tensors["cell"], tensors["pbc"], tensors["natoms"], tensors["tags"])
        feeds = {
            "positions": positions,
            "cell": tensors["cell"],
            "atomic_numbers": tensors["atomic_numbers"],
            "batch": batch,
            **graph,
        }
        return feeds

    def _checked(self, feeds: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Feeds in ``input_names`` order, contiguous, checked against the artifact's size contract when it has one."""
        if INPUT_SHAPES_KEY in self.metadata:
            check_feeds(feeds, self.metadata[INPUT_SHAPES_KEY])
        return {name: feeds[name].contiguous() for name in self.input_names}


class OnnxModel(PreparedGraphModel):
    """An ONNX artifact run with ONNX Runtime (CPU or CUDA provider) and IO binding."""

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None) -> None:
        import onnxruntime

        self.path = path
        self.device = _device(device)
        options = onnxruntime.SessionOptions()
        # The CPU arena (ONNX Runtime's default, power-of-two extension) keeps
        # the freed intermediates, so a call reuses them instead of the kernel
        # page-faulting fresh ones in; its memory pattern (one planned block
        # per input shape, allocated beside what the arena already holds) is
        # off: it raised peak memory well above the arena's without making
        # calls faster, and sizes that change from call to call only grow the
        # arena a little before it stays (measurements: README, Memory).
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = False
        # ONNX Runtime logs a failing node over several lines on stderr before
        # raising; the raised text is kept (``InferenceError``), the log is not.
        options.log_severity_level = ORT_LOG_FATAL_ONLY
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise RuntimeError("device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider")
            providers: List[Any] = [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=providers)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
            reason = ORT_ERROR_PREFIX.sub("", str(error).strip())
            failure = (
                "{path} is an ONNX model that ONNX Runtime cannot parse ({reason}): the file is truncated or damaged; copy or export it again"
                if ORT_INVALID_PROTOBUF in reason
                else "{path}: ONNX Runtime cannot load this ONNX model ({reason}); export it again with this version of ocp-deploy"
            )
            raise _load_failure(path, RuntimeError(reason), failure) from None
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        if not props:
            raise ArtifactError(f"{path}: ONNX model has no metadata_props; not exported by ocp-deploy")
        self.metadata = check_metadata(from_onnx_props(props), path)
        if self._adapt_options(options, threads):
            self.session = onnxruntime.InferenceSession(path, options, providers=providers)
        self.graph = build_graph(self.metadata["model_kind"], self.metadata["graph"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _adapt_options(self, options: Any, threads: Optional[int]) -> bool:
        """Session options this artifact needs beyond the defaults; True if any changed.

        * no ``race_free_aggregation`` flag (an older export whose ScatterND
          add races with more than one CPU thread): pinned to one thread;
        * float64: graph optimisations up to ``ORT_ENABLE_BASIC`` only; the
          extended fusions compute parts of the captured backward in float32
          (measured: forces off by 4e-8 relative instead of 1e-15).
        """
        import onnxruntime

        changed = False
        if self.device.type == "cpu" and not self.metadata.get(RACE_FREE_KEY, False):
            if threads is not None and threads > SAFE_ONNX_CPU_THREADS:
                raise ValueError(f"{self.path}: threads={threads} needs an artifact with race-free aggregation; re-export it")
            options.intra_op_num_threads = SAFE_ONNX_CPU_THREADS
            changed = True
        if self.metadata["dtype"] == "float64":
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
            changed = True
        return changed

    def _run(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self._run_bound(self._checked(self._feeds(tensors)))

    def _run_bound(self, feeds: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Run with IO binding: inputs are read from, outputs left on, the tensors' device."""
        binding = self.session.io_binding()
        device_type = self.device.type
        device_id = self.device.index or 0
        for name, tensor in feeds.items():
            binding.bind_input(
                name, device_type, device_id, _NUMPY_TYPES[tensor.dtype], list(tensor.shape), tensor.data_ptr()
            )
        for name in self.output_names:
            binding.bind_output(name, device_type, device_id)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return {
            name: torch.from_dlpack(value.to_dlpack()) if device_type == "cuda" else torch.from_numpy(value.numpy())
            for name, value in zip(self.output_names, outputs)
        }


class AotiModel(PreparedGraphModel):
    """An AOTInductor package (``.pt2``) run with ``torch._inductor.aoti_load_package``.

    The package runs only on the device type it was compiled for
    (metadata ``compiled_for``); the OpenMP thread count is read when it
    runs (``threads`` sets torch's, which the package's kernels use).
    """

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None) -> None:
        self.path = path
        self.device = _device(device)
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        from torch._inductor import aoti_load_package  # slow to import: only when a package is loaded

        try:
            package = aoti_load_package(path, device_index=self.device.index if self.device.index is not None else -1)
            raw = package.get_metadata()
        except Exception as error:  # noqa: BLE001 - the loader raises RuntimeError and others
            raise _load_failure(
                path, error, "{path}: not a loadable AOTInductor package ({reason}); export it again with the installed torch"
            ) from None
        if AOTI_METADATA_KEY not in raw:
            raise ArtifactError(f"{path}: AOTInductor package has no {AOTI_METADATA_KEY}; not exported by ocp-deploy")
        self.metadata = check_metadata(json.loads(raw[AOTI_METADATA_KEY]), path)
        compiled_for = self.metadata.get(AOTI_DEVICE_KEY)
        if compiled_for != self.device.type:
            raise ArtifactError(
                f"{path}: this package was compiled for {compiled_for}, not {self.device.type}; "
                f"re-export it with --format aoti --device {self.device.type}"
            )
        self.package = package
        self.graph = build_graph(self.metadata["model_kind"], self.metadata["graph"])
        self.input_names = list(self.metadata["inputs"])
        self.output_names = list(self.metadata["outputs"])

    def _run(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self._run_package(self._checked(self._feeds(tensors)))

    def _run_package(self, feeds: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The compiled model on the feeds (in ``input_names`` order); outputs by name."""
        with torch.no_grad():
            outputs = self.package(*feeds.values())
        return dict(zip(self.output_names, outputs))


_NUMPY_TYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64, torch.bool: np.bool_}


def load_model(path: str, device: str = "cpu", threads: Optional[int] = None) -> DeployedModel:
    """Load a ``.pt`` (TorchScript), ``.onnx`` or ``.pt2`` (AOTInductor) artifact.

    A file that is not an artifact (a trainer checkpoint, a text file, a
    truncated archive, an artifact whose suffix is not its kind's) is
    refused with one ``ArtifactError`` line before any loader runs.

    It also applies, once per process, the glibc malloc setting that
    ``OCPDEPLOY_KEEP_FREED_MEMORY`` selects (``allocator.tune_malloc``;
    unset: freed blocks below 32 MB are reused rather than page-faulted in
    again, 1: every block below 2 GB, 0: malloc left alone).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"artifact not found: {path}")
    refusal = non_artifact_message(str(path))
    if refusal is not None:
        raise ArtifactError(refusal)
    tune_malloc()
    if file.suffix == ".onnx":
        return OnnxModel(str(file), device=device, threads=threads)
    if file.suffix == ".pt":
        return TorchScriptModel(str(file), device=device)
    if file.suffix == ".pt2":
        return AotiModel(str(file), device=device, threads=threads)
    raise ArtifactError(f"{path}: unknown artifact type '{file.suffix}' (expected .pt, .onnx or .pt2)")
