"""More variants against the real fairchem-core 1.10.0 code (tests/data/generate_reference.py).

GemNet-OC with ``spherical_harmonics`` sbf, with the published graph
parameters (cutoffs 12 A, caps 30/8/20/1000), gradient forces with all four
extra interactions and quadruplets; PaiNN with the published graph (12 A,
cap 50). Eager rewrite, TorchScript and ONNX (2 threads) against the
reference energies and forces, within the float32 parity bounds, and the
graph counts / edge lists against the reference's own.
"""

import json

import numpy as np
import pytest
import torch

from conftest import CHECKPOINTS, REFERENCE, STRUCTURES, assert_main_graph_matches, assert_parity
from ocpdeploy.exporter.checkpoint import load_rewrite
from ocpdeploy.exporter.deployed import PhysicalModel
from ocpdeploy.runtime import load_model
from ocpdeploy.runtime.keys import FORCES_DIRECT, FORCES_GRADIENT
from ocpdeploy.runtime.radius_graph import radius_graph_pbc


GENERATED = json.loads((REFERENCE / "generated.json").read_text())["models"]
ONNX_THREADS = 2
# graph_stats key -> the graph tensor whose last dimension counts it
COUNT_KEYS = {
    "main": "main_edge_index", "a2a": "a2a_edge_index", "a2ee2a": "a2ee2a_edge_index",
    "qint": "qint_edge_index", "e2e": "trip_e2e_in", "a2e": "trip_a2e_in", "e2a": "trip_e2a_in",
    "quad": "quad_out",
}


def _cases():
    return [(model, structure) for model, entry in sorted(GENERATED.items()) for structure in sorted(entry["outputs"])]


def _inputs(data, structure):
    from ase.io import read

    atoms = read(STRUCTURES / f"{structure}.extxyz")
    return atoms, {
        "positions": torch.tensor(data[f"{structure}/pos_input"]),
        "cell": torch.tensor(data[f"{structure}/cell_input"]).reshape(1, 3, 3),
        "pbc": torch.tensor(atoms.pbc).reshape(1, 3),
        "natoms": torch.tensor([len(atoms)]),
        "atomic_numbers": torch.tensor(atoms.numbers),
        "tags": torch.tensor(atoms.get_tags()),
    }


@pytest.fixture(scope="module")
def rewrites():
    cache = {}

    def get(model):
        if model not in cache:
            core, graph, checkpoint = load_rewrite(str(CHECKPOINTS / f"{model}.pt"))
            core.requires_grad_(False)
            forces = FORCES_DIRECT if GENERATED[model]["model_attributes"].get("direct_forces") else FORCES_GRADIENT
            n = checkpoint.normalizers
            cache[model] = (PhysicalModel(core, forces, n.energy_mean, n.energy_std, n.forces_mean, n.forces_std), graph)
        return cache[model]

    return get


def test_every_generated_model_has_cases():
    assert set(GENERATED) == {"gemnet_oc_sph", "gemnet_oc_pubgraph", "gemnet_oc_grad_quad", "painn_pubgraph"}
    for model, entry in GENERATED.items():
        assert len(entry["outputs"]) >= 2, f"{model}: too few structures without neighbour-selection ties"


@pytest.mark.parametrize("model, structure", _cases())
def test_eager_rewrite_matches_reference(rewrites, model, structure):
    data = dict(np.load(REFERENCE / f"{model}.npz"))
    physical, graph = rewrites(model)
    _, x = _inputs(data, structure)
    prepared = graph(x["positions"], x["cell"], x["pbc"], x["natoms"], x["tags"])
    batch = torch.zeros(len(x["positions"]), dtype=torch.long)
    out = physical(x["positions"], x["cell"], x["atomic_numbers"], batch, prepared)
    assert_parity(float(out["energy"][0]), out["forces"].detach().numpy(), data[f"{structure}/energy"][0], data[f"{structure}/forces"], f"{model} eager {structure}")


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
@pytest.mark.parametrize("model", sorted(GENERATED))
def test_artifacts_match_reference(export_artifact, model, format):
    data = dict(np.load(REFERENCE / f"{model}.npz"))
    artifact = load_model(export_artifact(model, format), threads=ONNX_THREADS if format == "onnx" else None)
    for structure in sorted(GENERATED[model]["outputs"]):
        atoms, _ = _inputs(data, structure)
        result = artifact.predict(atoms)
        assert_parity(result["energy"], result["forces"], data[f"{structure}/energy"][0], data[f"{structure}/forces"], f"{model} {format} {structure}")


@pytest.mark.parametrize("model, structure", _cases())
def test_graphs_match_reference(rewrites, model, structure):
    data = dict(np.load(REFERENCE / f"{model}.npz"))
    _, x = _inputs(data, structure)
    attributes = GENERATED[model]["model_attributes"]
    if GENERATED[model]["model"] == "painn":
        edge_index, cell_offsets = radius_graph_pbc(
            x["positions"], x["cell"][0], x["pbc"][0], float(attributes["cutoff"]), int(attributes["max_neighbors"])
        )
        np.testing.assert_array_equal(edge_index.numpy(), data[f"{structure}/radius_graph_edge_index"])
        np.testing.assert_array_equal(cell_offsets.numpy(), data[f"{structure}/radius_graph_cell_offsets"])
        return
    _, graph = rewrites(model)
    prepared = graph(x["positions"], x["cell"], x["pbc"], x["natoms"], x["tags"])
    assert_main_graph_matches(prepared, data, structure)
    stats = GENERATED[model]["graph_stats"][structure]
    counts = {key: int(prepared[COUNT_KEYS[key]].shape[-1]) for key in stats if COUNT_KEYS[key] in prepared}
    assert counts == {key: stats[key] for key in counts}
    assert set(counts) == set(stats), f"counts not available for {set(stats) - set(counts)}"
