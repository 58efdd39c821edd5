"""Read OCP/fairchem trainer checkpoints and load them into the rewrites.

Trainer format (``OCPTrainer.save``): a dict with ``state_dict`` (keys with
any number of leading ``module.``), ``config`` (``config["model"]`` is the
registry name and ``config["model_attributes"]`` the constructor kwargs; the
older form has ``config["model"] = {"name": ..., **kwargs}``), ``scale_dict``
(``{scale factor name: value}``), ``normalizers`` (``target`` -> energy,
``grad_target`` -> forces, each ``mean`` and ``std``/``rmsd``), plus trainer
keys that inference ignores (``optimizer``, ``ema``, ...).

Loading never executes pickled code: ``torch.load(weights_only=True)``.
"""

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import nn

from .models import REWRITES
from .models.layers import ScaleFactor

MODULE_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint that cannot be exported; the message is one line."""


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


def read_checkpoint(path: str) -> Checkpoint:
    """Read a trainer checkpoint (no model is built yet)."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: refused to unpickle (torch.load weights_only=True): it needs arbitrary Python objects "
            f"({first_line[:160]}); re-save it with plain tensors/dicts"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
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
