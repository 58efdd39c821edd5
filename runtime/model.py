"""Load an artifact and run it: ``load_model(path, device)``.

Three backends behind one interface (``backend.DeployedModel``):

* ``OnnxModel`` (``onnx_backend``): ONNX Runtime with IO binding, on numpy
  arrays; needs neither torch nor anything else of the export tools.
* ``TorchScriptModel`` (``torch_backends``): ``torch.jit.load``.
* ``AotiModel`` (``torch_backends``): an AOTInductor package (``.pt2``,
  ``torch.export`` compiled ahead of time for one device type).

Every artifact builds its neighbour graph itself from the structures.
torch is imported only when a ``.pt`` or ``.pt2`` is loaded (or one of
their classes is named); where torch cannot be imported, that is one
``TorchUnavailableError`` line.

``predict(atoms)`` returns ``{"energy": float (eV), "forces": (N,3) float64
(eV/A)}`` plus ``"stress"`` (3,3) for conservative artifacts on fully
periodic structures; ``predict_many(list, batch_size)`` batches structures
into one call each ``batch_size`` and returns the same per structure.

Files that are not artifacts are refused before any loader runs, in one
line naming what the file is (``filekind``: a trainer checkpoint gets the
export command, a truncated archive is called damaged); a loader's own
failure is quoted in whole sentences, never cut inside one.
"""

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Optional

from .allocator import tune_malloc
from .backend import DeployedModel, InferenceError, ProgramModel
from .filekind import non_artifact_message
from .metadata import ArtifactError
from .onnx_backend import OnnxModel

__all__ = ["AotiModel", "DeployedModel", "InferenceError", "OnnxModel", "ProgramModel", "TorchScriptModel", "TorchUnavailableError", "load_model"]

# Backends that need torch: their module, class names, and artifact kinds by suffix.
TORCH_BACKENDS_MODULE = "ocpdeploy.runtime.torch_backends"
TORCH_CLASSES = ("TorchScriptModel", "AotiModel")
TORCH_SUFFIXES: Dict[str, str] = {".pt": "TorchScript artifact (.pt)", ".pt2": "AOTInductor package (.pt2)"}
INSTALL_TORCH = 'install torch (pip install "ocp-deploy[export]" brings it), or run an ONNX artifact (export-model --format onnx), which needs only ONNX Runtime'


class TorchUnavailableError(ImportError):
    """A TorchScript or AOTInductor artifact was asked for where torch cannot be imported; the message is one line."""


def _torch_backends(what: str) -> ModuleType:
    """``torch_backends``, imported now; where torch is missing, one ``TorchUnavailableError`` line about ``what``."""
    try:
        return importlib.import_module(TORCH_BACKENDS_MODULE)
    except ImportError as error:
        if not (error.name or "").split(".")[0] == "torch":
            raise
        raise TorchUnavailableError(f"{what} needs torch, which cannot be imported here ({error}); {INSTALL_TORCH}") from None


def __getattr__(name: str) -> Any:
    """``TorchScriptModel`` and ``AotiModel``, imported (with torch) when first named."""
    if name in TORCH_CLASSES:
        return getattr(_torch_backends(name), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_model(path: str, device: str = "cpu", threads: Optional[int] = None) -> DeployedModel:
    """Load a ``.pt`` (TorchScript), ``.onnx`` or ``.pt2`` (AOTInductor) artifact.

    A file that is not an artifact (a trainer checkpoint, a text file, a
    truncated archive, an artifact whose suffix is not its kind's) is
    refused with one ``ArtifactError`` line before any loader runs; a
    ``.pt`` or ``.pt2`` where torch cannot be imported, with one
    ``TorchUnavailableError`` line.

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
    if file.suffix not in (".onnx", *TORCH_SUFFIXES):
        raise ArtifactError(f"{path}: unknown artifact type '{file.suffix}' (expected .pt, .onnx or .pt2)")
    backends = _torch_backends(f"{path}: a {TORCH_SUFFIXES[file.suffix]}") if file.suffix in TORCH_SUFFIXES else None
    tune_malloc()
    if backends is None:
        return OnnxModel(str(file), device=device, threads=threads)
    if file.suffix == ".pt":
        return backends.TorchScriptModel(str(file), device=device)
    return backends.AotiModel(str(file), device=device, threads=threads)
