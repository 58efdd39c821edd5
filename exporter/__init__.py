"""ocp-deploy exporter: checkpoint loading, scriptable rewrites, TorchScript/ONNX writers, verification.

Needs torch and the ``export`` extra. Its names are imported when first
used, so that ``export-model`` (``cli``) can say what to install where
they are missing instead of failing on import.
"""

import importlib
from typing import Any

# Public name -> the submodule that defines it.
_EXPORTS = {
    "CheckpointError": "checkpoint",
    "load_rewrite": "checkpoint",
    "read_checkpoint": "checkpoint",
    "ExportResult": "export",
    "VerificationError": "export",
    "export_checkpoint": "export",
}

__all__ = ["CheckpointError", "ExportResult", "VerificationError", "export_checkpoint", "load_rewrite", "read_checkpoint"]


def __getattr__(name: str) -> Any:
    """The public names, each imported from its submodule when first used."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
