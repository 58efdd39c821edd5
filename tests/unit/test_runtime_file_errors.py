"""``load_model`` refuses files that are not artifacts in one line naming what the file is (no export runs here).

Each message is pinned whole: it names the file's kind and what to do, and
ends where its sentence ends (no quoted library text cut mid-word).
"""

import ast
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import CHECKPOINTS
from ocpdeploy.exporter.checkpoint import CheckpointError, _what_pickle_needs, read_checkpoint
from ocpdeploy.exporter.cli import main
from ocpdeploy.runtime import ArtifactError, OnnxModel, TorchScriptModel, load_model
from ocpdeploy.runtime.filekind import error_reason

REPOSITORY = Path(__file__).resolve().parents[2]
CHECKPOINT = CHECKPOINTS / "painn_tiny.pt"
ARTIFACT_HINT = "pass an artifact made by export-model (.pt, .onnx or .pt2)"
DAMAGED = "is a damaged zip archive: its zip directory is missing or unreadable, as in a truncated or partly copied file; copy or export it again"
TRUNCATED_ONNX = (
    r" is an ONNX model that ONNX Runtime cannot parse \(INVALID_PROTOBUF : Load model from .* failed:Protobuf parsing failed\): "
    r"the file is truncated or damaged; copy or export it again$"
)
NEEDS_CODE = "refused to unpickle: it needs the Python object {name}, and torch.load(weights_only=True) runs no pickled code; re-save the checkpoint with plain tensors, numbers, strings, lists and dicts"


def _torchscript_artifact(path):
    """A scripted module with an ocp-deploy metadata record: what file sniffing sees in a TorchScript artifact."""
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(path), _extra_files={"metadata.json": json.dumps({"format": "ocp-deploy"})})
    return path


def _onnx_artifact(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, producer_name="pytorch")
    entry = model.metadata_props.add()
    entry.key, entry.value = "format", json.dumps("ocp-deploy")
    onnx.save(model, str(path))
    return path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _refusal(path, model_class=None):
    """The ArtifactError text of ``load_model(path)`` (or of ``model_class(path)``), checked to be one line."""
    with pytest.raises(ArtifactError) as error:
        (model_class or load_model)(str(path))
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Work in ``tmp_path`` so that messages carry short relative names."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_trainer_checkpoint_gets_the_export_command(in_tmp):
    shutil.copy(CHECKPOINT, in_tmp / "painn.pt")
    expected = (
        "painn.pt is a trainer checkpoint, not an artifact; export it first "
        "(export-model painn.pt --format torchscript -o painn_ts.pt) and pass the artifact"
    )
    with pytest.raises(ArtifactError, match="^" + re.escape(expected) + "$"):
        load_model("painn.pt")
    # Built directly, without load_model's check, the backend says the same.
    assert _refusal("painn.pt", TorchScriptModel) == expected


def test_truncated_torchscript_artifact_is_called_damaged(in_tmp):
    _truncate(_torchscript_artifact(in_tmp / "model.pt"))
    with pytest.raises(ArtifactError, match="^" + re.escape("model.pt " + DAMAGED) + "$"):
        load_model("model.pt")
    assert _refusal("model.pt", TorchScriptModel) == "model.pt " + DAMAGED


def test_truncated_onnx_artifact_is_called_truncated(in_tmp):
    _truncate(_onnx_artifact(in_tmp / "model.onnx"))
    with pytest.raises(ArtifactError, match="^model\\.onnx" + TRUNCATED_ONNX):
        load_model("model.onnx")
    assert re.fullmatch("model\\.onnx" + TRUNCATED_ONNX, _refusal("model.onnx", OnnxModel))


@pytest.mark.parametrize(
    "content, kind",
    [(bytes(range(256)), "a binary file of unknown type"), (b"energy -3.2 eV\n", "a text file"), (b"", "an empty file")],
)
def test_garbage_onnx_is_named(in_tmp, content, kind):
    (in_tmp / "model.onnx").write_bytes(content)
    with pytest.raises(ArtifactError, match="^" + re.escape(f"model.onnx is {kind}, not a loadable ONNX artifact; {ARTIFACT_HINT}") + "$"):
        load_model("model.onnx")


def test_pickle_that_needs_code(in_tmp, monkeypatch):
    """The runtime names a torch.save file without unpickling it; the exporter's refusal names the class it needs."""
    torch.save(nn.Linear(2, 2), in_tmp / "module.pt")
    torch.save({"state_dict": {}, "config": {"model": "painn"}, "extra": nn.Linear(2, 2)}, in_tmp / "trainer.pt")
    needed = f"{nn.Linear.__module__}.{nn.Linear.__qualname__}"  # the global the pickle stream names

    def refuse(*arguments, **options):
        raise AssertionError("the runtime unpickled a file")

    with monkeypatch.context() as patch:
        patch.setattr(pickle, "load", refuse)
        patch.setattr(torch, "load", refuse)
        expected = f"module.pt is a torch.save file without 'state_dict' and 'config' (not a trainer checkpoint); {ARTIFACT_HINT}"
        with pytest.raises(ArtifactError, match="^" + re.escape(expected) + "$"):
            load_model("module.pt")
    for name in ("module.pt", "trainer.pt"):
        with pytest.raises(CheckpointError, match="^" + re.escape(f"{name}: " + NEEDS_CODE.format(name=needed)) + "$"):
            read_checkpoint(name)


def test_unpickling_refusal_without_a_named_global_quotes_the_unpickler_line():
    error = pickle.UnpicklingError(
        "Weights only load failed. This file can still be loaded, to do so you have two options, "
        "\x1b[1mdo those steps only if you trust the source of the checkpoint\x1b[0m. \n"
        "\tWeightsUnpickler error: Unsupported operand 149. Check the documentation.\n\nMore text."
    )
    assert _what_pickle_needs(error) == "it needs Python objects beyond tensors and plain data (Unsupported operand 149. Check the documentation)"


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="^" + re.escape(f"artifact not found: {missing}") + "$"):
        load_model(str(missing))


@pytest.mark.parametrize(
    "make, name, expected",
    [
        (_onnx_artifact, "model.pt", "model.pt is an ONNX artifact made by export-model but ends in '.pt'; artifacts are loaded by suffix: rename it to model.onnx"),
        (_torchscript_artifact, "model.bin", "model.bin is a TorchScript artifact made by export-model but ends in '.bin'; artifacts are loaded by suffix: rename it to model.pt"),
        (_torchscript_artifact, "model.onnx", "model.onnx is a TorchScript artifact made by export-model but ends in '.onnx'; artifacts are loaded by suffix: rename it to model.pt"),
        (lambda p: p.write_text("notes\n"), "notes.txt", f"notes.txt is a text file; {ARTIFACT_HINT}"),
        (lambda p: p.write_text("notes\n"), "notes.pt2", f"notes.pt2 is a text file, not a loadable AOTInductor package; {ARTIFACT_HINT}"),
    ],
)
def test_wrong_suffix(in_tmp, make, name, expected):
    make(in_tmp / name)
    with pytest.raises(ArtifactError, match="^" + re.escape(expected) + "$"):
        load_model(name)


@pytest.mark.parametrize("name, make", [("painn.pt", lambda p: shutil.copy(CHECKPOINT, p)), ("model.pt", lambda p: _truncate(_torchscript_artifact(p))), ("model.onnx", lambda p: p.write_bytes(bytes(range(256))))])
def test_cli_and_runtime_give_the_same_line(in_tmp, capsys, name, make):
    make(in_tmp / name)
    with pytest.raises(SystemExit):
        main(["info", name])
    assert capsys.readouterr().err.strip() == f"export-model: error: {_refusal(name)}"


def test_error_reason_keeps_whole_sentences():
    long = "First sentence is here. " + "x" * 300 + " never reached."
    assert error_reason(RuntimeError(long)) == "First sentence is here"
    one_long_sentence = "word " * 100
    assert error_reason(RuntimeError(one_long_sentence + "\nsecond line")) == one_long_sentence.strip()
    assert error_reason(RuntimeError("\x1b[1mbold\x1b[0m text. More.")) == "bold text. More"
    assert error_reason(RuntimeError("")) == "RuntimeError"


def test_file_sniffing_is_torch_free_and_runtime_never_imports_the_exporter():
    """The sniffing module loads without torch (the runtime's ONNX path may run without it), and no runtime module imports the exporter."""
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('filekind', {str(REPOSITORY / 'runtime' / 'filekind.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('torch', 'onnxruntime', 'ocpdeploy')))\n"
    )
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    for source in (REPOSITORY / "runtime").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any("exporter" in module for module in modules), f"{source.name} imports {modules}"
