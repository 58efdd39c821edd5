"""Read OCP/fairchem trainer checkpoints and load them into the rewrites.

Trainer format (``OCPTrainer.save``): a dict with ``state_dict`` (keys with
any number of leading ``module.``), ``config`` (``config["model"]`` is the
registry name and ``config["model_attributes"]`` the constructor kwargs; the
older form has ``config["model"] = {"name": ..., **kwargs}``), ``scale_dict``
(``{scale factor name: value}``), ``normalizers`` (``target`` -> energy,
``grad_target`` -> forces, each ``mean`` and ``std``/``rmsd``), plus trainer
keys that inference ignores (``optimizer``, ``ema``, ...).

Loading never executes pickled code: ``torch.load(weights_only=True)``.
Before that, ``file_kind`` (``ocpdeploy.runtime.filekind``) sniffs what the
file is from its first bytes and its zip member names (never unpickling
anything), so that a text file, an artifact made by ``export-model`` or
another archive gets a one-line error naming what it is, instead of torch's
message about a file it was never meant to read.
"""

import hashlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import nn

# The file-kind sniffing lives in the runtime (which never imports the
# exporter); its names are re-exported here for the checkpoint side.
from ocpdeploy.runtime.filekind import (  # noqa: F401 - re-exported kinds
    AOTI_ARTIFACT,
    CHECKPOINT_KINDS,
    DAMAGED_ZIP,
    EMPTY_FILE,
    LEGACY_TORCH_SAVE,
    ONNX_ARTIFACT,
    ONNX_MODEL,
    OTHER_ZIP,
    PT2_ARCHIVE,
    TEXT_FILE,
    TORCH_SAVE,
    TORCHSCRIPT_ARCHIVE,
    TORCHSCRIPT_ARTIFACT,
    TRAINER_CHECKPOINT,
    UNKNOWN_BINARY,
    error_reason,
    file_kind,
)

from .models import REWRITES
from .models.layers import ScaleFactor

MODULE_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint that cannot be exported; the message is one line."""


EXPECTED_CHECKPOINT = "pass the trainer checkpoint (the .pt file fairchem's trainer saves, with 'state_dict' and 'config')"
# torch.load(weights_only=True) names the class a pickle needs as "GLOBAL module.Name".
UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
WEIGHTS_UNPICKLER_LINE = "WeightsUnpickler error: "


def check_checkpoint_file(path: str) -> None:
    """Refuse, in one line, a file that is not a checkpoint, naming what it is."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    kind = file_kind(path)
    if kind not in CHECKPOINT_KINDS:
        raise CheckpointError(f"{path} is {kind}; {EXPECTED_CHECKPOINT}")


@dataclass
class Normalizers:
    """Denormalisation baked into artifacts: ``energy = raw * energy_std + energy_mean``."""

    energy_mean: float = 0.0
    energy_std: float = 1.0
    forces_mean: float = 0.0
    forces_std: float = 1.0


@dataclass
class Checkpoint:
    path: str
    sha256: str
    model_name: str
    model_attributes: dict
    state_dict: Dict[str, torch.Tensor]
    scale_dict: Dict[str, float] = field(default_factory=dict)
    normalizers: Normalizers = field(default_factory=Normalizers)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def strip_module_prefix(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove every leading ``module.`` (DDP/wrapper prefixes)."""
    stripped = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith(MODULE_PREFIX):
            name = name[len(MODULE_PREFIX) :]
        stripped[name] = value
    return stripped


def _scalar(value, what: str) -> float:
    try:
        return float(torch.as_tensor(value).reshape(-1)[0].item())
    except Exception as error:  # noqa: BLE001 - turned into a one-line error
        raise CheckpointError(f"normalizer {what} is not a number: {value!r}") from error


def _read_normalizers(raw: dict, config: dict) -> Normalizers:
    normalizers = Normalizers()
    entries = raw.get("normalizers") or {}
    if not entries:  # newer configs keep them under dataset.transforms.normalizer
        dataset = config.get("dataset") or {}
        if isinstance(dataset, dict):
            entries = (dataset.get("transforms") or {}).get("normalizer") or {}
    for key, values in entries.items():
        if not isinstance(values, dict):
            continue
        spread = values.get("rmsd", values.get("std", values.get("stdev", 1.0)))
        mean = values.get("mean", 0.0)
        if key in ("target", "energy"):
            normalizers.energy_mean = _scalar(mean, f"{key}.mean")
            normalizers.energy_std = _scalar(spread, f"{key}.std")
        elif key in ("grad_target", "forces"):
            normalizers.forces_mean = _scalar(mean, f"{key}.mean")
            normalizers.forces_std = _scalar(spread, f"{key}.std")
    return normalizers


def _what_pickle_needs(error: pickle.UnpicklingError) -> str:
    """``it needs the Python object torch.nn.modules.linear.Linear``: what torch's weights-only unpickler refused.

    torch's message opens with advice to load with ``weights_only=False``
    (which would run the pickled code); only its ``WeightsUnpickler error``
    line says what the file needs.
    """
    text = str(error)
    needed = UNSUPPORTED_GLOBAL.search(text)
    if needed:
        return f"it needs the Python object {needed.group(1)}"
    for line in text.splitlines():
        if WEIGHTS_UNPICKLER_LINE in line:
            return f"it needs Python objects beyond tensors and plain data ({error_reason(ValueError(line.split(WEIGHTS_UNPICKLER_LINE, 1)[1]))})"
    return f"it needs Python objects beyond tensors and plain data ({error_reason(error)})"


def read_checkpoint(path: str) -> Checkpoint:
    """Read a trainer checkpoint (no model is built yet)."""
    file = Path(path)
    check_checkpoint_file(path)
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to unpickle: {_what_pickle_needs(error)}, and torch.load(weights_only=True) runs no pickled code; "
            "re-save the checkpoint with plain tensors, numbers, strings, lists and dicts"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error_reason(error)})") from None
    if not isinstance(raw, dict) or "state_dict" not in raw or "config" not in raw:
        keys = sorted(raw)[:8] if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{path}: not an OCP trainer checkpoint (expected keys 'state_dict' and 'config', found {keys})")
    config = raw["config"]
    model = config.get("model")
    if isinstance(model, dict):  # older form: {"name": ..., **kwargs}
        name = model.get("name")
        attributes = {k: v for k, v in model.items() if k != "name"}
    else:
        name = model
        attributes = dict(config.get("model_attributes") or {})
    if not isinstance(name, str):
        raise CheckpointError(f"{path}: config['model'] has no model name (found {model!r})")
    if name not in REWRITES:
        raise CheckpointError(f"{path}: unknown model '{name}'; supported: {', '.join(sorted(REWRITES))}")
    elementrefs = raw.get("elementrefs") or {}
    if elementrefs:
        raise CheckpointError(f"{path}: element references ({sorted(elementrefs)}) are not supported yet")
    scale_dict = {str(k): _scalar(v, f"scale_dict[{k}]") for k, v in (raw.get("scale_dict") or {}).items()}
    return Checkpoint(
        path=str(file),
        sha256=file_sha256(str(file)),
        model_name=name,
        model_attributes=attributes,
        state_dict=strip_module_prefix(raw["state_dict"]),
        scale_dict=scale_dict,
        normalizers=_read_normalizers(raw, config),
    )


def _apply_scale_dict(core: nn.Module, state_dict: Dict[str, torch.Tensor], scale_dict: Dict[str, float], path: str) -> None:
    """Put scale_dict values into the ``*.scale_factor`` entries (0 means unfitted: 1.0)."""
    scale_modules = {name: module for name, module in core.named_modules() if isinstance(module, ScaleFactor)}
    seen = set()
    for module_path, module in scale_modules.items():
        key = f"{module_path}.scale_factor"
        if key in seen:
            continue
        seen.add(key)
        name = module.name or module_path
        if scale_dict:
            if name not in scale_dict:
                raise CheckpointError(f"{path}: scale_dict has no entry for scale factor '{name}'")
            value = scale_dict[name]
        elif key in state_dict:
            value = float(state_dict[key].reshape(-1)[0])
        else:
            raise CheckpointError(f"{path}: scale factor '{name}' missing (no scale_dict and no '{key}' in state_dict)")
        state_dict[key] = torch.tensor(value if value != 0.0 else 1.0, dtype=torch.float32)


def build_rewrite(checkpoint: Checkpoint) -> Tuple[nn.Module, nn.Module]:
    """Build the rewrite named by the checkpoint and load its weights (eval mode)."""
    try:
        core, graph = REWRITES[checkpoint.model_name](checkpoint.model_attributes)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{checkpoint.path}: {checkpoint.model_name}: {error}") from None
    state_dict = dict(checkpoint.state_dict)
    _apply_scale_dict(core, state_dict, checkpoint.scale_dict, checkpoint.path)
    expected = core.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        raise CheckpointError(f"{checkpoint.path}: missing weights for {checkpoint.model_name}: {', '.join(missing[:5])}" + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    if unexpected:
        raise CheckpointError(f"{checkpoint.path}: unexpected weights for {checkpoint.model_name}: {', '.join(unexpected[:5])}" + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
    for key, value in expected.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{checkpoint.path}: weight '{key}' has shape {tuple(state_dict[key].shape)}, "
                f"the model_attributes imply {tuple(value.shape)}"
            )
    core.load_state_dict(state_dict, strict=True)
    core.eval()
    graph.eval()
    return core, graph


def load_rewrite(path: str) -> Tuple[nn.Module, nn.Module, Checkpoint]:
    """``read_checkpoint`` + ``build_rewrite``."""
    checkpoint = read_checkpoint(path)
    core, graph = build_rewrite(checkpoint)
    return core, graph, checkpoint
