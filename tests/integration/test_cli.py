"""export-model in a subprocess: export, info, bench, and one-line errors for bad checkpoints and misplaced artifacts."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import CHECKPOINTS

CLI = [sys.executable, "-c", "from ocpdeploy.exporter.cli import main; main()"]


def run_cli(*arguments):
    return subprocess.run(CLI + [str(a) for a in arguments], capture_output=True, text=True, timeout=600)


def test_export_and_info(tmp_path):
    artifact = tmp_path / "painn_ts.pt"
    result = run_cli(CHECKPOINTS / "painn_tiny.pt", "--format", "torchscript", "-o", artifact)
    assert result.returncode == 0, result.stderr
    assert "verified on the probe" in result.stdout
    info = run_cli("info", artifact)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["model_kind"] == "painn"


def _bad_checkpoint(tmp_path, mutate):
    raw = torch.load(CHECKPOINTS / "painn_tiny.pt", weights_only=True)
    mutate(raw)
    path = tmp_path / "bad.pt"
    torch.save(raw, path)
    return path


class NotAllowed:
    """A pickled global: weights_only loading must refuse it without running code."""


def _rename(raw):
    raw["config"]["model"] = "schnet"


def _drop_key(raw):
    raw["state_dict"].pop("module.module.out_energy.0.weight")


def _reshape(raw):
    raw["state_dict"]["module.module.out_energy.0.weight"] = torch.zeros(3, 3)


def _add_global(raw):
    raw["extra"] = NotAllowed()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_rename, "unknown model 'schnet'; supported: gemnet_oc, painn"),
        (_drop_key, "missing weights for painn: out_energy.0.weight"),
        (_reshape, "weight 'out_energy.0.weight' has shape"),
        (_add_global, "refused to unpickle"),
    ],
)
def test_bad_checkpoints_give_one_line_errors(tmp_path, mutate, message):
    path = _bad_checkpoint(tmp_path, mutate)
    result = run_cli(path, "--format", "torchscript", "-o", tmp_path / "out.pt")
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.pt").exists()


def test_missing_checkpoint_and_bad_artifact(tmp_path):
    result = run_cli(tmp_path / "nope.pt", "-o", tmp_path / "out.pt")
    assert result.returncode != 0 and "checkpoint not found" in result.stderr
    not_an_artifact = tmp_path / "junk.pt"
    not_an_artifact.write_bytes(b"not a model")
    result = run_cli("info", not_an_artifact)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"export-model: error: {not_an_artifact} is a text file, not a loadable TorchScript artifact; pass an artifact made by export-model (.pt, .onnx or .pt2)"]


@pytest.mark.parametrize("format, kind", [("torchscript", "a TorchScript artifact"), ("onnx", "an ONNX artifact")])
def test_artifact_passed_as_checkpoint(export_artifact, tmp_path, format, kind):
    artifact = export_artifact("painn_tiny", format)
    result = run_cli(artifact, "--format", "torchscript", "-o", tmp_path / "out.pt")
    assert result.returncode == 1
    # One line: no torch UserWarning about TorchScript archives, no traceback.
    assert result.stderr.strip().splitlines() == [
        f"export-model: error: {artifact} is {kind} made by export-model; "
        "pass the trainer checkpoint (the .pt file fairchem's trainer saves, with 'state_dict' and 'config')"
    ]
    assert not (tmp_path / "out.pt").exists()


def test_checkpoint_passed_to_info():
    result = run_cli("info", CHECKPOINTS / "painn_tiny.pt")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"export-model: error: {CHECKPOINTS / 'painn_tiny.pt'} is a trainer checkpoint, not an artifact; export it first "
        f"(export-model {CHECKPOINTS / 'painn_tiny.pt'} --format torchscript -o painn_tiny_ts.pt) and pass the artifact"
    ]


def test_onnx_info_keys_in_torchscript_order(export_artifact):
    torchscript = json.loads(run_cli("info", export_artifact("painn_tiny", "torchscript")).stdout)
    onnx = json.loads(run_cli("info", export_artifact("painn_tiny", "onnx")).stdout)
    assert [key for key in onnx if key in torchscript] == list(torchscript)  # ONNX-only keys may sit between


def test_bench_stderr_has_complete_lines_only(export_artifact):
    result = run_cli("bench", export_artifact("painn_tiny", "torchscript"), "--sizes", "4,32", "--repeats", "1", "--warmup", "0")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["bench 4 atoms: done", "bench 32 atoms: done"]
