"""AOTInductor packages (``--format aoti``, ``.pt2``) against the fairchem-core 1.10.0 reference, via the runtime.

Each package takes 40-120 s to compile on 2 cores, so this file compiles
three (PaiNN and GemNet-OC with all interactions, both direct forces, and
PaiNN conservative float64, whose backward is captured) once per session and checks everything on them. Skipped where no C++ compiler is
on PATH (AOTInductor needs one at export time, not at run time).
"""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from conftest import CHECKPOINTS, SINGLE_STRUCTURES, assert_parity
from ocpdeploy.exporter.write_aoti import compiler_available
from ocpdeploy.runtime import AotiModel, ArtifactError, DeployedCalculator, load_model
from ocpdeploy.runtime.keys import AOTI_METADATA_KEY

pytestmark = pytest.mark.skipif(not compiler_available(), reason="AOTInductor needs a C++ compiler (g++/clang++)")

AOTI_MODELS = ["painn_tiny", "gemnet_oc_tiny"]
THREADS = 2


@pytest.mark.parametrize("checkpoint", AOTI_MODELS)
def test_aoti_parity_with_reference(export_artifact, reference, atoms, checkpoint):
    model = load_model(export_artifact(checkpoint, "aoti"))
    assert isinstance(model, AotiModel)
    data = reference(checkpoint)
    for name in SINGLE_STRUCTURES:
        result = model.predict(atoms(name))
        assert result["forces"].dtype == np.float64 and result["forces"].shape == data[f"{name}/forces"].shape
        assert_parity(result["energy"], result["forces"], data[f"{name}/energy"][0], data[f"{name}/forces"], f"{checkpoint} aoti {name}")
    # A batch of two structures with different pbc (fixture vc: v2 and v4) in one call.
    batched = model.predict_many([atoms("v2"), atoms("v4")], batch_size=2)
    n2 = int(data["vc/natoms"][0])
    assert_parity(batched[0]["energy"], batched[0]["forces"], data["vc/energy"][0], data["vc/forces"][:n2], "vc[0]")
    assert_parity(batched[1]["energy"], batched[1]["forces"], data["vc/energy"][1], data["vc/forces"][n2:], "vc[1]")


@pytest.mark.parametrize("checkpoint", AOTI_MODELS)
def test_aoti_is_deterministic_with_two_threads_and_equals_torchscript(export_artifact, checkpoint):
    """Sums into atoms are compiled to ATen's serial kernel, not atomic adds: same bits run to run."""
    from ase.build import bulk

    structure = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    structure.positions += np.random.default_rng(11).normal(scale=0.05, size=structure.positions.shape)
    structure.set_tags(np.ones(len(structure), dtype=int))
    previous = torch.get_num_threads()
    try:
        model = load_model(export_artifact(checkpoint, "aoti"), threads=THREADS)
        with export_artifact.paused():
            first = model.predict(structure)
            for _ in range(4):
                again = model.predict(structure)
                assert again["energy"] == first["energy"]
                assert np.array_equal(again["forces"], first["forces"])
    finally:
        torch.set_num_threads(previous)
    expected = load_model(export_artifact(checkpoint, "torchscript")).predict(structure)
    assert abs(first["energy"] - expected["energy"]) <= 1e-5 * abs(expected["energy"]) + 1e-3
    assert np.abs(first["forces"] - expected["forces"]).max() <= 2e-4 * np.abs(expected["forces"]).max() + 1e-3


@pytest.mark.parametrize("checkpoint", AOTI_MODELS)
def test_aoti_package_runs_on_the_structures_alone(export_artifact, checkpoint):
    """The compiled program takes the six structure inputs and builds its graph itself (torch's own
    AOTInductor loader, no ocp-deploy code on the call): equal to the TorchScript artifact's forward_batch
    on a batch of a slab (tags 0/1/2), a molecule, a lone atom and a 1-atom cell with many images."""
    from ase import Atoms
    from ase.build import add_adsorbate, bulk, fcc111, molecule
    from torch._inductor import aoti_load_package

    slab = fcc111("Cu", size=(2, 2, 3), vacuum=7.0, a=3.61)
    slab.set_tags([0] * 4 + [1] * 8)
    add_adsorbate(slab, "O", 1.6, "fcc")
    slab.set_tags(list(slab.get_tags()[:-1]) + [2])
    slab.pbc = (True, True, False)
    ethanol = molecule("CH3CH2OH")
    ethanol.center(vacuum=5.0)
    lone = Atoms("Cu", positions=[[5.0, 5.0, 5.0]], cell=[10.0, 10.0, 10.0], pbc=False)
    single = bulk("Cu", "fcc", a=3.61)
    structures = [slab, ethanol, lone, single]
    inputs = (
        torch.tensor(np.concatenate([a.positions for a in structures]), dtype=torch.float32),
        torch.tensor(np.concatenate([a.numbers for a in structures]), dtype=torch.long),
        torch.tensor(np.stack([a.cell.array for a in structures]), dtype=torch.float32),
        torch.tensor(np.stack([a.pbc for a in structures]), dtype=torch.bool),
        torch.tensor(np.concatenate([a.get_tags() for a in structures]), dtype=torch.long),
        torch.tensor([len(a) for a in structures], dtype=torch.long),
    )
    energy, forces = aoti_load_package(export_artifact(checkpoint, "aoti"))(*inputs)
    expected = torch.jit.load(export_artifact(checkpoint, "torchscript")).forward_batch(*inputs)
    assert torch.allclose(energy, expected["energy"], rtol=1e-5, atol=1e-4)
    scale = float(expected["forces"].abs().max())
    assert float((forces - expected["forces"]).abs().max()) <= 1e-4 * scale + 1e-4


def test_aoti_metadata_and_ase(export_artifact, reference, atoms):
    path = export_artifact("painn_tiny", "aoti")
    model = load_model(path)
    metadata = model.metadata
    assert metadata["artifact"] == "aoti" and metadata["compiled_for"] == "cpu"
    assert metadata["inputs"] == ["positions", "atomic_numbers", "cell", "pbc", "tags", "natoms"]
    assert metadata["units"]["energy"] == "eV" and metadata["normalizers"]["baked_in"] is True
    assert len(metadata["checkpoint_sha256"]) == 64 and metadata["torch_version"] == torch.__version__
    structure = atoms("v1")
    structure.calc = DeployedCalculator(path)
    data = reference("painn_tiny")
    # The reference reports forces on all atoms; ASE zeroes FixAtoms ones unless asked not to.
    forces = structure.get_forces(apply_constraint=False)
    assert_parity(structure.get_potential_energy(), forces, data["v1/energy"][0], data["v1/forces"], "ase")


def test_aoti_bad_inputs_and_wrong_device(export_artifact, atoms, tmp_path):
    path = export_artifact("painn_tiny", "aoti")
    model = load_model(path)
    structure = atoms("v1")
    structure.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(structure)
    if torch.cuda.is_available():
        with pytest.raises(ArtifactError, match="compiled for cpu, not cuda"):
            load_model(path, device="cuda")
    else:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            load_model(path, device="cuda")
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"not a zip archive")
    with pytest.raises(ArtifactError, match="not a loadable AOTInductor package"):
        load_model(str(broken))


def test_aoti_package_without_our_metadata_is_refused(export_artifact, tmp_path):
    """A .pt2 whose AOTInductor metadata has no ocpdeploy_metadata record (as from plain torch.export +
    AOTInductor) is not ours: one-line error. Made from the PaiNN package with the record removed from
    its metadata files, so that nothing is compiled for this test."""
    package = tmp_path / "plain.pt2"
    removed = 0
    with zipfile.ZipFile(export_artifact("painn_tiny", "aoti")) as source, zipfile.ZipFile(package, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename.endswith("_metadata.json"):
                record = json.loads(data)
                removed += record.pop(AOTI_METADATA_KEY, None) is not None
                data = json.dumps(record).encode()
            target.writestr(entry, data)
    assert removed > 0, "the package keeps its metadata elsewhere; this test no longer removes it"
    with pytest.raises(ArtifactError, match="has no ocpdeploy_metadata; not exported by ocp-deploy"):
        load_model(str(package))


def test_aoti_export_errors_are_one_line(tmp_path, monkeypatch):
    from ocpdeploy.exporter import export_checkpoint
    from ocpdeploy.exporter.write_aoti import CompilerError

    checkpoint = str(CHECKPOINTS / "painn_tiny.pt")
    with pytest.raises(ValueError, match=r"AOTInductor packages end in '\.pt2'"):
        export_checkpoint(checkpoint, str(tmp_path / "x.pt"), format="aoti")
    with pytest.raises(ValueError, match="applies to --format aoti only"):
        export_checkpoint(checkpoint, str(tmp_path / "x.onnx"), format="onnx", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            export_checkpoint(checkpoint, str(tmp_path / "x.pt2"), format="aoti", device="cuda")
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on PATH
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(CompilerError, match="needs a C\\+\\+ compiler"):
        export_checkpoint(checkpoint, str(tmp_path / "x.pt2"), format="aoti")
    assert not (tmp_path / "x.pt2").exists()


def test_cli_aoti_device_error_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU message")
    result = subprocess.run(
        [sys.executable, "-m", "ocpdeploy.exporter.cli", str(CHECKPOINTS / "painn_tiny.pt"), "--format", "aoti", "--device", "cuda", "-o", str(tmp_path / "m.pt2")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["export-model: error: --device cuda: torch sees no CUDA device to compile the package for"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_aoti_cuda_package_matches_reference(tmp_path, reference, atoms):
    from ocpdeploy.exporter import export_checkpoint

    path = str(tmp_path / "painn_tiny_cuda.pt2")
    export_checkpoint(str(CHECKPOINTS / "painn_tiny.pt"), path, format="aoti", device="cuda")
    model = load_model(path, device="cuda")
    data = reference("painn_tiny")
    for name in SINGLE_STRUCTURES:
        result = model.predict(atoms(name))
        assert_parity(result["energy"], result["forces"], data[f"{name}/energy"][0], data[f"{name}/forces"], f"cuda {name}")


def test_aoti_conservative_float64_matches_torchscript(export_artifact, atoms):
    """float64 and the captured backward (-dE/dx and stress) in one package, against the TorchScript artifact."""
    package = load_model(export_artifact("painn_tiny", "aoti", forces="conservative", dtype="float64"))
    script = load_model(export_artifact("painn_tiny", "torchscript", forces="conservative", dtype="float64"))
    assert package.has_stress and package.metadata["dtype"] == "float64"
    for name in ("v2", "v4"):
        got, expected = package.predict(atoms(name)), script.predict(atoms(name))
        assert abs(got["energy"] - expected["energy"]) <= 1e-10 * abs(expected["energy"])
        assert np.abs(got["forces"] - expected["forces"]).max() <= 1e-9 * np.abs(expected["forces"]).max()
        assert np.abs(got["stress"] - expected["stress"]).max() <= 1e-9 * np.abs(expected["stress"]).max()
