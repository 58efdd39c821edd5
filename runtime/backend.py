"""What every backend shares, on numpy arrays and without torch: ``DeployedModel``.

A backend (``onnx_backend.OnnxModel``, ``torch_backends.TorchScriptModel``
and ``AotiModel``) implements ``_run``: stacked structure arrays in,
outputs out, both numpy. This module does the rest:

* structures from ``ase.Atoms`` (``structures.atoms_to_arrays``), checked
  one by one (``checks.check_structure``, one ``ValueError`` line, prefixed
  with ``structure k:`` in a batch);
* batching (``predict_many``: ``batch_size`` structures per call, stacked
  as positions (N,3), atomic_numbers (N,), cell (B,3,3), pbc (B,3),
  tags (N,), natoms (B,)), cast to the artifact's dtype;
* splitting the batched outputs (energy (B,), forces (N,3), stress
  (B,3,3)) back into one float64 result per structure;
* a failure inside the artifact's runtime turned into one
  ``InferenceError`` line naming the artifact and the structures.

``ProgramModel`` adds what ONNX and AOTInductor artifacts share: their
program takes the structure arrays alone, checked against the size
contract the artifact records (``contract.check_feeds``).
"""

from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Protocol

import numpy as np
from ase import Atoms

from .checks import check_structure
from .contract import INPUT_SHAPES_KEY, check_feeds
from .filekind import error_reason, non_artifact_message
from .keys import ATOMIC_NUMBERS, CELL, ENERGY, FORCES, NATOMS, PBC, POSITIONS, STRESS, TAGS
from .metadata import ArtifactError
from .structures import atoms_to_arrays, stack_structures

# numpy dtype of the floating inputs and outputs, by metadata "dtype".
DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
# First line of a TorchScript interpreter error, whose last line names the cause.
TORCHSCRIPT_TRACEBACK = "The following operation failed in the TorchScript interpreter"
# Characters of an inference failure's reason kept in an InferenceError.
INFERENCE_REASON_CHARACTERS = 300
# Device types a model runs on; "cuda" takes an optional ":k" index.
DEVICE_TYPES = ("cpu", "cuda")


class InferenceError(RuntimeError):
    """The artifact's runtime (ONNX Runtime, an AOTInductor package, TorchScript) failed on an input."""


class Device(NamedTuple):
    """A device as ``load_model`` takes it: ``"cpu"``, ``"cuda"`` or ``"cuda:k"`` (``index`` None: the current one)."""

    type: str
    index: Optional[int] = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


class DeviceLike(Protocol):
    """What the backends read of a device: ``Device``, or ``torch.device`` in the torch backends."""

    @property
    def type(self) -> str: ...

    @property
    def index(self) -> Optional[int]: ...


def parse_device(device: Any) -> Device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` (or a ``torch.device``) -> ``Device``; anything else is a ``ValueError``."""
    text = str(device)
    kind, _, index = text.partition(":")
    if kind not in DEVICE_TYPES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"device must be 'cpu' or 'cuda[:k]', got '{text}'")
    return Device(kind, int(index) if index else None)


class DeployedModel:
    """Common interface; subclasses implement ``_run`` on stacked numpy arrays."""

    path: str
    metadata: Dict[str, Any]
    device: DeviceLike

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the artifact's floating inputs and outputs."""
        return DTYPES[self.metadata["dtype"]]

    @property
    def forces_mode(self) -> str:
        return self.metadata["forces"]

    @property
    def has_stress(self) -> bool:
        return STRESS in self.metadata["outputs"]

    def _arrays(self, stacked: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Stacked structures as the artifact takes them: floats in its dtype, int64 indices, bool pbc; contiguous."""
        floating, integer = self.dtype, np.dtype(np.int64)
        types = {POSITIONS: floating, ATOMIC_NUMBERS: integer, CELL: floating, PBC: np.dtype(bool), TAGS: integer, NATOMS: integer}
        return {name: np.ascontiguousarray(stacked[name], dtype=dtype) for name, dtype in types.items()}

    def _check(self, structure: Dict[str, np.ndarray], index: int) -> None:
        try:
            check_structure(
                structure[POSITIONS],
                structure[ATOMIC_NUMBERS],
                structure[CELL],
                structure[PBC],
                structure[TAGS],
                int(self.metadata["min_atomic_number"]),
                int(self.metadata["max_atomic_number"]),
            )
        except ValueError as error:
            prefix = f"structure {index}: " if index >= 0 else ""
            raise ValueError(prefix + str(error)) from None

    def _run(self, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Outputs (energy (B,), forces (N,3) [, stress (B,3,3)]) of one batch (``_arrays``), as numpy on the host."""
        raise NotImplementedError

    def _split(self, outputs: Dict[str, np.ndarray], structures: List[Dict[str, np.ndarray]]) -> List[Dict[str, Any]]:
        energy = np.asarray(outputs[ENERGY], dtype=np.float64)
        forces = np.asarray(outputs[FORCES], dtype=np.float64)
        stress = np.asarray(outputs[STRESS], dtype=np.float64) if STRESS in outputs else None
        results = []
        first = 0
        for b, structure in enumerate(structures):
            n = len(structure[ATOMIC_NUMBERS])
            result: Dict[str, Any] = {"energy": float(energy[b]), "forces": forces[first : first + n].copy()}
            if stress is not None and bool(np.all(structure[PBC])):
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

    def _run_checked(self, stacked: Dict[str, np.ndarray], what: str) -> Dict[str, np.ndarray]:
        """``_run``, with a failure inside the artifact's runtime turned into one ``InferenceError`` line."""
        try:
            return self._run(self._arrays(stacked))
        except (ValueError, InferenceError):
            raise
        except Exception as error:  # noqa: BLE001 - ONNX Runtime, AOTInductor and TorchScript raise their own types
            raise InferenceError(f"{self.path}: the artifact failed on {what}: {_first_line(error)}") from None


class ProgramModel(DeployedModel):
    """An artifact whose program takes the structures alone (ONNX, AOTInductor) and builds its graph inside."""

    input_names: List[str]

    def _feeds(self, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The program's inputs by name: the stacked structure arrays (``_arrays``)."""
        return dict(arrays)

    def _checked(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Feeds in ``input_names`` order, contiguous, checked against the artifact's size contract.

        An AOTInductor package reads its inputs without checking their
        shapes: a disagreeing count is refused here, naming the input.
        """
        check_feeds(feeds, self.metadata[INPUT_SHAPES_KEY])
        return {name: np.ascontiguousarray(feeds[name]) for name in self.input_names}


def _describe(structure: Dict[str, np.ndarray]) -> str:
    """``"21 atoms, pbc TTF"``: how an error message names a structure."""
    pbc = "".join("T" if flag else "F" for flag in np.asarray(structure[PBC]).reshape(-1))
    return f"{len(structure[ATOMIC_NUMBERS])} atoms, pbc {pbc}"


def _first_line(error: BaseException) -> str:
    """The line of an error's text that says what went wrong (TorchScript puts it last, after its traceback)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = lines[-1] if lines[0].startswith(TORCHSCRIPT_TRACEBACK) else lines[0]
    return error_reason(RuntimeError(line), INFERENCE_REASON_CHARACTERS)


def load_failure(path: str, error: BaseException, failure: str) -> ArtifactError:
    """The error for a file a backend's loader refused.

    What the file is when it is not an artifact of that suffix (a model
    class can be built directly, without ``load_model``'s check), else
    ``failure``, a sentence with ``{reason}`` for the loader's own words.
    """
    refusal = non_artifact_message(path) if Path(path).is_file() else None
    if refusal is not None:
        return ArtifactError(refusal)
    return ArtifactError(failure.format(path=path, reason=error_reason(error)))


def check_threads(threads: Optional[int]) -> None:
    """Refuse a thread count below one."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
