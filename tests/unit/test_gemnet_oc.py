"""GemNet-OC rewrite against the fairchem-core 1.10 reference fixtures.

Graphs (edge sets and counts), raw energies and forces (direct and gradient),
TorchScript parity, and the defined behaviour for structures without
quadruplets or neighbours.
"""

import json
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch

from conftest import assert_main_graph_matches
from ocpdeploy.exporter.models.gemnet_oc import build_gemnet_oc
from ocpdeploy.runtime.graph_gemnet_oc import GemNetOCGraph

DATA = Path(__file__).resolve().parents[1] / "data"
MODELS = ["gemnet_oc_tiny", "gemnet_oc_tiny_grad"]
SINGLE = ["v1", "v2", "v3", "v4"]
MODULE_PREFIX = "module."

# manifest.json -> models.<m>.graph_stats (reference counts per structure).
GRAPH_STATS: Dict[str, Dict[str, Dict[str, int]]] = {
    "gemnet_oc_tiny": {
        "v1": dict(main=294, a2a=1390, a2ee2a=174, qint=52, e2e=2742, a2e=1590, e2a=1590, quad=4755),
        "v2": dict(main=316, a2a=1600, a2ee2a=192, qint=128, e2e=2830, a2e=1705, e2a=1705, quad=9670),
        "v3": dict(main=12, a2a=12, a2ee2a=12, qint=12, e2e=24, a2e=24, e2a=24, quad=24),
        "v4": dict(main=30, a2a=150, a2ee2a=18, qint=12, e2e=270, a2e=162, e2a=162, quad=928),
    },
    "gemnet_oc_tiny_grad": {
        "v1": dict(main=294, a2ee2a=174, e2e=2742, a2e=1590, e2a=1590),
        "v2": dict(main=316, a2ee2a=192, e2e=2830, a2e=1705, e2a=1705),
        "v3": dict(main=12, a2ee2a=12, e2e=24, a2e=24, e2a=24),
        "v4": dict(main=30, a2ee2a=18, e2e=270, a2e=162, e2a=162),
    },
}
COUNT_KEYS = {
    "main": "main_edge_index", "a2a": "a2a_edge_index", "a2ee2a": "a2ee2a_edge_index",
    "qint": "qint_edge_index", "e2e": "trip_e2e_in", "a2e": "trip_a2e_in", "e2a": "trip_e2a_in",
    "quad": "quad_out",
}


def _count(graph: Dict[str, torch.Tensor], key: str) -> int:
    return int(graph[COUNT_KEYS[key]].shape[-1])


# --------------------------------------------------------------------------- fixtures
def _load(name: str):
    checkpoint = torch.load(DATA / "checkpoints" / f"{name}.pt", weights_only=True)
    core, graph = build_gemnet_oc(checkpoint["config"]["model_attributes"])
    state_dict = {}
    for key, value in checkpoint["state_dict"].items():
        while key.startswith(MODULE_PREFIX):
            key = key[len(MODULE_PREFIX):]
        state_dict[key] = value
    for key, value in checkpoint["scale_dict"].items():
        state_dict[f"{key}.scale_factor"] = torch.tensor(float(value) if value != 0 else 1.0)
    core.load_state_dict(state_dict, strict=True)
    std = float(checkpoint["normalizers"]["target"]["std"])
    mean = float(checkpoint["normalizers"]["target"]["mean"])
    return core.eval(), graph, checkpoint["config"]["model_attributes"], (mean, std)


@pytest.fixture(scope="module")
def models():
    return {name: _load(name) for name in MODELS}


@pytest.fixture(scope="module")
def structures():
    return json.loads((DATA / "structures" / "structures.json").read_text())


@pytest.fixture(scope="module")
def references():
    return {name: np.load(DATA / "reference" / f"{name}.npz") for name in MODELS}


def _inputs(structures, members: List[str]):
    """Batched model inputs of the listed structures (positions as in the npz)."""
    positions, cells, pbc, natoms, numbers, tags = [], [], [], [], [], []
    for member in members:
        entry = structures[member]
        positions.append(torch.tensor(entry["positions"], dtype=torch.float64))
        cells.append(torch.tensor(entry["cell"], dtype=torch.float32))
        pbc.append(entry["pbc"])
        natoms.append(len(entry["numbers"]))
        numbers += entry["numbers"]
        tags += entry["tags"]
    return positions, torch.stack(cells), torch.tensor(pbc), torch.tensor(natoms), torch.tensor(numbers), torch.tensor(tags)


def _wrapped_inputs(structures, references, members: List[str]):
    """Like ``_inputs`` with the exact float32 positions the reference used."""
    ref = references["gemnet_oc_tiny"]
    _, cell, pbc, natoms, numbers, tags = _inputs(structures, members)
    positions = torch.cat([torch.tensor(ref[f"{m}/pos_input"]) for m in members])
    cell = torch.cat([torch.tensor(ref[f"{m}/cell_input"]) for m in members])
    batch = torch.repeat_interleave(torch.arange(len(members)), natoms)
    return positions, cell, pbc, natoms, numbers, tags, batch


def _run(core, graph_module, attrs, positions, cell, pbc, natoms, numbers, tags, batch):
    graph = graph_module(positions, cell, pbc, natoms, tags)
    direct = bool(attrs["direct_forces"])
    positions = positions.clone().requires_grad_(not direct)
    energy, forces = core.energy_and_forces(positions, cell, numbers, batch, graph)
    if not direct:
        forces = -torch.autograd.grad(energy.sum(), positions)[0]
    return energy.detach(), forces.detach(), graph


def _assert_close(energy_raw, forces_raw, ref_energy_raw, ref_forces_raw, normalizer, label):
    mean, std = normalizer
    energy, ref_energy = energy_raw.numpy() * std + mean, ref_energy_raw * std + mean
    forces, ref_forces = forces_raw.numpy() * std, ref_forces_raw * std
    energy_error = np.abs(energy - ref_energy)
    assert np.all(energy_error <= 1e-5 * np.abs(ref_energy) + 1e-3), f"{label}: energy error {energy_error}"
    force_error = np.abs(forces - ref_forces).max()
    assert force_error <= 2e-4 * np.abs(ref_forces).max() + 1e-3, f"{label}: force error {force_error}"


# --------------------------------------------------------------------------- graphs
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("member", SINGLE)
def test_graphs_match_reference(models, structures, references, name, member):
    core, graph_module, attrs, _ = models[name]
    positions, cell, pbc, natoms, numbers, tags, _ = _wrapped_inputs(structures, references, [member])
    graph = graph_module(positions, cell, pbc, natoms, tags)
    assert_main_graph_matches(graph, references[name], member)
    counts = {key: _count(graph, key) for key in GRAPH_STATS[name][member]}
    assert counts == GRAPH_STATS[name][member]
    assert list(graph) == graph_module.input_names
    for key, value in graph.items():
        expected_dtype = positions.dtype if key.endswith("cell_offsets") else torch.long
        assert value.dtype == expected_dtype, key


def test_symmetric_main_graph(models, structures, references):
    _, graph_module, _, _ = models["gemnet_oc_tiny"]
    positions, cell, pbc, natoms, _, tags, _ = _wrapped_inputs(structures, references, ["v4"])
    graph = graph_module(positions, cell, pbc, natoms, tags)
    edge_index, offsets, id_swap = graph["main_edge_index"], graph["main_cell_offsets"], graph["id_swap"]
    assert torch.equal(edge_index[:, id_swap], edge_index.flip(0))
    assert torch.equal(offsets[id_swap], -offsets)
    assert torch.equal(id_swap[id_swap], torch.arange(id_swap.shape[0]))


# Every graph index the core uses as the destination of an ``index_add``
# (ONNX ScatterND with add reduction, which ONNX Runtime CPU only sums
# deterministically with several threads when the indices are sorted):
# (key, row) -> where it is aggregated.
AGGREGATION_DESTINATIONS = {
    ("main_edge_index", 1): "AtomUpdateBlock / OutputBlock / direct forces: main edges -> target atoms",
    ("trip_e2e_out", None): "trip_interaction: triplets -> main edges",
    ("quad_out", None): "quad_interaction: quadruplets -> main edges",
    ("trip_a2e_out", None): "atom_edge_interaction: triplets -> main edges",
    ("trip_e2a_out", None): "edge_atom_interaction: triplets -> a2ee2a edges",
    ("a2ee2a_edge_index", 1): "edge_atom_interaction: a2ee2a edges -> target atoms",
    ("a2a_edge_index", 1): "atom_interaction: a2a edges -> target atoms",
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("members", [["v1"], ["v2"], ["v2", "v4"]], ids=["v1", "v2", "batch_v2_v4"])
def test_aggregation_destinations_are_sorted(models, structures, references, name, members):
    _, graph_module, _, _ = models[name]
    positions, cell, pbc, natoms, _, tags, _ = _wrapped_inputs(structures, references, members)
    graph = graph_module(positions, cell, pbc, natoms, tags)
    checked = []
    for (key, row), where in AGGREGATION_DESTINATIONS.items():
        if key not in graph:
            continue
        index = graph[key] if row is None else graph[key][row]
        assert index.numel() > 0, key
        assert bool((index[1:] >= index[:-1]).all()), f"{key}[{row}] ({where}) is not sorted"
        checked.append(key)
    if name == "gemnet_oc_tiny":  # every interaction on: all destinations exist
        assert len(checked) == len(AGGREGATION_DESTINATIONS)
    else:
        assert checked == ["main_edge_index", "trip_e2e_out", "trip_a2e_out", "trip_e2a_out", "a2ee2a_edge_index"]
    # The sorted main graph keeps its counter edges consistent.
    edge_index, offsets, id_swap = graph["main_edge_index"], graph["main_cell_offsets"], graph["id_swap"]
    assert torch.equal(edge_index[:, id_swap], edge_index.flip(0))
    assert torch.equal(offsets[id_swap], -offsets)
    assert torch.equal(id_swap[id_swap], torch.arange(id_swap.shape[0]))
    # Triplets share the target atom of their out edge (in-edge b->a, out-edge c->a).
    main_target = edge_index[1]
    assert torch.equal(main_target[graph["trip_e2e_in"]], main_target[graph["trip_e2e_out"]])


# --------------------------------------------------------------------------- energies and forces
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("member", SINGLE)
def test_single_structures_match_reference(models, structures, references, name, member):
    core, graph_module, attrs, normalizer = models[name]
    inputs = _wrapped_inputs(structures, references, [member])
    energy, forces, _ = _run(core, graph_module, attrs, *inputs)
    ref = references[name]
    _assert_close(energy, forces, ref[f"{member}/energy_raw"], ref[f"{member}/forces_raw"], normalizer,
                  f"{name}/{member}")


@pytest.mark.parametrize("name", MODELS)
def test_batch_vc_matches_reference(models, structures, references, name):
    core, graph_module, attrs, normalizer = models[name]
    inputs = _wrapped_inputs(structures, references, ["v2", "v4"])
    energy, forces, _ = _run(core, graph_module, attrs, *inputs)
    ref = references[name]
    _assert_close(energy, forces, ref["vc/energy_raw"], ref["vc/forces_raw"], normalizer, f"{name}/vc")


@pytest.mark.parametrize("name", MODELS)
def test_batch_vb_uses_each_structures_pbc(models, structures, references, name):
    """vb = [v1 (pbc T,T,F), v4 (T,T,T)]: the reference applies v1's pbc to v4.

    We apply each structure's own pbc, so the v1 member matches the stored vb
    values, and the v4 member matches v4 alone instead.
    """
    core, graph_module, attrs, normalizer = models[name]
    inputs = _wrapped_inputs(structures, references, ["v1", "v4"])
    energy, forces, _ = _run(core, graph_module, attrs, *inputs)
    ref = references[name]
    n1 = len(structures["v1"]["numbers"])
    _assert_close(energy[:1], forces[:n1], ref["vb/energy_raw"][:1], ref["vb/forces_raw"][:n1], normalizer,
                  f"{name}/vb[v1]")
    _assert_close(energy[1:], forces[n1:], ref["v4/energy_raw"], ref["v4/forces_raw"], normalizer,
                  f"{name}/vb[v4]")


# --------------------------------------------------------------------------- TorchScript
def _script(module):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        return torch.jit.script(module)


@pytest.mark.parametrize("name", MODELS)
def test_torchscript_matches_eager(models, structures, references, name):
    core, graph_module, attrs, _ = models[name]
    scripted_core = _script(core)
    scripted_graph = _script(graph_module)
    positions, cell, pbc, natoms, numbers, tags, batch = _wrapped_inputs(structures, references, ["v2", "v4"])
    eager_graph = graph_module(positions, cell, pbc, natoms, tags)
    script_graph = scripted_graph(positions, cell, pbc, natoms, tags)
    assert list(script_graph) == list(eager_graph)
    for key in eager_graph:
        assert torch.equal(script_graph[key], eager_graph[key]), key
    eager = core.energy_and_forces(positions, cell, numbers, batch, eager_graph)
    script = scripted_core.energy_and_forces(positions, cell, numbers, batch, script_graph)
    torch.testing.assert_close(script[0], eager[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(script[1], eager[1], rtol=1e-6, atol=1e-6)
    if not attrs["direct_forces"]:
        assert eager[1].shape == (0, 3)
        pos = positions.clone().requires_grad_(True)
        energy = scripted_core.energy_and_forces(pos, cell, numbers, batch, script_graph)[0]
        grad = torch.autograd.grad(energy.sum(), pos)[0]
        ref = references[name]
        ref_forces = np.concatenate([ref["v2/forces_raw"], ref["v4/forces_raw"]])
        assert np.abs(-grad.numpy() - ref_forces).max() < 1e-4


def _set_edge_chunks(core, chunk_elements):
    for module in core.modules():
        if hasattr(module, "edge_chunk_elements"):
            module.edge_chunk_elements = chunk_elements


# Floats per chunk: a few rows per chunk for every width of the tiny models (ragged last chunks).
SMALL_CHUNK_ELEMENTS = 1000


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "torchscript"])
def test_edge_chunks_and_one_pass_match_reference(models, structures, references, name, scripted):
    """The row-local edge updates in small chunks (many, ragged; the CPU path on large
    structures) and in one pass (edge_chunk_elements = 0: the ONNX path), direct and
    gradient forces, against the reference values of the batch v2 + v4."""
    import copy

    core, graph_module, attrs, normalizer = models[name]
    ref = references[name]
    inputs = _wrapped_inputs(structures, references, ["v2", "v4"])
    for chunk_elements in (SMALL_CHUNK_ELEMENTS, 0):
        variant = copy.deepcopy(core)
        _set_edge_chunks(variant, chunk_elements)
        if scripted:
            variant = _script(variant)
        energy, forces, _ = _run(variant, graph_module, attrs, *inputs)
        _assert_close(energy, forces, ref["vc/energy_raw"], ref["vc/forces_raw"], normalizer,
                      f"{name}/chunks={chunk_elements}")


# --------------------------------------------------------------------------- edge cases
def test_no_quadruplets_gives_zero_quadruplet_contribution(models, structures, references):
    core, graph_module, attrs, _ = models["gemnet_oc_tiny"]
    positions, cell, pbc, natoms, numbers, tags, batch = _wrapped_inputs(structures, references, ["v1"])
    tags = torch.zeros_like(tags)
    graph = graph_module(positions, cell, pbc, natoms, tags)
    assert graph["qint_edge_index"].shape == (2, 0)
    assert graph["quad_out"].shape == (0,)
    energy, forces = core.energy_and_forces(positions, cell, numbers, batch, graph)
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()
    # The quadruplet weights cannot matter when there are no quadruplets.
    quad = core.int_blocks[0].quad_interaction
    saved = quad.up_projection_ca.linear.weight.detach().clone()
    with torch.no_grad():
        quad.up_projection_ca.linear.weight.add_(1.0)
        quad.up_projection_ac.linear.weight.add_(1.0)
        energy2, forces2 = core.energy_and_forces(positions, cell, numbers, batch, graph)
        quad.up_projection_ca.linear.weight.copy_(saved)
        quad.up_projection_ac.linear.weight.sub_(1.0)
    torch.testing.assert_close(energy2, energy, rtol=0, atol=0)
    torch.testing.assert_close(forces2, forces, rtol=0, atol=0)


def test_no_quadruplet_member_equals_batch_value(models, structures, references):
    """v2 with all tags 0 alone gives what it gives inside a batch with v4."""
    core, graph_module, attrs, _ = models["gemnet_oc_tiny"]
    positions, cell, pbc, natoms, numbers, tags, batch = _wrapped_inputs(structures, references, ["v2", "v4"])
    n2 = len(structures["v2"]["numbers"])
    tags = tags.clone()
    tags[:n2] = 0
    energy_batch, forces_batch, _ = _run(core, graph_module, attrs, positions, cell, pbc, natoms, numbers, tags, batch)
    energy_alone, forces_alone, _ = _run(
        core, graph_module, attrs, positions[:n2], cell[:1], pbc[:1], natoms[:1], numbers[:n2], tags[:n2], batch[:n2]
    )
    torch.testing.assert_close(energy_alone, energy_batch[:1], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(forces_alone, forces_batch[:n2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_isolated_atom_is_finite(models, name):
    core, graph_module, attrs, _ = models[name]
    positions = torch.tensor([[1.0, 1.0, 1.0], [9.0, 9.0, 9.0], [9.0, 9.0, 10.1]])
    cell = 20.0 * torch.eye(3).unsqueeze(0)
    pbc = torch.tensor([[False, False, False]])
    natoms = torch.tensor([3])
    numbers = torch.tensor([29, 6, 8])
    tags = torch.tensor([1, 2, 2])
    batch = torch.zeros(3, dtype=torch.long)
    energy, forces, graph = _run(core, graph_module, attrs, positions, cell, pbc, natoms, numbers, tags, batch)
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()
    assert forces.shape == (3, 3)
    assert torch.all(graph["main_edge_index"] != 0)  # atom 0 has no neighbour
    lonely = _run(core, graph_module, attrs, positions[:1], cell, pbc, torch.tensor([1]), numbers[:1], tags[:1],
                  batch[:1])
    assert lonely[2]["main_edge_index"].shape == (2, 0)
    assert torch.isfinite(lonely[0]).all() and torch.isfinite(lonely[1]).all()


# --------------------------------------------------------------------------- options
BASE_ATTRIBUTES = dict(
    num_spherical=3, num_radial=4, num_blocks=1, emb_size_atom=4, emb_size_edge=4, emb_size_trip_in=2,
    emb_size_trip_out=2, emb_size_quad_in=2, emb_size_quad_out=2, emb_size_aint_in=2, emb_size_aint_out=2,
    emb_size_rbf=2, emb_size_cbf=2, emb_size_sbf=2, num_before_skip=1, num_after_skip=1, num_concat=1,
    num_atom=1, num_output_afteratom=1, cutoff=5.0, max_neighbors=8,
)


@pytest.mark.parametrize(
    "option, match",
    [
        (dict(activation="relu"), "activation"),
        (dict(rbf={"name": "spherical_bessel"}), "rbf"),
        (dict(envelope={"name": "exponential"}), "envelope"),
        (dict(cbf={"name": "gaussian"}), "cbf"),
        (dict(sbf={"name": "gaussian_outer"}), "sbf"),
        (dict(scale_basis=True), "scale_basis"),
        (dict(direct_forces=True, forces_coupled=True), "forces_coupled"),
    ],
)
def test_unsupported_options_raise(option, match):
    with pytest.raises(ValueError, match=match):
        build_gemnet_oc({**BASE_ATTRIBUTES, **option})


def test_cutoff_fallbacks():
    graph = GemNetOCGraph(cutoff=5.0, cutoff_aint=9.0, max_neighbors=8, max_neighbors_aint=99,
                          edge_atom_interaction=True)
    # atom_interaction off: aint falls back to max of the others.
    assert (graph.cutoff_aint, graph.max_neighbors_aint) == (5.0, 8)
    assert (graph.cutoff_qint, graph.max_neighbors_qint) == (5.0, 8)
    graph = GemNetOCGraph(cutoff=5.0, cutoff_aint=9.0, max_neighbors=8, max_neighbors_aint=99,
                          atom_interaction=True)
    assert (graph.cutoff_aint, graph.max_neighbors_aint) == (9.0, 99)


@pytest.mark.parametrize("sbf", ["spherical_harmonics", "legendre_outer"])
@pytest.mark.parametrize("flags", [(False, False, False, False), (True, False, False, False), (True, True, True, True)])
def test_option_combinations_script_and_differentiate(structures, sbf, flags):
    quad, a2e, e2a, aint = flags
    torch.manual_seed(0)
    core, graph_module = build_gemnet_oc(
        {**BASE_ATTRIBUTES, "sbf": {"name": sbf}, "quad_interaction": quad, "atom_edge_interaction": a2e,
         "edge_atom_interaction": e2a, "atom_interaction": aint, "extensive": False, "direct_forces": True,
         "num_output_afteratom": 0, "max_neighbors_qint": 4}
    )
    core.eval()
    positions, cell, pbc, natoms, numbers, tags = _inputs(structures, ["v3", "v4"])
    positions = torch.cat(positions).to(torch.float32)
    batch = torch.repeat_interleave(torch.arange(2), natoms)
    graph = graph_module(positions, cell, pbc, natoms, tags)
    pos = positions.clone().requires_grad_(True)
    energy, forces = core.energy_and_forces(pos, cell, numbers, batch, graph)
    grad = torch.autograd.grad(energy.sum(), pos)[0]
    assert energy.shape == (2,) and forces.shape == (pos.shape[0], 3)
    assert torch.isfinite(grad).all()
    scripted = _script(core)
    energy2, forces2 = scripted.energy_and_forces(positions, cell, numbers, batch, graph)
    torch.testing.assert_close(energy2, energy.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(forces2, forces.detach(), rtol=1e-6, atol=1e-6)
