"""ocp-deploy exporter: checkpoint loading, scriptable rewrites, TorchScript/ONNX writers, verification."""

from .checkpoint import CheckpointError, load_rewrite, read_checkpoint
from .export import ExportResult, VerificationError, export_checkpoint

__all__ = ["CheckpointError", "ExportResult", "VerificationError", "export_checkpoint", "load_rewrite", "read_checkpoint"]
