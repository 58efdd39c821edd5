"""PaiNN rewrite against fairchem-core 1.10.0 reference outputs (eager and scripted)."""

import numpy as np
import pytest
import torch

from conftest import CHECKPOINTS, SINGLE_STRUCTURES, assert_parity, reference_inputs
from ocpdeploy.exporter.checkpoint import load_rewrite, strip_module_prefix
from ocpdeploy.exporter.deployed import PhysicalModel


@pytest.fixture(scope="module")
def painn():
    core, graph, checkpoint = load_rewrite(str(CHECKPOINTS / "painn_tiny.pt"))
    core.requires_grad_(False)
    n = checkpoint.normalizers
    return PhysicalModel(core, "direct", n.energy_mean, n.energy_std, n.forces_mean, n.forces_std), graph, checkpoint


def run(physical, graph, inputs_list):
    positions = torch.cat([i["positions"] for i in inputs_list])
    cell = torch.stack([i["cell"] for i in inputs_list])
    pbc = torch.stack([i["pbc"] for i in inputs_list])
    natoms = torch.tensor([len(i["positions"]) for i in inputs_list])
    tags = torch.cat([i["tags"] for i in inputs_list])
    numbers = torch.cat([i["atomic_numbers"] for i in inputs_list])
    batch = torch.repeat_interleave(torch.arange(len(inputs_list)), natoms)
    prepared = graph(positions, cell, pbc, natoms, tags)
    return physical(positions, cell, numbers, batch, prepared)


def test_state_dict_keys_are_the_reference_keys(painn):
    physical, _, checkpoint = painn
    raw = torch.load(CHECKPOINTS / "painn_tiny.pt", weights_only=True)
    assert set(physical.core.state_dict()) == set(strip_module_prefix(raw["state_dict"]))


@pytest.mark.parametrize("scripted", [False, True])
@pytest.mark.parametrize("name", SINGLE_STRUCTURES)
def test_parity_with_reference(painn, reference, structures_json, name, scripted):
    physical, graph, _ = painn
    if scripted:
        physical, graph = torch.jit.script(physical), torch.jit.script(graph)
    data = reference("painn_tiny")
    out = run(physical, graph, [reference_inputs(data, structures_json, name)])
    assert_parity(out["energy"][0], out["forces"], data[f"{name}/energy"][0], data[f"{name}/forces"], name)


def test_batch_with_same_pbc_matches_reference(painn, reference, structures_json):
    physical, graph, _ = painn
    data = reference("painn_tiny")
    out = run(physical, graph, [reference_inputs(data, structures_json, n) for n in ("v2", "v4")])
    natoms = data["vc/natoms"]
    for b in range(2):
        first = int(natoms[:b].sum())
        forces = out["forces"][first : first + int(natoms[b])]
        ref_forces = data["vc/forces"][first : first + int(natoms[b])]
        assert_parity(out["energy"][b], forces, data["vc/energy"][b], ref_forces, f"vc[{b}]")


def test_mixed_pbc_batch_uses_each_structures_own_pbc(painn, reference, structures_json):
    """vb = [v1 (T,T,F), v4 (T,T,T)]: the reference applies v1's pbc to v4; we apply each one's own."""
    physical, graph, _ = painn
    data = reference("painn_tiny")
    out = run(physical, graph, [reference_inputs(data, structures_json, n) for n in ("v1", "v4")])
    n1 = int(data["vb/natoms"][0])
    assert_parity(out["energy"][0], out["forces"][:n1], data["vb/energy"][0], data["vb/forces"][:n1], "vb[v1]")
    assert_parity(out["energy"][1], out["forces"][n1:], data["v4/energy"][0], data["v4/forces"], "vb[v4] vs v4 alone")


def test_isolated_atom_gets_finite_energy_and_zero_force(painn):
    """An atom beyond the cutoff of all others: no messages, embedding-only energy, zero direct force."""
    physical, graph, _ = painn
    inputs = {
        "positions": torch.tensor([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [30.0, 0.0, 0.0]]),
        "cell": torch.zeros(3, 3),
        "pbc": torch.tensor([False, False, False]),
        "atomic_numbers": torch.tensor([6, 8, 29]),
        "tags": torch.zeros(3, dtype=torch.long),
    }
    out = run(physical, graph, [inputs])
    assert torch.isfinite(out["energy"]).all()
    assert torch.equal(out["forces"][2], torch.zeros(3))
    alone = run(physical, graph, [{**inputs, "positions": inputs["positions"][2:], "atomic_numbers": inputs["atomic_numbers"][2:], "tags": inputs["tags"][2:]}])
    pair = run(physical, graph, [{**inputs, "positions": inputs["positions"][:2], "atomic_numbers": inputs["atomic_numbers"][:2], "tags": inputs["tags"][:2]}])
    # Additivity of disconnected parts (the energy mean is added once per structure).
    mean = physical.energy_mean
    torch.testing.assert_close(out["energy"] - mean, (alone["energy"] - mean) + (pair["energy"] - mean), rtol=1e-5, atol=1e-5)


def test_conservative_forces_and_stress_match_finite_differences(painn, reference, structures_json):
    _, graph, checkpoint = painn
    core, graph, checkpoint = load_rewrite(str(CHECKPOINTS / "painn_tiny.pt"))
    core = core.double()
    core.requires_grad_(False)
    n = checkpoint.normalizers
    physical = PhysicalModel(core, "conservative", n.energy_mean, n.energy_std, n.forces_mean, n.forces_std)
    data = reference("painn_tiny")
    inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in reference_inputs(data, structures_json, "v4").items()}
    out = run(physical, graph, [inputs])
    step = 1.0e-5

    def energy(positions, cell):
        return float(run(physical, graph, [{**inputs, "positions": positions, "cell": cell}])["energy"][0])

    for atom, axis in [(0, 0), (1, 2), (2, 1)]:
        plus = inputs["positions"].clone()
        plus[atom, axis] += step
        minus = inputs["positions"].clone()
        minus[atom, axis] -= step
        numeric = -(energy(plus, inputs["cell"]) - energy(minus, inputs["cell"])) / (2 * step)
        assert abs(numeric - float(out["forces"][atom, axis])) < 1e-5 * max(1.0, abs(numeric))
    volume = abs(float(torch.linalg.det(inputs["cell"])))
    for a, b in [(0, 0), (1, 2)]:
        strain = torch.zeros(3, 3, dtype=torch.float64)
        strain[a, b] = strain[b, a] = step / (2 if a != b else 1)
        deform_plus = torch.eye(3, dtype=torch.float64) + strain
        deform_minus = torch.eye(3, dtype=torch.float64) - strain
        e_plus = energy(inputs["positions"] @ deform_plus, inputs["cell"] @ deform_plus)
        e_minus = energy(inputs["positions"] @ deform_minus, inputs["cell"] @ deform_minus)
        # symmetric strain eps_ab = eps_ba = step/2: dE = V (s_ab + s_ba) step/2 = V s_ab step
        numeric = (e_plus - e_minus) / (2 * step) / volume
        assert abs(numeric - float(out["stress"][0, a, b])) < 1e-5 * max(1.0, abs(numeric))


def _set_edge_chunks(core, edges_per_chunk):
    for message in core.message_layers:
        message.edge_chunk_elements = 3 * message.hidden_channels * edges_per_chunk


@pytest.mark.parametrize("scripted", [False, True])
def test_edge_chunks_and_padded_sums_match_reference(reference, structures_json, scripted):
    """Both aggregation paths of the message layers against the reference: 7-edge chunks (many
    chunks, a ragged last one; TorchScript's path) and one pass through the padded (N, K) layout
    (edge_chunk_elements = 0; ONNX's path). Direct forces match the reference; conservative
    forces and stress agree between the two."""
    core, graph, checkpoint = load_rewrite(str(CHECKPOINTS / "painn_tiny.pt"))
    core.requires_grad_(False)
    n = checkpoint.normalizers
    data = reference("painn_tiny")
    inputs = [reference_inputs(data, structures_json, name) for name in ("v1", "v4")]
    first = len(inputs[0]["positions"])
    conservative = {}
    for edges_per_chunk in (0, 7):
        _set_edge_chunks(core, edges_per_chunk)
        for mode in ("direct", "conservative"):
            physical = PhysicalModel(core, mode, n.energy_mean, n.energy_std, n.forces_mean, n.forces_std)
            module, graph_module = (torch.jit.script(physical), torch.jit.script(graph)) if scripted else (physical, graph)
            out = run(module, graph_module, inputs)
            if mode == "direct":
                assert_parity(out["energy"][0], out["forces"][:first], data["v1/energy"][0], data["v1/forces"], "v1")
                assert_parity(out["energy"][1], out["forces"][first:], data["v4/energy"][0], data["v4/forces"], "v4")
            else:
                conservative[edges_per_chunk] = out
    for key in conservative[0]:
        torch.testing.assert_close(conservative[7][key], conservative[0][key], rtol=1e-5, atol=1e-5, equal_nan=True)
