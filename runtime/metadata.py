"""The artifact metadata record: one schema for TorchScript and ONNX.

TorchScript artifacts carry it as the extra file ``metadata.json``; ONNX
artifacts as ``metadata_props`` (each top-level key a property, values JSON
encoded). The exporter writes it; the runtime (and the C++ hosts) check it.
"""

import json
from typing import Any, Dict

from .keys import FORMAT_NAME, FORMAT_VERSION, FORCES_MODES

REQUIRED_KEYS = (
    "format",
    "format_version",
    "artifact",
    "model_kind",
    "graph",
    "cutoff",
    "max_neighbors",
    "forces",
    "outputs",
    "dtype",
    "min_atomic_number",
    "max_atomic_number",
    "units",
    "normalizers",
    "exporter_version",
    "torch_version",
    "checkpoint_sha256",
    "inputs",
    "edge_convention",
)


class ArtifactError(ValueError):
    """An artifact that cannot be used; the message names the file and the field."""


def check_metadata(metadata: Dict[str, Any], path: str) -> Dict[str, Any]:
    """Validate a metadata record read from ``path``; returns it unchanged."""
    if metadata.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path}: not an ocp-deploy artifact (metadata 'format' is {metadata.get('format')!r})")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format_version {version!r} is not supported by this runtime "
            f"(supports {FORMAT_VERSION}); re-export it with this version of ocp-deploy"
        )
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ArtifactError(f"{path}: metadata lacks {', '.join(missing)}")
    if metadata["forces"] not in FORCES_MODES:
        raise ArtifactError(f"{path}: metadata 'forces' is {metadata['forces']!r}, expected one of {FORCES_MODES}")
    if metadata["dtype"] not in ("float32", "float64"):
        raise ArtifactError(f"{path}: metadata 'dtype' is {metadata['dtype']!r}, expected float32 or float64")
    return metadata


# Inputs of the self-contained program in ONNX and AOTInductor artifacts
# (``contract.PROGRAM_CONTRACT``), in order.
PROGRAM_INPUTS = ("positions", "atomic_numbers", "cell", "pbc", "tags", "natoms")


def check_program_inputs(metadata: Dict[str, Any], path: str) -> None:
    """Refuse an ONNX or AOTInductor artifact whose program does not take the structures alone.

    Such artifacts were made before the neighbour graph moved inside the
    program: they take prepared graph tensors (``batch``, ``edge_index``,
    ...) that only an older runtime built. One line asks for a re-export.
    """
    inputs = tuple(metadata.get("inputs", ()))
    if inputs != PROGRAM_INPUTS:
        raise ArtifactError(
            f"{path}: this {metadata.get('artifact', 'exported')} artifact takes prepared graph tensors "
            f"({', '.join(inputs[4:7])}, ...), which this runtime no longer builds; export it again from the "
            "checkpoint with this version of ocp-deploy (the new artifact builds its neighbour graph itself)"
        )


def to_onnx_props(metadata: Dict[str, Any]) -> Dict[str, str]:
    """Flatten for ONNX ``metadata_props``: each value JSON-encoded (strings quoted)."""
    return {key: json.dumps(value) for key, value in metadata.items()}


def from_onnx_props(props: Dict[str, str]) -> Dict[str, Any]:
    """Inverse of ``to_onnx_props``."""
    metadata: Dict[str, Any] = {}
    for key, value in props.items():
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:  # a property some other tool added
            metadata[key] = value
    return metadata
