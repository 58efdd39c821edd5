"""export-model's one-line errors for files that are not what the command expects (no export runs here)."""

import json
import warnings
import zipfile

import pytest
import torch
from torch import nn

from conftest import CHECKPOINTS
from ocpdeploy.exporter import checkpoint as checkpoint_module
from ocpdeploy.exporter.checkpoint import CheckpointError, check_checkpoint_file, read_checkpoint
from ocpdeploy.runtime.filekind import (
    AOTI_ARTIFACT,
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
    file_kind,
)
from ocpdeploy.exporter.cli import main, ordered_metadata

CHECKPOINT = CHECKPOINTS / "painn_tiny.pt"
EXPECTED_CHECKPOINT = r"; pass the trainer checkpoint \(the \.pt file fairchem's trainer saves, with 'state_dict' and 'config'\)$"


def run_main(capsys, *arguments):
    """(exit code, stdout, stderr lines) of ``export-model ARGUMENTS`` run in this process."""
    code = 0
    try:
        main([str(argument) for argument in arguments])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


@pytest.fixture
def no_export(monkeypatch):
    """Fail the test if an export starts: the CLI must refuse before any work."""
    import ocpdeploy.exporter.export as export

    def refuse(*arguments, **options):
        raise AssertionError("the export ran although the command line was refused")

    monkeypatch.setattr(export, "export_checkpoint", refuse)


def _text(path, content="notes about a relaxation\n"):
    path.write_text(content)
    return path


def _torchscript(path, metadata=None):
    extra = {"metadata.json": json.dumps(metadata)} if metadata is not None else {}
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(path), _extra_files=extra)
    return path


def _onnx(path, metadata=None):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, producer_name="pytorch")
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))
    return path


def _pt2(path, ours=True):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/archive_format", "pt2")
        record = {"ocpdeploy_metadata": "{}"} if ours else {"AOTI_DEVICE_KEY": "cpu"}
        archive.writestr("m/data/aotinductor/model/abc.wrapper_metadata.json", json.dumps(record))
    return path


def _zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return path


def _legacy(path):
    torch.save(torch.load(CHECKPOINT, weights_only=True), path, _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize(
    "make, name, kind",
    [
        (lambda p: _text(p), "notes.txt", TEXT_FILE),
        (lambda p: _text(p), "notes.pt", TEXT_FILE),
        (lambda p: _text(p, "énergie 1.0 eV"), "utf8.pt", TEXT_FILE),
        (lambda p: p.write_bytes(b"") and p or p, "empty.pt", EMPTY_FILE),
        (lambda p: p.write_bytes(bytes(range(256))) and p or p, "blob.pt", UNKNOWN_BINARY),
        (lambda p: p.write_bytes(b"PK\x03\x04 truncated") and p or p, "broken.pt", DAMAGED_ZIP),
        (_zip, "other.zip", OTHER_ZIP),
        (lambda p: _torchscript(p, {"format": "ocp-deploy"}), "ts.pt", TORCHSCRIPT_ARTIFACT),
        (lambda p: _torchscript(p), "scripted.pt", TORCHSCRIPT_ARCHIVE),
        (lambda p: _onnx(p, {"format": "ocp-deploy"}), "model.onnx", ONNX_ARTIFACT),
        (lambda p: _onnx(p), "other.onnx", ONNX_MODEL),
        (lambda p: _pt2(p), "model.pt2", AOTI_ARTIFACT),
        (lambda p: _pt2(p, ours=False), "other.pt2", PT2_ARCHIVE),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p) or p, "weights.pt", TORCH_SAVE),
        (_legacy, "legacy.pt", LEGACY_TORCH_SAVE),
    ],
)
def test_file_kind(tmp_path, make, name, kind):
    path = tmp_path / name
    make(path)
    assert file_kind(str(path)) == kind


def test_trainer_checkpoint_kind():
    assert file_kind(str(CHECKPOINT)) == TRAINER_CHECKPOINT


def test_legacy_checkpoint_still_loads(tmp_path):
    assert read_checkpoint(str(_legacy(tmp_path / "legacy.pt"))).model_name == "painn"


@pytest.mark.parametrize(
    "make, name, message",
    [
        (_text, "notes.txt", r"^notes\.txt is a text file"),
        (_text, "notes.pt", r"^notes\.pt is a text file"),
        (lambda p: _torchscript(p, {"format": "ocp-deploy"}), "x.pt", r"^x\.pt is a TorchScript artifact made by export-model"),
        (lambda p: _onnx(p, {"format": "ocp-deploy"}), "x.onnx", r"^x\.onnx is an ONNX artifact made by export-model"),
        (lambda p: _pt2(p), "x.pt2", r"^x\.pt2 is an AOTInductor package made by export-model"),
        (_zip, "x.zip", r"^x\.zip is a zip archive that is neither a torch checkpoint nor an artifact"),
    ],
)
def test_not_a_checkpoint_is_named(tmp_path, monkeypatch, make, name, message):
    monkeypatch.chdir(tmp_path)
    make(tmp_path / name)
    with pytest.raises(CheckpointError, match=message + EXPECTED_CHECKPOINT):
        check_checkpoint_file(name)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(name)  # the library refuses it the same way, before torch.load


def test_artifact_as_checkpoint_never_reaches_torch_load(tmp_path, monkeypatch):
    artifact = _torchscript(tmp_path / "x.pt", {"format": "ocp-deploy"})

    def refuse(*arguments, **options):
        raise AssertionError("torch.load was called on an artifact")

    monkeypatch.setattr(checkpoint_module.torch, "load", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "looks like a TorchScript archive" UserWarning must not appear
        with pytest.raises(CheckpointError, match="is a TorchScript artifact made by export-model"):
            read_checkpoint(str(artifact))


@pytest.mark.parametrize("name", ["notes.txt", "notes.pt"])
def test_cli_text_file_as_checkpoint(tmp_path, monkeypatch, capsys, no_export, name):
    monkeypatch.chdir(tmp_path)
    _text(tmp_path / name)
    code, _, err = run_main(capsys, name, "--format", "torchscript", "-o", "x.pt")
    assert code == 1
    assert err == [f"export-model: error: {name} is a text file; pass the trainer checkpoint (the .pt file fairchem's trainer saves, with 'state_dict' and 'config')"]


def test_cli_missing_output_folder_refused_before_export(tmp_path, capsys, no_export):
    output = tmp_path / "nodir" / "x.pt"
    code, _, err = run_main(capsys, CHECKPOINT, "-o", output)
    assert code == 1
    assert err == [f"export-model: error: -o {output}: output folder {output.parent} does not exist; create it first (mkdir -p {output.parent})"]


@pytest.mark.parametrize(
    "format, output, message",
    [
        ("onnx", "x.pt", "-o x.pt: --format onnx writes a .onnx file; name the output *.onnx (for a .pt file use --format torchscript)"),
        ("torchscript", "x.onnx", "-o x.onnx: --format torchscript writes a .pt file; name the output *.pt (for a .onnx file use --format onnx)"),
        ("aoti", "x.pt", "-o x.pt: --format aoti writes a .pt2 file; name the output *.pt2 (for a .pt file use --format torchscript)"),
        ("torchscript", "x.model", "-o x.model: --format torchscript writes a .pt file; name the output *.pt"),
    ],
)
def test_cli_wrong_output_suffix_refused_before_export(tmp_path, monkeypatch, capsys, no_export, format, output, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, CHECKPOINT, "--format", format, "-o", output)
    assert code == 1
    assert err == [f"export-model: error: {message}"]


def test_cli_output_is_the_checkpoint(tmp_path, capsys, no_export):
    checkpoint = tmp_path / "painn.pt"
    checkpoint.write_bytes(CHECKPOINT.read_bytes())
    code, _, err = run_main(capsys, checkpoint, "-o", checkpoint)
    assert code == 1
    assert err == [f"export-model: error: -o {checkpoint} is the checkpoint itself; choose another output name"]


@pytest.mark.parametrize("command", ["info", "bench"])
def test_cli_checkpoint_passed_as_artifact(capsys, command):
    code, _, err = run_main(capsys, command, CHECKPOINT)
    assert code == 1
    assert err == [
        f"export-model: error: {CHECKPOINT} is a trainer checkpoint, not an artifact; export it first "
        f"(export-model {CHECKPOINT} --format torchscript -o painn_tiny_ts.pt) and pass the artifact"
    ]


@pytest.mark.parametrize("command", ["info", "bench"])
def test_cli_text_file_passed_as_artifact(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    _text(tmp_path / "notes.txt")
    code, _, err = run_main(capsys, command, "notes.txt")
    assert code == 1
    assert err == ["export-model: error: notes.txt is a text file; pass an artifact made by export-model (.pt, .onnx or .pt2)"]


def test_cli_artifact_with_the_wrong_suffix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _onnx(tmp_path / "model.pt", {"format": "ocp-deploy"})
    code, _, err = run_main(capsys, "info", "model.pt")
    assert code == 1
    assert err == [
        "export-model: error: model.pt is an ONNX artifact made by export-model but ends in '.pt'; "
        "artifacts are loaded by suffix: rename it to model.onnx"
    ]


def test_cli_missing_artifact(tmp_path, capsys):
    code, _, err = run_main(capsys, "info", tmp_path / "nope.pt")
    assert code == 1
    assert err == [f"export-model: error: artifact not found: {tmp_path / 'nope.pt'}"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([str(CHECKPOINT)], "export-model: error: Missing option '-o' / '--output' (see export-model --help)"),
        (["info"], "export-model: error: Missing argument 'ARTIFACT' (see export-model info --help)"),
        ([str(CHECKPOINT), "-o", "x.pt", "--format", "tflite"], "export-model: error: Invalid value for '--format': 'tflite' is not one of 'torchscript', 'onnx', 'aoti' (see export-model --help)"),
    ],
)
def test_cli_usage_errors_are_one_line(capsys, arguments, message):
    code, _, err = run_main(capsys, *arguments)
    assert code == 2
    assert err == [message]


def test_help_lists_the_subcommands(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    assert "export-model info ARTIFACT" in out and "export-model bench ARTIFACT" in out


def test_bench_help_names_every_artifact_kind(capsys):
    code, out, _ = run_main(capsys, "bench", "--help")
    assert code == 0
    assert "(.pt, .onnx or .pt2)" in " ".join(out.split())


def test_ordered_metadata():
    metadata = {"c": 3, "a": 1, "extra": 0, "b": 2}
    assert list(ordered_metadata(metadata, ["a", "b", "c", "absent"])) == ["a", "b", "c", "extra"]
