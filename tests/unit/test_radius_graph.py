"""Radius graph: exact reference edge lists, sign convention, brute-force agreement, scriptability."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.neighborlist import primitive_neighbor_list

from conftest import SINGLE_STRUCTURES, reference_inputs
from ocpdeploy.runtime.radius_graph import batched_radius_graph_pbc, radius_graph_pbc

PAINN_CUTOFF, PAINN_CAP = 6.0, 12  # painn_tiny


@pytest.mark.parametrize("name", SINGLE_STRUCTURES)
def test_matches_reference_edge_list_exactly(reference, structures_json, name):
    data = reference("painn_tiny")
    inputs = reference_inputs(data, structures_json, name)
    edge_index, cell_offsets = radius_graph_pbc(inputs["positions"], inputs["cell"], inputs["pbc"], PAINN_CUTOFF, PAINN_CAP)
    np.testing.assert_array_equal(edge_index.numpy(), data[f"{name}/radius_graph_edge_index"])
    np.testing.assert_array_equal(cell_offsets.numpy(), data[f"{name}/radius_graph_cell_offsets"])


def test_two_atom_sign_convention():
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.5]])
    cell = torch.eye(3) * 10.0
    edge_index, cell_offsets = radius_graph_pbc(positions, cell, torch.tensor([False] * 3), 2.0, 0)
    assert edge_index.tolist() == [[1, 0], [0, 1]]  # row 0 source j, row 1 centre i, sorted by centre
    vector = positions[edge_index[0]] - positions[edge_index[1]] + cell_offsets.float() @ cell
    assert vector[0].tolist() == [0.0, 0.0, 1.5]  # points from centre 0 to neighbour 1


def _brute_force(positions, cell, pbc, cutoff):
    i, j, shifts = primitive_neighbor_list("ijS", pbc, cell, positions, cutoff, self_interaction=False)
    return {(int(a), int(b), tuple(int(x) for x in s)) for a, b, s in zip(i, j, shifts)}


@pytest.mark.parametrize(
    "case",
    ["triclinic_small_cell", "slab_mixed_pbc", "unwrapped_positions", "molecule_no_pbc", "large_bulk"],
)
def test_full_list_agrees_with_ase(case):
    rng = np.random.default_rng(7)
    cutoff = 6.0
    if case == "triclinic_small_cell":
        atoms = bulk("CaF2", "fluorite", a=5.46)  # primitive, many images
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))), scale_atoms=True)
    elif case == "slab_mixed_pbc":
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        atoms.center(vacuum=6.0, axis=2)
        atoms.pbc = (True, True, False)
    elif case == "unwrapped_positions":
        atoms = bulk("Ag", "fcc", a=4.09, cubic=True).repeat((2, 2, 1))
        atoms.positions += rng.normal(scale=7.0, size=atoms.positions.shape)
    elif case == "molecule_no_pbc":
        atoms = molecule("C6H6")
        atoms.pbc = False
    else:
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((5, 5, 5))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    positions = torch.tensor(atoms.positions, dtype=torch.float64)
    cell = torch.tensor(atoms.cell.array, dtype=torch.float64)
    pbc = torch.tensor(atoms.pbc)
    edge_index, cell_offsets = radius_graph_pbc(positions, cell, pbc, cutoff, 0)
    ours = {(int(i), int(j), tuple(s)) for j, i, s in zip(edge_index[0], edge_index[1], cell_offsets.tolist())}
    assert ours == _brute_force(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    # Sorted by centre, then neighbour.
    key = edge_index[1] * len(atoms) + edge_index[0]
    assert bool((key[1:] >= key[:-1]).all())


def test_cap_keeps_nearest_neighbours():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    atoms.positions += np.random.default_rng(3).normal(scale=0.05, size=atoms.positions.shape)
    positions = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell.array)
    pbc = torch.tensor(atoms.pbc)
    full_index, full_offsets = radius_graph_pbc(positions, cell, pbc, 6.0, 0)
    capped_index, capped_offsets = radius_graph_pbc(positions, cell, pbc, 6.0, 20)
    def distances(index, offsets):
        return (positions[index[0]] - positions[index[1]] + offsets.double() @ cell).norm(dim=1)
    full_d = distances(full_index, full_offsets)
    capped_d = distances(capped_index, capped_offsets)
    for centre in range(len(atoms)):
        expected = torch.sort(full_d[full_index[1] == centre]).values[:20]
        got = torch.sort(capped_d[capped_index[1] == centre]).values
        torch.testing.assert_close(got, expected)


def test_batched_matches_single_and_scripted_matches_eager(reference, structures_json):
    data = reference("painn_tiny")
    parts = [reference_inputs(data, structures_json, name) for name in ("v1", "v4")]
    positions = torch.cat([p["positions"] for p in parts])
    cell = torch.stack([p["cell"] for p in parts])
    pbc = torch.stack([p["pbc"] for p in parts])
    natoms = torch.tensor([len(p["positions"]) for p in parts])
    eager = batched_radius_graph_pbc(positions, cell, pbc, natoms, PAINN_CUTOFF, PAINN_CAP)
    scripted = torch.jit.script(batched_radius_graph_pbc)(positions, cell, pbc, natoms, PAINN_CUTOFF, PAINN_CAP)
    for a, b in zip(eager, scripted):
        assert torch.equal(a, b)
    # each structure with its own pbc: the v4 part equals v4 alone (the reference would use v1's pbc)
    v4_index, v4_offsets = radius_graph_pbc(parts[1]["positions"], parts[1]["cell"], parts[1]["pbc"], PAINN_CUTOFF, PAINN_CAP)
    count_v1 = int(eager[2][0])
    assert torch.equal(eager[0][:, count_v1:] - len(parts[0]["positions"]), v4_index)
    assert torch.equal(eager[1][count_v1:], v4_offsets)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cap_ties_go_to_reference_order(dtype):
    """Exact ties at the cap (a simple cubic lattice with integer coordinates: d^2 in {1, 2, 3, 4}):
    each centre keeps its 6 first neighbours and 4 of the 12 second neighbours, chosen as the
    reference's stable sort does, by neighbour index j, then shift in lexicographic order."""
    cap, cutoff = 10, 2.0
    grid = np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    cell = np.eye(3) * 4.0
    i, j, shifts = primitive_neighbor_list("ijS", [True] * 3, cell, grid, cutoff + 1.0e-9, self_interaction=False)
    vectors = grid[j] - grid[i] + shifts @ cell
    distance_sq = np.rint((vectors**2).sum(axis=1)).astype(int)
    expected = []
    for centre in range(len(grid)):
        rows = [(distance_sq[e], j[e], tuple(shifts[e]), e) for e in np.nonzero(i == centre)[0]]
        kept = sorted(sorted(rows)[:cap], key=lambda row: (row[1], row[2]))
        expected += [(centre, row[1], row[2]) for row in kept]
    edge_index, cell_offsets = radius_graph_pbc(
        torch.tensor(grid, dtype=dtype), torch.tensor(cell, dtype=dtype), torch.tensor([True] * 3), cutoff, cap
    )
    ours = [(int(c), int(n), tuple(s)) for n, c, s in zip(edge_index[0], edge_index[1], cell_offsets.tolist())]
    assert ours == expected
