"""Plain ONNX Runtime, fed only the structures, equals the TorchScript artifact of the same checkpoint.

No code of this project runs on the ONNX side: an ``onnxruntime.InferenceSession``
gets the six structure inputs (positions, atomic_numbers, cell, pbc, tags,
natoms) and nothing else; the artifact builds its neighbour graph, triplets
and quadruplets itself. The truth is the TorchScript artifact's
``forward_batch`` (checked against fairchem-core itself in
``test_artifacts.py``). Structures: a single bulk cell, a batch of several
structures with mixed pbc, a molecule without pbc, a lone atom (no edges), a
1-atom cell with many periodic images, and a slab with tags 0/1/2.
"""

import json
from typing import Dict, List

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule

CHECKPOINTS = ("painn_tiny", "gemnet_oc_tiny", "gemnet_oc_tiny_grad")
PROGRAM_INPUTS = ["positions", "atomic_numbers", "cell", "pbc", "tags", "natoms"]
# float32: two float32 programs that sum in different orders.
ENERGY_BOUNDS = (1.0e-5, 1.0e-4)
FORCES_BOUNDS = (1.0e-4, 1.0e-4)


def _bulk() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    atoms.rattle(0.05, seed=3)
    atoms.wrap()
    atoms.set_tags([1] * len(atoms))
    return atoms


def _slab() -> Atoms:
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=7.0, a=3.61)
    slab.set_tags([0] * 4 + [1] * 8)
    add_adsorbate(slab, "O", 1.6, "fcc")
    slab.set_tags(list(slab.get_tags()[:-1]) + [2])
    slab.pbc = (True, True, False)
    slab.rattle(0.03, seed=5)
    slab.wrap()
    return slab


def _molecule() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    atoms.set_tags([2] * len(atoms))
    return atoms


def _lone_atom() -> Atoms:
    atoms = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], tags=[1])
    atoms.center(vacuum=5.0)
    return atoms


def _many_images() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61)  # 1 atom, a 2.55 A triclinic cell: several images per axis
    atoms.set_tags([0])
    return atoms


CASES = {
    "bulk": [_bulk()],
    "batch": [_slab(), _lone_atom(), _bulk(), _molecule()],
    "molecule": [_molecule()],
    "lone_atom": [_lone_atom()],
    "many_images": [_many_images()],
    "slab_tags_012": [_slab()],
}


def _stack(structures: List[Atoms], dtype: np.dtype) -> Dict[str, np.ndarray]:
    return {
        "positions": np.concatenate([a.positions for a in structures]).astype(dtype),
        "atomic_numbers": np.concatenate([a.numbers for a in structures]).astype(np.int64),
        "cell": np.stack([a.cell.array for a in structures]).astype(dtype),
        "pbc": np.stack([a.pbc for a in structures]).astype(bool),
        "tags": np.concatenate([a.get_tags() for a in structures]).astype(np.int64),
        "natoms": np.array([len(a) for a in structures], dtype=np.int64),
    }


@pytest.fixture(scope="module")
def sessions(export_artifact):
    """checkpoint -> (plain ONNX Runtime session, TorchScript module)."""
    result = {}
    for checkpoint in CHECKPOINTS:
        onnx_path = export_artifact(checkpoint, "onnx")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        result[checkpoint] = (session, torch.jit.load(export_artifact(checkpoint, "torchscript")))
    return result


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_plain_onnxruntime_on_the_structure_alone_equals_torchscript(sessions, checkpoint, case):
    session, scripted = sessions[checkpoint]
    assert [i.name for i in session.get_inputs()] == PROGRAM_INPUTS
    feeds = _stack(CASES[case], np.float32)
    energy, forces = session.run(["energy", "forces"], feeds)
    expected = scripted.forward_batch(*(torch.from_numpy(feeds[name]) for name in PROGRAM_INPUTS))
    expected_energy = expected["energy"].detach().double().numpy()
    expected_forces = expected["forces"].detach().double().numpy()
    assert energy.shape == expected_energy.shape and forces.shape == expected_forces.shape
    scale = float(np.abs(expected_forces).max(initial=0.0))
    for b, (got, want) in enumerate(zip(energy, expected_energy)):
        assert abs(got - want) <= ENERGY_BOUNDS[0] * abs(want) + ENERGY_BOUNDS[1], f"{case} structure {b}: {got} vs {want}"
    assert float(np.abs(forces - expected_forces).max(initial=0.0)) <= FORCES_BOUNDS[0] * scale + FORCES_BOUNDS[1]


def test_onnx_artifact_declares_its_structure_inputs(export_artifact):
    """The metadata a host reads names the six inputs and their sizes; the graph has no prepared-graph input."""
    model = onnx.load(export_artifact("painn_tiny", "onnx"))
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["inputs"] == PROGRAM_INPUTS
    assert props["input_shapes"]["positions"]["shape"] == ["atoms", 3]
    assert props["input_shapes"]["pbc"]["shape"] == ["structures", 3]
    assert [i.name for i in model.graph.input] == PROGRAM_INPUTS


def test_onnx_runtime_loads_the_artifact_without_warnings(export_artifact, capfd):
    """No warning at session creation (ONNX Runtime's default log level): in particular no "Removing
    initializer ... It is not used by any node and should be removed from the model"."""
    path = export_artifact("gemnet_oc_tiny", "onnx")
    capfd.readouterr()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 2  # warnings and above: what a plain session prints
    onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    captured = capfd.readouterr()
    assert "should be removed from the model" not in captured.err + captured.out
    assert "[W:onnxruntime" not in captured.err + captured.out and "[E:onnxruntime" not in captured.err + captured.out
