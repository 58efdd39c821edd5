"""Read OCP/fairchem trainer checkpoints and load them into the rewrites.

Trainer format (``OCPTrainer.save``): a dict with ``state_dict`` (keys with
any number of leading ``module.``), ``config`` (``config["model"]`` is the
registry name and ``config["model_attributes"]`` the constructor kwargs; the
older form has ``config["model"] = {"name": ..., **kwargs}``), ``scale_dict``
(``{scale factor name: value}``), ``normalizers`` (``target`` -> energy,
``grad_target`` -> forces, each ``mean`` and ``std``/``rmsd``), plus trainer
keys that inference ignores (``optimizer``, ``ema``, ...).

Loading never executes pickled code: ``torch.load(weights_only=True)``.
Before that, ``file_kind`` sniffs what the file is from its first bytes and
its zip member names (never unpickling anything), so that a text file, an
artifact made by ``export-model`` or another archive gets a one-line error
naming what it is, instead of torch's message about a file it was never
meant to read.
"""

import hashlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from .models import REWRITES
from .models.layers import ScaleFactor

MODULE_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint that cannot be exported; the message is one line."""


# ---------------------------------------------------------------------------
# What a file is, from cheap signatures (no unpickling, no model loading).
# ---------------------------------------------------------------------------

# File kinds (values are the phrase used in messages: "x.pt is <kind>").
TRAINER_CHECKPOINT = "a trainer checkpoint"
TORCH_SAVE = "a torch.save file without 'state_dict' and 'config' (not a trainer checkpoint)"
LEGACY_TORCH_SAVE = "a torch.save file (legacy format)"
DAMAGED_ZIP = "a damaged zip archive"
TORCHSCRIPT_ARTIFACT = "a TorchScript artifact made by export-model"
TORCHSCRIPT_ARCHIVE = "a TorchScript archive"
AOTI_ARTIFACT = "an AOTInductor package made by export-model"
PT2_ARCHIVE = "a torch.export / AOTInductor package (.pt2)"
ONNX_ARTIFACT = "an ONNX artifact made by export-model"
ONNX_MODEL = "an ONNX model"
OTHER_ZIP = "a zip archive that is neither a torch checkpoint nor an artifact"
TEXT_FILE = "a text file"
EMPTY_FILE = "an empty file"
UNKNOWN_BINARY = "a binary file of unknown type"

CHECKPOINT_KINDS = (TRAINER_CHECKPOINT, TORCH_SAVE, LEGACY_TORCH_SAVE)
# Artifact kinds and the suffix the runtime dispatches on.
ARTIFACT_SUFFIXES = {TORCHSCRIPT_ARTIFACT: ".pt", TORCHSCRIPT_ARCHIVE: ".pt", AOTI_ARTIFACT: ".pt2", PT2_ARCHIVE: ".pt2", ONNX_ARTIFACT: ".onnx", ONNX_MODEL: ".onnx"}
EXPECTED_CHECKPOINT = "pass the trainer checkpoint (the .pt file fairchem's trainer saves, with 'state_dict' and 'config')"

ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (non-zip) format is a pickle stream: it opens with the PROTO opcode.
PICKLE_PROTO_OPCODE = 0x80
SNIFF_BYTES = 4096
# An ONNX ModelProto starts with field 1 (ir_version, varint: tag 0x08), then
# another ModelProto field: producer_name 0x12, producer_version 0x1a,
# domain 0x22, model_version 0x28, doc_string 0x32, graph 0x3a,
# opset_import 0x42, metadata_props 0x72.
ONNX_IR_VERSION_TAG = 0x08
ONNX_MAX_IR_VERSION = 127  # one varint byte
ONNX_NEXT_FIELD_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72})
# Protobuf writes fields in number order, so metadata_props (field 14)
# follows the graph: export-model's record sits at the end of the file.
ONNX_METADATA_TAIL_BYTES = 1 << 20
ARTIFACT_FORMAT_MARKER = b'"ocp-deploy"'  # metadata "format", JSON-encoded
AOTI_METADATA_MARKER = b"ocpdeploy_metadata"
TORCH_PICKLE_MEMBER = "data.pkl"
TORCHSCRIPT_MEMBER = "constants.pkl"
TORCHSCRIPT_METADATA_MEMBER = "extra/metadata.json"
PT2_FORMAT_MEMBER = "archive_format"
PT2_FORMAT = b"pt2"
AOTI_MEMBER_PART = "/data/aotinductor/"
AOTI_METADATA_SUFFIX = "_metadata.json"
TRAINER_KEYS = (b"state_dict", b"config")


def _member_suffix(name: str) -> str:
    """``archive/extra/metadata.json`` -> ``extra/metadata.json`` (torch zips nest everything in one folder)."""
    return name.split("/", 1)[1] if "/" in name else name


def _zip_kind(path: Path) -> str:
    """Kind of a zip archive from its member names (and a few small members)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            members = {_member_suffix(name): name for name in names}
            if PT2_FORMAT_MEMBER in members or any(AOTI_MEMBER_PART in name for name in names):
                return _pt2_kind(archive, names)
            if TORCHSCRIPT_MEMBER in members:
                return TORCHSCRIPT_ARTIFACT if TORCHSCRIPT_METADATA_MEMBER in members else TORCHSCRIPT_ARCHIVE
            if TORCH_PICKLE_MEMBER in members:
                # Key names are plain strings inside the pickle stream; the tensors live in other members.
                pickled = archive.read(members[TORCH_PICKLE_MEMBER])
                return TRAINER_CHECKPOINT if all(key in pickled for key in TRAINER_KEYS) else TORCH_SAVE
    except (zipfile.BadZipFile, OSError, KeyError):
        return DAMAGED_ZIP
    return OTHER_ZIP


def _pt2_kind(archive: zipfile.ZipFile, names: List[str]) -> str:
    """An AOTInductor package carries export-model's record in its wrapper metadata."""
    for name in names:
        if AOTI_MEMBER_PART in name and name.endswith(AOTI_METADATA_SUFFIX) and AOTI_METADATA_MARKER in archive.read(name):
            return AOTI_ARTIFACT
    return PT2_ARCHIVE


def _looks_like_onnx(head: bytes) -> bool:
    return (
        len(head) >= 3
        and head[0] == ONNX_IR_VERSION_TAG
        and 0 < head[1] <= ONNX_MAX_IR_VERSION
        and head[2] in ONNX_NEXT_FIELD_TAGS
    )


def _onnx_kind(path: Path) -> str:
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - ONNX_METADATA_TAIL_BYTES))
        tail = handle.read()
    return ONNX_ARTIFACT if ARTIFACT_FORMAT_MARKER in tail else ONNX_MODEL


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start >= len(head) - 3  # a multi-byte character cut by the sniff window
    return True


def file_kind(path: str) -> str:
    """What ``path`` is (one of the kind constants above), from signatures only.

    Reads the first bytes, zip member names and, for torch zips, the small
    pickle member as bytes (never unpickled); ONNX files are told apart by
    export-model's metadata record near their end.
    """
    file = Path(path)
    with open(file, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head:
        return EMPTY_FILE
    if head.startswith(ZIP_MAGIC):
        return _zip_kind(file)
    if head[0] == PICKLE_PROTO_OPCODE:
        return LEGACY_TORCH_SAVE  # its keys may lie beyond the sniffed bytes: torch.load tells
    if _looks_like_onnx(head):
        return _onnx_kind(file)
    if _is_text(head):
        return TEXT_FILE
    return UNKNOWN_BINARY


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


def read_checkpoint(path: str) -> Checkpoint:
    """Read a trainer checkpoint (no model is built yet)."""
    file = Path(path)
    check_checkpoint_file(path)
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
