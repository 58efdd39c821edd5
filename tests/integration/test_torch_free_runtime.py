"""ONNX artifacts run where torch cannot be imported: numpy, ase and ONNX Runtime alone.

Each check runs in a fresh interpreter whose ``sys.modules["torch"]`` is
None before anything else is imported, so every ``import torch`` there
fails, as on an install without torch. The ONNX results there are
compared here with the TorchScript artifact of the same checkpoint.
"""

import json

import numpy as np
import pytest

from conftest import CHECKPOINTS, run_python
from ocpdeploy.exporter.cli import MISSING_EXPORT_EXTRA
from ocpdeploy.exporter.probe import probe_suite
from ocpdeploy.runtime import load_model

MODELS = ["painn_tiny", "gemnet_oc_tiny"]
# A bulk, a slab with tags 0/1/2 (pbc TTF) and a molecule without pbc.
STRUCTURES = ("bulk_tags1", "slab", "molecule")
# predict_many batch size: the three structures as a batch of two and one of one.
BATCH_SIZE = 2
ENERGY_RELATIVE, ENERGY_ABSOLUTE = 1.0e-5, 1.0e-4  # eV
FORCES_RELATIVE, FORCES_ABSOLUTE = 1.0e-4, 1.0e-4  # eV/A
EXIT_USAGE = 2

# Put first in every script: from here on ``import torch`` fails.
WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
try:
    import torch
except ImportError:
    torch_blocked = True
else:
    torch_blocked = False
import json
"""

RUN_ONNX = WITHOUT_TORCH + """
from ase import Atoms
from ocpdeploy.runtime import DeployedCalculator, load_model

artifact = sys.argv[1]
structures = [Atoms(**entry) for entry in json.loads(sys.argv[2])]
batched = load_model(artifact).predict_many(structures, batch_size=int(sys.argv[3]))
calculator = DeployedCalculator(artifact)
through_ase = []
for atoms in structures:
    atoms.calc = calculator
    through_ase.append({"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().tolist()})
print(json.dumps({
    "torch_blocked": torch_blocked,
    "predict_many": [{"energy": r["energy"], "forces": r["forces"].tolist()} for r in batched],
    "ase": through_ase,
    "torch_modules": sorted(name for name, module in sys.modules.items() if name.startswith("torch") and module is not None),
}))
"""

LOAD_TORCH_ARTIFACT = WITHOUT_TORCH + """
from ocpdeploy.runtime import load_model

try:
    load_model(sys.argv[1])
except Exception as error:
    print(json.dumps({"torch_blocked": torch_blocked, "type": type(error).__name__, "import_error": isinstance(error, ImportError), "message": str(error)}))
"""

RUN_EXPORT_MODEL = WITHOUT_TORCH + """
from ocpdeploy.exporter.cli import main

main(sys.argv[1:])
"""


def _structures():
    by_name = dict(probe_suite())
    return [by_name[name] for name in STRUCTURES]


def _as_json(atoms_list):
    """The keyword arguments of ``ase.Atoms`` for each structure (JSON floats round-trip exactly)."""
    return json.dumps(
        [
            {
                "numbers": atoms.numbers.tolist(),
                "positions": atoms.positions.tolist(),
                "cell": atoms.cell.array.tolist(),
                "pbc": atoms.pbc.tolist(),
                "tags": atoms.get_tags().tolist(),
            }
            for atoms in atoms_list
        ]
    )


def _run_without_torch(script, *arguments):
    result = run_python(script, args=[str(argument) for argument in arguments])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["torch_blocked"], "import torch succeeded in the torch-free process"
    return report


def _assert_close(result, reference, what):
    energy_error = abs(result["energy"] - reference["energy"])
    assert energy_error <= ENERGY_RELATIVE * abs(reference["energy"]) + ENERGY_ABSOLUTE, f"{what}: |dE| = {energy_error}"
    forces = np.asarray(result["forces"])
    assert forces.shape == reference["forces"].shape, what
    forces_error = float(np.abs(forces - reference["forces"]).max())
    bound = FORCES_RELATIVE * float(np.abs(reference["forces"]).max()) + FORCES_ABSOLUTE
    assert forces_error <= bound, f"{what}: max|dF| = {forces_error} > {bound}"


@pytest.mark.parametrize("checkpoint", MODELS)
def test_onnx_runs_without_torch_as_torchscript_does_with_it(export_artifact, checkpoint):
    structures = _structures()
    report = _run_without_torch(RUN_ONNX, export_artifact(checkpoint, "onnx"), _as_json(structures), BATCH_SIZE)
    assert report["torch_modules"] == [], f"torch modules loaded in the torch-free process: {report['torch_modules']}"
    reference = load_model(export_artifact(checkpoint, "torchscript"))
    for name, atoms, batched, through_ase in zip(STRUCTURES, structures, report["predict_many"], report["ase"]):
        expected = reference.predict(atoms)
        _assert_close(batched, expected, f"{checkpoint} {name} predict_many")
        _assert_close(through_ase, expected, f"{checkpoint} {name} DeployedCalculator")
    assert len(report["predict_many"]) == len(report["ase"]) == len(STRUCTURES)


def test_torchscript_artifact_without_torch_is_one_line(export_artifact):
    path = export_artifact("painn_tiny", "torchscript")
    report = _run_without_torch(LOAD_TORCH_ARTIFACT, path)
    assert report["type"] == "TorchUnavailableError" and report["import_error"]
    assert report["message"].startswith(f"{path}: a TorchScript artifact (.pt) needs torch, which cannot be imported here")
    assert 'pip install "ocp-deploy[export]"' in report["message"]
    assert "\n" not in report["message"]


def test_torch_backend_classes_without_torch_are_one_line():
    script = WITHOUT_TORCH + """
import ocpdeploy.runtime
try:
    ocpdeploy.runtime.AotiModel
except ImportError as error:
    print(json.dumps({"torch_blocked": torch_blocked, "message": str(error)}))
"""
    report = _run_without_torch(script)
    assert report["message"].startswith("AotiModel needs torch, which cannot be imported here") and "\n" not in report["message"]


def test_export_model_without_torch_says_what_to_install(tmp_path):
    arguments = [str(CHECKPOINTS / "painn_tiny.pt"), "--format", "onnx", "-o", str(tmp_path / "painn.onnx")]
    result = run_python(RUN_EXPORT_MODEL, args=arguments)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.splitlines() == [MISSING_EXPORT_EXTRA]
    assert MISSING_EXPORT_EXTRA == 'export-model: error: exporting needs torch and the export extra: pip install "ocp-deploy[export]"'
    assert not (tmp_path / "painn.onnx").exists()
