"""ocp-deploy runtime: artifact loading, inference, ASE calculator.

Never imports the exporter: artifacts are self-describing. Importing this
package, loading an ONNX artifact and running it need numpy, ase and
onnxruntime only; torch is imported when a TorchScript (``.pt``) or
AOTInductor (``.pt2``) artifact is loaded, or when ``TorchScriptModel`` or
``AotiModel`` is first named.
"""

from .threads import passive_openmp_wait; passive_openmp_wait()  # noqa: E702  (first: torch's OpenMP reads it when loaded)
from typing import Any

from . import model
from .calculator import DeployedCalculator
from .metadata import ArtifactError
from .model import DeployedModel, InferenceError, OnnxModel, load_model

__all__ = ["AotiModel", "ArtifactError", "DeployedCalculator", "DeployedModel", "InferenceError", "OnnxModel", "TorchScriptModel", "load_model"]


def __getattr__(name: str) -> Any:
    """``TorchScriptModel`` and ``AotiModel`` (``model.TORCH_CLASSES``), imported with torch when first named."""
    if name in model.TORCH_CLASSES:
        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
