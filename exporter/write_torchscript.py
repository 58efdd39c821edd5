"""Write a TorchScript artifact (``.pt``): scripted ``DeployedModel`` + ``metadata.json``."""

import json
import warnings
from typing import Any, Dict

import torch

from ocpdeploy.runtime.keys import METADATA_FILE

from .deployed import DeployedModel

TORCHSCRIPT_SUFFIX = ".pt"


def script_quietly(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` without its deprecation warning (TorchScript is what C++ hosts load)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        return torch.jit.script(module)


def write_torchscript(deployed: DeployedModel, metadata: Dict[str, Any], path: str) -> str:
    """Script ``deployed`` and save it with the metadata as an extra file; returns the path."""
    if not path.endswith(TORCHSCRIPT_SUFFIX):
        raise ValueError(f"TorchScript artifacts end in '{TORCHSCRIPT_SUFFIX}', got '{path}'")
    scripted = script_quietly(deployed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.save(scripted, path, _extra_files={METADATA_FILE: json.dumps(metadata, indent=1)})
    return path
