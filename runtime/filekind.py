"""What a file is, from cheap signatures, and the one-line message for a file that is not an artifact.

``file_kind(path)`` reads the first bytes, zip member names and, for torch
zips, the small pickle member as bytes (never unpickled); ONNX files are
told apart by export-model's metadata record near their end. No model is
loaded and neither torch nor ONNX Runtime is imported, so the runtime can
name a trainer checkpoint, a text file or a truncated download before
handing the file to a loader whose own error would be about internals.
The exporter uses the same sniffing for its checkpoint argument.

``non_artifact_message(path)`` is the line both ``load_model`` and
``export-model info|bench`` give for a file that is not an artifact, or
whose suffix does not match its kind (the runtime picks the loader by
suffix).
"""

import re
import zipfile
from pathlib import Path
from typing import List, Optional

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
ARTIFACT_SUFFIXES = {
    TORCHSCRIPT_ARTIFACT: ".pt",
    TORCHSCRIPT_ARCHIVE: ".pt",
    AOTI_ARTIFACT: ".pt2",
    PT2_ARCHIVE: ".pt2",
    ONNX_ARTIFACT: ".onnx",
    ONNX_MODEL: ".onnx",
}
# What a file with an artifact suffix was expected to be, for "x.pt2 is a text file, not ...".
SUFFIX_EXPECTED = {
    ".pt": "a loadable TorchScript artifact",
    ".onnx": "a loadable ONNX artifact",
    ".pt2": "a loadable AOTInductor package",
}
ARTIFACT_HINT = "pass an artifact made by export-model (.pt, .onnx or .pt2)"
EXPORT_PROGRAM = "export-model"
EXPORT_SUFFIX = "_ts.pt"  # the output name suggested for the export command: painn.pt -> painn_ts.pt

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
AOTI_MEMBER_PART = "/data/aotinductor/"
AOTI_METADATA_SUFFIX = "_metadata.json"
TRAINER_KEYS = (b"state_dict", b"config")

# Another library's error text quoted in a message: at most this many
# characters, shortened at a sentence end, never inside a sentence.
REASON_CHARACTERS = 240
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # torch marks parts of its messages bold


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
    """What ``path`` (an existing file) is: one of the kind constants above, from signatures only.

    A truncated ONNX artifact loses its metadata record at the end and reads
    as ``ONNX_MODEL``; a truncated zip (TorchScript, ``.pt2``, torch.save)
    loses its central directory and reads as ``DAMAGED_ZIP``.
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


def export_command(checkpoint: str) -> str:
    """``export-model painn.pt --format torchscript -o painn_ts.pt``: how to make an artifact of ``checkpoint``."""
    return f"{EXPORT_PROGRAM} {checkpoint} --format torchscript -o {Path(checkpoint).stem}{EXPORT_SUFFIX}"


def non_artifact_message(path: str) -> Optional[str]:
    """The one-line refusal of an existing file that is not an artifact, or None for an artifact with its suffix.

    It names what the file is and what to do: export a trainer checkpoint
    first, rename an artifact to the suffix of its kind, copy or export a
    damaged archive again, or pass an artifact.
    """
    file = Path(path)
    kind = file_kind(path)
    if kind in ARTIFACT_SUFFIXES:
        expected = ARTIFACT_SUFFIXES[kind]
        if file.suffix == expected:
            return None
        return f"{path} is {kind} but ends in '{file.suffix}'; artifacts are loaded by suffix: rename it to {file.stem}{expected}"
    if kind == TRAINER_CHECKPOINT:
        return f"{path} is a trainer checkpoint, not an artifact; export it first ({export_command(path)}) and pass the artifact"
    if kind == LEGACY_TORCH_SAVE:
        # Its keys are not sniffed (they may lie beyond the first bytes): it may be a trainer checkpoint.
        return f"{path} is {kind}, not an artifact; if it is a trainer checkpoint, export it first ({export_command(path)}) and pass the artifact"
    if kind == DAMAGED_ZIP:
        return f"{path} is {kind}: its zip directory is missing or unreadable, as in a truncated or partly copied file; copy or export it again"
    if file.suffix in SUFFIX_EXPECTED and kind != TORCH_SAVE:  # that kind's phrase already says what it is not
        return f"{path} is {kind}, not {SUFFIX_EXPECTED[file.suffix]}; {ARTIFACT_HINT}"
    return f"{path} is {kind}; {ARTIFACT_HINT}"


def error_reason(error: BaseException, limit: int = REASON_CHARACTERS) -> str:
    """The first line of another library's error, in whole sentences, for quoting inside a message.

    Terminal colour codes are dropped; a first line longer than ``limit``
    keeps its leading sentences up to ``limit`` (at least the first, whole),
    so that a message never ends inside a quoted sentence. The final full
    stop is dropped (the quote sits inside parentheses).
    """
    text = ANSI_ESCAPE.sub("", str(error)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    sentences = SENTENCE_END.split(lines[0])
    kept = sentences[0]
    for sentence in sentences[1:]:
        if len(kept) + 1 + len(sentence) > limit:
            break
        kept += " " + sentence
    return kept.rstrip(".")
