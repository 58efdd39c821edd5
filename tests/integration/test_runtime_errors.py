"""A failure inside an artifact's runtime reaches the user as one line naming the artifact and the structure."""

import numpy as np
import pytest

from ocpdeploy.exporter.probe import probe_atoms, probe_suite
from ocpdeploy.exporter.write_aoti import compiler_available
from ocpdeploy.runtime import InferenceError, load_model


def _break_feeds(monkeypatch, model):
    """Feed positions with a wrong width, as a host with a bug would."""
    original = model._feeds

    def broken(arrays):
        feeds = original(arrays)
        feeds["positions"] = np.zeros((feeds["positions"].shape[0], 4), dtype=feeds["positions"].dtype)
        return feeds

    monkeypatch.setattr(model, "_feeds", broken)


@pytest.mark.parametrize("format", ["onnx", "aoti"])
def test_runtime_failure_is_one_line_naming_artifact_and_structure(export_artifact, monkeypatch, capfd, format):
    if format == "aoti" and not compiler_available():
        pytest.skip("AOTInductor needs a C++ compiler (g++/clang++)")
    path = export_artifact("painn_tiny", format)
    model = load_model(path)
    _break_feeds(monkeypatch, model)
    capfd.readouterr()
    with pytest.raises(InferenceError, match=r"the artifact failed on the structure \(21 atoms, pbc TTF\): ") as error:
        model.predict(probe_atoms())
    assert str(error.value).startswith(f"{path}: ")
    assert "\n" not in str(error.value)
    with pytest.raises(InferenceError, match=r"failed on structures 0-1 \(21 atoms, pbc TTF; 8 atoms, pbc TTT\)"):
        suite = dict(probe_suite())
        model.predict_many([suite["slab"], suite["bulk_tags0"]], batch_size=2)
    assert "onnxruntime" not in capfd.readouterr().err


def test_onnx_runtime_keeps_its_log_off_stderr_on_good_inputs(export_artifact, capfd):
    model = load_model(export_artifact("gemnet_oc_tiny", "onnx"))
    capfd.readouterr()
    for _, atoms in probe_suite():
        model.predict(atoms)
    assert capfd.readouterr().err == ""
