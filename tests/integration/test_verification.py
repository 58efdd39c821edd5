"""Export verification: refuses an artifact that computes something else, accepts float32 rounding noise.

The artifact is made different from the eager rewrite by perturbing the
weights of the module that gets written (the eager rewrite used for the
comparison keeps the checkpoint's weights).
"""

import copy
import os

import pytest
import torch

import ocpdeploy.exporter.export as export
from conftest import CHECKPOINTS


def _export_with_perturbed_weights(monkeypatch, tmp_path, relative, format="torchscript"):
    """Export painn_tiny; the written artifact's weights are scaled by 1 + relative * N(0, 1)."""
    generator = torch.Generator().manual_seed(7)

    def perturbed(module):
        module = copy.deepcopy(module)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.mul_(1.0 + relative * torch.randn(parameter.shape, generator=generator))
        return module

    if format == "torchscript":
        original = export.write_torchscript
        monkeypatch.setattr(export, "write_torchscript", lambda deployed, metadata, path: original(perturbed(deployed), metadata, path))
    else:
        original = export.build_program
        monkeypatch.setattr(export, "build_program", lambda physical, *rest: original(perturbed(physical), *rest))
    suffix = ".pt" if format == "torchscript" else ".onnx"
    output = tmp_path / f"painn{suffix}"
    return output, lambda: export.export_checkpoint(str(CHECKPOINTS / "painn_tiny.pt"), str(output), format=format)


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_wrong_artifact_is_refused_and_deleted(monkeypatch, tmp_path, format):
    """Weights off by 1% (a wrong model, far above rounding): refused, file removed, one-line reason."""
    output, run = _export_with_perturbed_weights(monkeypatch, tmp_path, 1.0e-2, format)
    with pytest.raises(export.VerificationError, match="artifact disagrees with the eager rewrite") as error:
        run()
    assert "\n" not in str(error.value)
    assert not os.path.exists(output)


def test_float32_rounding_noise_is_accepted(monkeypatch, tmp_path):
    """Weights off by ~16 float32 roundings: above the fixed bounds for this random-weight model
    (|dE| ~8e-4 eV), within its measured rounding noise allowance: written."""
    output, run = _export_with_perturbed_weights(monkeypatch, tmp_path, 1.0e-6)
    result = run()
    assert os.path.exists(output)
    fixed_energy_bound = export.ENERGY_TOLERANCE["float32"][0] * 20.0 + export.ENERGY_TOLERANCE["float32"][1]
    assert result.max_energy_error > fixed_energy_bound, "the perturbation no longer exercises the noise allowance"


def _freeze_size(monkeypatch, size_name):
    """Make ``program.program_dynamic_shapes`` leave one named size static: the export specialises it to the example."""
    import ocpdeploy.exporter.program as program

    original = program.program_dynamic_shapes

    def frozen(*arguments):
        return tuple({axis: dim for axis, dim in entry.items() if dim.__name__ != size_name} for entry in original(*arguments))

    monkeypatch.setattr(program, "program_dynamic_shapes", frozen)


def test_specialised_export_is_refused_by_the_size_check(monkeypatch, tmp_path):
    from ocpdeploy.exporter.shape_check import ShapeContractError

    _freeze_size(monkeypatch, "structures")
    output = tmp_path / "painn.onnx"
    with pytest.raises(ShapeContractError, match=r"input 'cell' dimension 0 \('structures'\) was specialised to the constant") as error:
        export.export_checkpoint(str(CHECKPOINTS / "painn_tiny.pt"), str(output), format="onnx")
    assert "\n" not in str(error.value)
    assert not os.path.exists(output)


def test_specialised_export_is_refused_by_the_probe_suite(monkeypatch, tmp_path):
    """With the size check switched off, the probe suite still refuses the specialised artifact."""
    import ocpdeploy.exporter.write_onnx as write_onnx

    _freeze_size(monkeypatch, "structures")
    monkeypatch.setattr(write_onnx, "check_program_shapes", lambda *arguments: None)
    monkeypatch.setattr(write_onnx, "check_onnx_shapes", lambda *arguments: None)
    output = tmp_path / "painn.onnx"
    with pytest.raises(export.VerificationError, match=r"the artifact fails on probe '\w+'") as error:
        export.export_checkpoint(str(CHECKPOINTS / "painn_tiny.pt"), str(output), format="onnx")
    assert "\n" not in str(error.value)
    assert not os.path.exists(output)
