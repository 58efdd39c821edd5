"""Registry of the scriptable graph-preparation modules, by model kind.

ONNX artifacts contain only the model; the runtime rebuilds the graph module
from the artifact metadata (``metadata["graph"]`` holds its constructor
arguments) and runs it before the session.
"""

from typing import Any, Dict

from torch import nn

MODEL_KINDS = ("painn", "gemnet_oc")


def build_graph(model_kind: str, arguments: Dict[str, Any]) -> nn.Module:
    """The graph module of ``model_kind`` constructed with ``arguments``."""
    if model_kind == "painn":
        from .graph_painn import PaiNNGraph

        return PaiNNGraph(**arguments)
    if model_kind == "gemnet_oc":
        from .graph_gemnet_oc import GemNetOCGraph

        return GemNetOCGraph(**arguments)
    raise ValueError(f"unknown model kind '{model_kind}'; known: {', '.join(MODEL_KINDS)}")
