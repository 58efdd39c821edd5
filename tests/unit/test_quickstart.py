"""examples/quickstart.py: says the weights are random, reports agreement between formats, cleans up its folder.

The models are replaced by fixed results here; the real run (about two
minutes) is the README's first command.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


@pytest.fixture
def quickstart(monkeypatch):
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    forces = np.full((3, 3), 0.5)

    def fake_run(name, attributes, workdir):
        (workdir / f"{name}.pt").write_text("checkpoint")
        return {"torchscript": module.Result(-10.0, forces), "onnx": module.Result(-10.0002, forces + 1.0e-5)}

    monkeypatch.setattr(module, "run_model", fake_run)
    return module


def _workdir(output: str) -> Path:
    return Path(output.splitlines()[0].split()[2])


def test_temporary_folder_removed_and_agreement_reported(quickstart, capsys):
    quickstart.main([])
    output = capsys.readouterr().out
    assert not _workdir(output).exists()
    assert "RANDOM weights" in output and "not physical" in output
    agreement = output[output.index("Agreement between formats (the numbers to look at):") :]
    assert "|dE| <= 1e-05 |E| + 0.0001 eV" in agreement
    rows = [line.split() for line in agreement.splitlines() if line.startswith(("painn ", "gemnet_oc "))]
    assert [row[0] for row in rows] == ["painn", "gemnet_oc"]
    for row in rows:
        assert row[1:4] == ["torchscript", "vs", "onnx"]
        assert float(row[4]) == pytest.approx(2.0e-4, rel=1e-3)  # |dE|
        assert float(row[5]) == pytest.approx(2.0e-5, rel=1e-3)  # |dE|/|E|
        assert float(row[6]) == pytest.approx(1.0e-5, rel=1e-3)  # max|dF|
        assert float(row[7]) == pytest.approx(2.0e-5, rel=1e-3)  # max|dF|/max|F|


def test_workdir_is_kept(quickstart, capsys, tmp_path):
    workdir = tmp_path / "kept"
    quickstart.main(["--workdir", str(workdir)])
    output = capsys.readouterr().out
    assert (workdir / "painn.pt").is_file() and (workdir / "gemnet_oc.pt").is_file()
    assert f"checkpoints and artifacts kept in {workdir}" in output
