"""Exported artifacts (TorchScript and ONNX) against the fairchem-core 1.10.0 reference, via the runtime."""

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import CHECKPOINTS, SINGLE_STRUCTURES, assert_parity, run_python
from ocpdeploy.exporter.checkpoint import load_rewrite
from ocpdeploy.exporter.deployed import PhysicalModel
from ocpdeploy.exporter.probe import probe_atoms
from ocpdeploy.runtime import DeployedCalculator, load_model

DIRECT_MODELS = ["painn_tiny", "gemnet_oc_tiny", "gemnet_oc_tiny_grad"]


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
@pytest.mark.parametrize("checkpoint", DIRECT_MODELS)
def test_artifact_parity_with_reference(export_artifact, reference, atoms, checkpoint, format):
    model = load_model(export_artifact(checkpoint, format))
    data = reference(checkpoint)
    for name in SINGLE_STRUCTURES:
        result = model.predict(atoms(name))
        assert result["forces"].dtype == np.float64 and result["forces"].shape == data[f"{name}/forces"].shape
        assert_parity(result["energy"], result["forces"], data[f"{name}/energy"][0], data[f"{name}/forces"], f"{checkpoint} {format} {name}")


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
@pytest.mark.parametrize("checkpoint", DIRECT_MODELS)
def test_predict_many_equals_single_calls(export_artifact, reference, atoms, checkpoint, format):
    model = load_model(export_artifact(checkpoint, format))
    structures = [atoms(n) for n in SINGLE_STRUCTURES] + [atoms("v2")]
    batched = model.predict_many(structures, batch_size=3)
    for structure, result in zip(structures, batched):
        single = model.predict(structure)
        assert abs(result["energy"] - single["energy"]) <= 1e-5 * abs(single["energy"]) + 1e-4
        np.testing.assert_allclose(result["forces"], single["forces"], rtol=0, atol=1e-4 * max(1.0, np.abs(single["forces"]).max()))
    data = reference(checkpoint)
    vc = model.predict_many([atoms("v2"), atoms("v4")], batch_size=2)
    n2 = int(data["vc/natoms"][0])
    assert_parity(vc[0]["energy"], vc[0]["forces"], data["vc/energy"][0], data["vc/forces"][:n2], "vc[0]")
    assert_parity(vc[1]["energy"], vc[1]["forces"], data["vc/energy"][1], data["vc/forces"][n2:], "vc[1]")


ONNX_THREADS = 2  # more than one intra-op thread: where ScatterND(add) races


def _rattled_cu_bulk():
    from ase.build import bulk

    structure = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    structure.positions += np.random.default_rng(11).normal(scale=0.05, size=structure.positions.shape)
    structure.set_tags(np.ones(len(structure), dtype=int))
    return structure


@pytest.mark.parametrize("checkpoint", DIRECT_MODELS)
def test_onnx_is_deterministic_and_correct_with_two_threads(export_artifact, checkpoint):
    """Race-free aggregation: 2 intra-op threads, run six times, same bits, and equal to TorchScript."""
    model = load_model(export_artifact(checkpoint, "onnx"), threads=ONNX_THREADS)
    assert model.metadata["race_free_aggregation"] is True
    structure = _rattled_cu_bulk()
    expected = load_model(export_artifact(checkpoint, "torchscript")).predict(structure)
    with export_artifact.paused():
        first = model.predict(structure)
        for _ in range(5):
            again = model.predict(structure)
            assert again["energy"] == first["energy"]
            assert np.array_equal(again["forces"], first["forces"])
    assert abs(first["energy"] - expected["energy"]) <= 1e-5 * abs(expected["energy"]) + 1e-3
    assert np.abs(first["forces"] - expected["forces"]).max() <= 2e-4 * np.abs(expected["forces"]).max() + 1e-3


@pytest.mark.parametrize("checkpoint", ["painn_tiny", "gemnet_oc_tiny"])
def test_onnx_reused_memory_gives_a_fresh_sessions_results(export_artifact, checkpoint):
    """The CPU arena hands freed buffers to the next call: sizes shrinking and growing
    from call to call (as in MD or screening) give each structure exactly the bits
    a freshly loaded model computes for it (no stale data read from a reused buffer)."""
    path = export_artifact(checkpoint, "onnx")
    model = load_model(path, threads=ONNX_THREADS)
    bulk = _rattled_cu_bulk()
    with export_artifact.paused():
        for count in (108, 60, 100, 30, 108, 75):
            structure = bulk[:count]
            reused = model.predict(structure)
            fresh = load_model(path, threads=ONNX_THREADS).predict(structure)
            assert reused["energy"] == fresh["energy"], count
            assert np.array_equal(reused["forces"], fresh["forces"]), count


@pytest.mark.parametrize("checkpoint", DIRECT_MODELS)
def test_onnx_graph_has_no_copies_or_racing_scatters(export_artifact, checkpoint):
    """The written graph: no identity Transposes (full copies) and no accumulating ScatterND."""
    import onnx

    from ocpdeploy.exporter.onnx_identity import drop_identity_transposes
    from ocpdeploy.exporter.onnx_scatter import count_racing_scatters

    graph = onnx.load(export_artifact(checkpoint, "onnx"), load_external_data=False)
    assert count_racing_scatters(graph) == 0
    assert drop_identity_transposes(graph) == 0


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
@pytest.mark.parametrize("checkpoint", ["painn_tiny", "gemnet_oc_tiny"])
def test_float64_export_matches_float64_eager(export_artifact, checkpoint, format):
    core, graph, ckpt = load_rewrite(str(CHECKPOINTS / f"{checkpoint}.pt"))
    core = core.double()
    core.requires_grad_(False)
    n = ckpt.normalizers
    physical = PhysicalModel(core, "direct", n.energy_mean, n.energy_std, n.forces_mean, n.forces_std)
    structure = _rattled_cu_bulk()
    positions = torch.tensor(structure.get_positions(wrap=True))
    cell = torch.tensor(structure.cell.array).unsqueeze(0)
    natoms = torch.tensor([len(structure)])
    tags = torch.tensor(structure.get_tags())
    prepared = graph(positions, cell, torch.tensor(structure.pbc).unsqueeze(0), natoms, tags)
    expected = physical(positions, cell, torch.tensor(structure.numbers), torch.zeros(len(structure), dtype=torch.long), prepared)
    result = load_model(export_artifact(checkpoint, format, dtype="float64"), threads=ONNX_THREADS if format == "onnx" else None).predict(structure)
    assert abs(result["energy"] - float(expected["energy"][0])) <= 1e-9 * abs(float(expected["energy"][0]))
    assert np.abs(result["forces"] - expected["forces"].numpy()).max() <= 1e-9 * np.abs(expected["forces"].numpy()).max()


@pytest.mark.parametrize("checkpoint, dtype, relative", [("painn_tiny_grad", "float32", 2e-4), ("painn_tiny", "float64", 1e-9)])
def test_conservative_onnx_matches_conservative_torchscript(export_artifact, atoms, checkpoint, dtype, relative):
    """The backward captured into the ONNX graph gives TorchScript's -dE/dx and stress.

    float32 on PaiNN without a force head, float64 on PaiNN with one (unused):
    the exports the export matrix and the differential tests make anyway."""
    onnx_model = load_model(export_artifact(checkpoint, "onnx", forces="conservative", dtype=dtype), threads=ONNX_THREADS)
    script_model = load_model(export_artifact(checkpoint, "torchscript", forces="conservative", dtype=dtype))
    for name in ("v2", "v4"):
        got, expected = onnx_model.predict(atoms(name)), script_model.predict(atoms(name))
        assert abs(got["energy"] - expected["energy"]) <= relative * 0.1 * abs(expected["energy"]) + 1e-12
        assert np.abs(got["forces"] - expected["forces"]).max() <= relative * np.abs(expected["forces"]).max()
        assert np.abs(got["stress"] - expected["stress"]).max() <= relative * np.abs(expected["stress"]).max()


@pytest.mark.parametrize("checkpoint", ["painn_tiny", "gemnet_oc_tiny"])
def test_conservative_artifact_forces_and_stress(export_artifact, atoms, checkpoint):
    """-dE/dx and stress from the artifact against central finite differences of its own energy."""
    model = load_model(export_artifact(checkpoint, "torchscript", forces="conservative", dtype="float64"))
    assert model.has_stress
    structure = atoms("v2")
    result = model.predict(structure)
    step = 1e-5
    for atom, axis in [(0, 0), (5, 1)]:
        plus, minus = structure.copy(), structure.copy()
        plus.positions[atom, axis] += step
        minus.positions[atom, axis] -= step
        numeric = -(model.predict(plus)["energy"] - model.predict(minus)["energy"]) / (2 * step)
        assert abs(numeric - result["forces"][atom, axis]) < 1e-6 * max(1.0, abs(numeric))
    plus, minus = structure.copy(), structure.copy()
    plus.set_cell(structure.cell.array * (1 + step), scale_atoms=True)
    minus.set_cell(structure.cell.array * (1 - step), scale_atoms=True)
    numeric_trace = (model.predict(plus)["energy"] - model.predict(minus)["energy"]) / (2 * step) / structure.get_volume()
    assert abs(numeric_trace - np.trace(result["stress"])) < 1e-6 * max(1.0, abs(numeric_trace))
    calc_structure = structure.copy()
    calc_structure.calc = DeployedCalculator(model)
    np.testing.assert_allclose(calc_structure.get_stress(voigt=False), result["stress"], rtol=1e-12)
    assert "stress" not in model.predict(atoms("v1"))  # slab: not fully periodic


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_ase_calculator(export_artifact, reference, atoms, format):
    data = reference("painn_tiny")
    structure = atoms("v1")
    structure.calc = DeployedCalculator(export_artifact("painn_tiny", format), device="cpu")
    # The reference reports forces on all atoms; ASE zeroes FixAtoms ones unless asked not to.
    assert_parity(structure.get_potential_energy(), structure.get_forces(apply_constraint=False), data["v1/energy"][0], data["v1/forces"], "calculator")
    with pytest.raises(NotImplementedError, match="--forces conservative"):
        structure.get_stress()


def test_torchscript_loads_without_the_package(export_artifact, reference):
    path = export_artifact("painn_tiny", "torchscript")
    code = f"""
import sys, json, numpy as np, torch
extra = {{"metadata.json": ""}}
module = torch.jit.load({path!r}, _extra_files=extra)
meta = json.loads(extra["metadata.json"])
data = np.load({str(reference.__wrapped__ if hasattr(reference, '__wrapped__') else '')!r} or {str(CHECKPOINTS.parent / 'reference' / 'painn_tiny.npz')!r})
out = module(torch.tensor(data["v2/pos_input"]), torch.tensor([47] * 32), torch.tensor(data["v2/cell_input"][0]), torch.tensor([True, True, True]), torch.ones(32, dtype=torch.long))
assert not any(name.startswith("ocpdeploy") for name in sys.modules), "ocpdeploy was imported"
print(meta["model_kind"], float(out["energy"]), float(abs(out["forces"].numpy() - data["v2/forces"]).max()))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    kind, energy, forces_error = result.stdout.split()
    data = reference("painn_tiny")
    assert kind == "painn"
    assert_parity(float(energy), np.zeros(1), data["v2/energy"][0], np.zeros(1))
    assert float(forces_error) <= 2e-4 * np.abs(data["v2/forces"]).max() + 1e-3


BAD_STRUCTURES = {
    "unknown element": (Atoms("CuOg", positions=[[0, 0, 0], [0, 0, 2.0]]), "outside the model's element range"),
    "NaN positions": (Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 2.0]]), "NaN or inf"),
    "empty structure": (Atoms(), "zero atoms"),
    "singular cell with pbc": (Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.0]], cell=[[3, 0, 0], [3, 0, 0], [0, 0, 3]], pbc=True), "cell is singular"),
}


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
@pytest.mark.parametrize("case", sorted(BAD_STRUCTURES))
def test_bad_structures_raise_one_line_errors(export_artifact, format, case):
    structure, message = BAD_STRUCTURES[case]
    model = load_model(export_artifact("painn_tiny", format))
    with pytest.raises(ValueError, match=message) as error:
        model.predict(structure)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((torch.zeros(4, 2), torch.ones(4, dtype=torch.long), torch.eye(3), torch.ones(3, dtype=torch.bool), torch.zeros(4, dtype=torch.long)), "positions must have shape"),
        ((torch.zeros(4, 3), torch.ones(3, dtype=torch.long), torch.eye(3), torch.ones(3, dtype=torch.bool), torch.zeros(4, dtype=torch.long)), "atomic_numbers must have shape"),
        ((torch.zeros(4, 3), torch.ones(4, dtype=torch.long), torch.eye(2), torch.ones(3, dtype=torch.bool), torch.zeros(4, dtype=torch.long)), "cell must have shape"),
        ((torch.zeros(4, 3), torch.ones(4, dtype=torch.long), torch.eye(3), torch.ones(3, dtype=torch.bool), torch.zeros(5, dtype=torch.long)), "tags must have shape"),
    ],
)
def test_torchscript_forward_rejects_wrong_shapes(export_artifact, arguments, message):
    """What a C++ host passing wrong shapes sees: a one-line error from the artifact itself."""
    module = torch.jit.load(export_artifact("painn_tiny", "torchscript"))
    with pytest.raises(Exception, match=message):
        module(*arguments)


def test_metadata_is_complete(export_artifact):
    for format in ("torchscript", "onnx"):
        metadata = load_model(export_artifact("painn_tiny", format)).metadata
        assert metadata["model_kind"] == "painn" and metadata["cutoff"] == 6.0 and metadata["max_neighbors"] == 12
        assert metadata["units"]["energy"] == "eV" and metadata["dtype"] == "float32"
        assert metadata["normalizers"]["energy_std"] == pytest.approx(2.887317180633545)
        assert len(metadata["checkpoint_sha256"]) == 64 and metadata["torch_version"] == torch.__version__
