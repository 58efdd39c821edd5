"""The graph-only ONNX program (``exporter/graph_program.py``) equals the scripted graph module it was exported from.

Benchmarks price the graph construction inside ONNX artifacts with this
program, so it must compute the same graph: every output (edge_index,
cell_offsets, edge_slot, edge_kmax) equal to the scripted PaiNN graph module's,
bit for bit, on a bulk cell where the neighbour cap binds, a slab, a molecule
without pbc, a lone atom without edges, and the four as one batch. One
ONNX export (PaiNN's graph, a cap below the bulk's neighbour count).
"""

import numpy as np
import onnxruntime
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule

from ocpdeploy.exporter.graph_program import write_graph_onnx
from ocpdeploy.runtime.graphs import build_graph
from ocpdeploy.runtime.structures import atoms_to_arrays, stack_structures

# Cu fcc has 12 neighbours within 2.6 A and 42 within 5 A: a cap of 20 binds.
METADATA = {"model_kind": "painn", "graph": {"cutoff": 5.0, "max_neighbors": 20}, "dtype": "float32"}
GRAPH_INPUTS = ("positions", "cell", "pbc", "natoms", "tags")  # the graph module's argument order
THREADS = 2  # more than one, as the runtime runs artifacts
UNCAPPED = 1000  # a neighbour cap no atom here reaches


def _bulk() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=3)
    atoms.set_tags([1] * len(atoms))
    return atoms


def _slab() -> Atoms:
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=7.0, a=3.92)
    add_adsorbate(slab, "O", 1.6, "fcc")
    slab.set_tags([0] * 4 + [1] * 8 + [2])
    slab.pbc = (True, True, False)
    slab.rattle(0.03, seed=5)
    return slab


def _molecule() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    return atoms


def _lone_atom() -> Atoms:
    atoms = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 10.0, pbc=False)
    return atoms


CASES = {
    "bulk": [_bulk()],
    "slab": [_slab()],
    "molecule": [_molecule()],
    "lone_atom": [_lone_atom()],
    "batch": [_bulk(), _slab(), _molecule(), _lone_atom()],
}


@pytest.fixture(scope="module")
def graph_session(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("graph_program") / "painn_graph.onnx")
    names = write_graph_onnx(METADATA, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"]), names


@pytest.fixture(scope="module")
def scripted_graph():
    return torch.jit.script(build_graph(METADATA["model_kind"], METADATA["graph"]))


def _feeds(structures):
    stacked = stack_structures([atoms_to_arrays(atoms) for atoms in structures])
    stacked["positions"] = stacked["positions"].astype(np.float32)
    stacked["cell"] = stacked["cell"].astype(np.float32)
    return stacked


def test_outputs_are_the_graph_modules_inputs_in_order(graph_session, scripted_graph):
    session, names = graph_session
    assert names == list(scripted_graph.input_names)
    assert [output.name for output in session.get_outputs()] == names


@pytest.mark.parametrize("case", list(CASES))
def test_graph_only_program_equals_the_scripted_graph_module(graph_session, scripted_graph, case):
    session, names = graph_session
    feeds = _feeds(CASES[case])
    inputs = {i.name for i in session.get_inputs()}
    outputs = dict(zip(names, session.run(names, {name: array for name, array in feeds.items() if name in inputs})))
    with torch.no_grad():
        expected = scripted_graph(*[torch.from_numpy(feeds[name]) for name in GRAPH_INPUTS])
    for name in names:
        assert outputs[name].shape == tuple(expected[name].shape), name
        np.testing.assert_array_equal(outputs[name], expected[name].numpy(), err_msg=name)
    edges = outputs["edge_index"].shape[1]
    if case == "lone_atom":
        assert edges == 0
    else:
        assert edges > 0
    if case in ("bulk", "batch"):
        # The cap binds: without it the same structures have more edges.
        uncapped = build_graph(METADATA["model_kind"], {**METADATA["graph"], "max_neighbors": UNCAPPED})
        with torch.no_grad():
            assert edges < uncapped(*[torch.from_numpy(feeds[name]) for name in GRAPH_INPUTS])["edge_index"].shape[1]
