"""PaiNN's per-layer domain entry points (``exporter/domain.py``) against the single-process artifact.

Ranks of a spatial domain decomposition are emulated in Python: space is
cut into slabs along the first lattice vector, each rank owns the atoms of
its slab and holds as ghosts every atom image within the cutoff (plus skin)
of them, and the forward and reverse communication a LAMMPS host does
between calls is done here by copying and summing rows. Energies and forces
summed over the ranks must equal the artifact's own ``forward`` on the whole
structure in file order: the same numbers LAMMPS must produce on several
MPI ranks. Atom IDs are file positions + 1, and each test also runs with
the IDs of a shuffled numbering (both artifacts see the same order).

The domain programs of an AOTInductor package (``export-model --format aoti
--domain``, ``exporter/domain_aoti.py``) run the same protocol on the same
emulated ranks and must equal the TorchScript artifact's domain methods.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111, add_adsorbate, molecule

from generated_structures import generated_structures

SKIN = 0.7  # Angstrom of extra ghost shell and candidate pairs, as a LAMMPS skin
RATTLE = 0.15  # Angstrom
# float64 conservative artifact: only summation order differs.
F64_ENERGY, F64_FORCES = 1e-10, 1e-9
# float32 artifacts: relative to the largest force / the energy scale.
F32_ENERGY, F32_FORCES = 2e-5, 2e-4


@dataclass
class Rank:
    positions: torch.Tensor  # (N, 3) float64, owned rows first
    atom: np.ndarray  # (N,) file index of each row
    num_local: int
    centre: torch.Tensor
    neighbour: torch.Tensor
    owner: np.ndarray = None  # (N,) rank owning each row's atom
    owner_row: np.ndarray = None  # (N,) that atom's row on its owner


def _box(atoms) -> np.ndarray:
    """An invertible cell: non-periodic directions get a long orthogonal vector (LAMMPS always has a box)."""
    cell = np.array(atoms.cell.array, dtype=float)
    extent = np.ptp(atoms.positions, axis=0).max() + 50.0
    for d in range(3):
        if not atoms.pbc[d] or np.linalg.norm(cell[d]) < 1e-9:
            others = [cell[k] for k in range(3) if k != d]
            normal = np.cross(others[0], others[1])
            if np.linalg.norm(normal) < 1e-9:
                normal = np.eye(3)[d]
            cell[d] = normal / np.linalg.norm(normal) * extent
    return cell


def decompose(atoms, cell: np.ndarray, cutoff: float, num_ranks: int) -> List[Rank]:
    """Owned atoms by slab of the first fractional coordinate, ghosts by distance, candidate pairs by distance."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    inverse = np.linalg.inv(cell)
    fractional = atoms.positions @ inverse
    wrapped = np.where(pbc, fractional - np.floor(fractional), fractional)
    positions = wrapped @ cell  # owned atoms sit in the box, as in LAMMPS
    lo, hi = wrapped[:, 0].min(), wrapped[:, 0].max() + 1e-9
    slab = np.minimum(((wrapped[:, 0] - lo) / (hi - lo) * num_ranks).astype(int), num_ranks - 1)
    if pbc[0]:
        slab = np.minimum((wrapped[:, 0] * num_ranks).astype(int), num_ranks - 1)
    reach = cutoff + SKIN
    images = [int(np.ceil(reach * np.linalg.norm(inverse[:, d]))) if pbc[d] else 0 for d in range(3)]
    shifts = np.array([(a, b, c) for a in range(-images[0], images[0] + 1)
                       for b in range(-images[1], images[1] + 1) for c in range(-images[2], images[2] + 1)])
    all_positions = (positions[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)
    all_atoms = np.tile(np.arange(len(atoms)), len(shifts))
    is_origin = np.repeat(np.all(shifts == 0, axis=1), len(atoms))
    ranks = []
    for r in range(num_ranks):
        owned = np.nonzero(slab == r)[0]
        owned_positions = positions[owned]
        if len(owned):
            distance = np.linalg.norm(all_positions[:, None, :] - owned_positions[None, :, :], axis=-1).min(axis=1)
            ghost = np.nonzero((distance <= reach) & ~(is_origin & (slab[all_atoms] == r)))[0]
        else:
            ghost = np.zeros(0, dtype=int)
        rows = np.concatenate([owned_positions, all_positions[ghost]])
        atom = np.concatenate([owned, all_atoms[ghost]])
        pair = np.linalg.norm(rows[None, :, :] - owned_positions[:, None, :], axis=-1)
        centre, neighbour = np.nonzero((pair <= reach) & (pair > 1e-9))
        ranks.append(Rank(torch.tensor(rows), atom, len(owned), torch.tensor(centre), torch.tensor(neighbour)))
    row_of = {}
    for r, rank in enumerate(ranks):
        for row in range(rank.num_local):
            row_of[int(rank.atom[row])] = (r, row)
    for rank in ranks:
        rank.owner = np.array([row_of[int(a)][0] for a in rank.atom], dtype=int)
        rank.owner_row = np.array([row_of[int(a)][1] for a in rank.atom], dtype=int)
    return ranks


def forward_comm(ranks: List[Rank], owned_rows: List[torch.Tensor]) -> List[torch.Tensor]:
    """(n_r, ...) owned rows per rank -> (N_r, ...) per rank: ghosts get their owners' rows."""
    result = []
    for r, rank in enumerate(ranks):
        ghosts = [owned_rows[rank.owner[row]][rank.owner_row[row]] for row in range(rank.num_local, len(rank.atom))]
        tail = torch.stack(ghosts) if ghosts else owned_rows[r][:0]
        result.append(torch.cat([owned_rows[r], tail]))
    return result


def reverse_comm(ranks: List[Rank], all_rows: List[torch.Tensor]) -> List[torch.Tensor]:
    """(N_r, ...) per rank -> (n_r, ...): owned rows plus the ghost rows of every rank summed into their owners."""
    result = [rows[: rank.num_local].clone() for rank, rows in zip(ranks, all_rows)]
    for rank, rows in zip(ranks, all_rows):
        for row in range(rank.num_local, len(rank.atom)):
            result[rank.owner[row]][rank.owner_row[row]] += rows[row]
    return result


def run_domains(model, atoms, ids: np.ndarray, num_ranks: int, gradient_forces: bool):
    """Energy, per-atom energies and forces (file order) from the per-layer entry points on emulated ranks."""
    layers, _, width = model.domain_layout()
    cutoff = float(model.cutoff)
    cell_np = _box(atoms)
    cell = torch.tensor(cell_np)
    pbc = torch.tensor(np.asarray(atoms.pbc, dtype=bool))
    ranks = decompose(atoms, cell_np, cutoff, num_ranks)
    numbers = torch.tensor(atoms.numbers, dtype=torch.long)
    ids_t = torch.tensor(ids, dtype=torch.long)

    def args(rank):
        return rank.positions, ids_t[rank.atom], rank.num_local, cell, pbc, rank.centre, rank.neighbour

    keys = forward_comm(ranks, [model.domain_cap(*args(rank)) for rank in ranks])
    edges = [model.domain_graph(*args(rank), k) for rank, k in zip(ranks, keys)]
    geometry = [model.domain_geometry(rank.positions, e) for rank, e in zip(ranks, edges)]
    features = [model.domain_embed(numbers[rank.atom]) for rank in ranks]
    inputs = []
    for k in range(layers):
        inputs.append(features)
        outputs = [
            model.domain_layer(k, x, v, e, g[0], g[1], rank.num_local)
            for rank, (x, v), e, g in zip(ranks, features, edges, geometry)
        ]
        xs = forward_comm(ranks, [o[0] for o in outputs])
        vs = forward_comm(ranks, [o[1] for o in outputs])
        features = list(zip(xs, vs))
    final = [(x[: rank.num_local], v[: rank.num_local]) for rank, (x, v) in zip(ranks, features)]
    readouts = [model.domain_readout(x, v, len(atoms)) for x, v in final]
    per_atom = np.zeros(len(atoms))
    forces = np.zeros((len(atoms), 3))
    for rank, (energy, direct) in zip(ranks, readouts):
        per_atom[rank.atom[: rank.num_local]] = energy.detach().double().numpy()
        if direct.shape[0]:
            forces[rank.atom[: rank.num_local]] = direct.detach().double().numpy()
    if gradient_forces:
        grads = [model.domain_readout_backward(x, v) for x, v in final]
        rbf = [torch.zeros_like(g[0]) for g in geometry]
        unit = [torch.zeros_like(g[1]) for g in geometry]
        for k in reversed(range(layers)):
            back = [
                model.domain_layer_backward(k, x, v, e, g[0], g[1], rank.num_local, gx, gv)
                for rank, (x, v), e, g, (gx, gv) in zip(ranks, inputs[k], edges, geometry, grads)
            ]
            for r in range(len(ranks)):
                rbf[r] = rbf[r] + back[r][2]
                unit[r] = unit[r] + back[r][3]
            grads = list(zip(reverse_comm(ranks, [b[0] for b in back]), reverse_comm(ranks, [b[1] for b in back])))
        scale, offset = model.domain_force_convention()
        for r, rank in enumerate(ranks):
            gradient = model.domain_geometry_backward(rank.positions, edges[r], rbf[r], unit[r]).numpy()
            np.add.at(forces, rank.atom, -scale * gradient)
            forces[rank.atom[: rank.num_local]] += offset
    return per_atom.sum(), per_atom, forces


def rattled_cu():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 2, 2))
    atoms.rattle(RATTLE, seed=3)
    return atoms


def slab_with_adsorbate():
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=8.0)
    add_adsorbate(slab, molecule("CO"), 2.0, "ontop")
    slab.pbc = (True, True, False)
    slab.rattle(0.05, seed=5)
    return slab


def two_atom_cell():
    atoms = bulk("Cu", "hcp", a=2.6, c=4.2)
    atoms.rattle(0.05, seed=7)
    return atoms


def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.pbc = False
    return atoms


STRUCTURES = {"rattled_cu": rattled_cu, "slab": slab_with_adsorbate, "two_atom_cell": two_atom_cell, "ethanol": ethanol}


def _single_process(model, atoms, order):
    """The artifact's own forward on the atoms numbered by ``order`` (file order = ID order); results in file order."""
    reordered = atoms[order]
    out = model.forward(
        torch.tensor(reordered.positions),
        torch.tensor(reordered.numbers, dtype=torch.long),
        torch.tensor(_box(reordered) if not reordered.pbc.all() else reordered.cell.array),
        torch.tensor(np.asarray(reordered.pbc, dtype=bool)),
        torch.zeros(len(reordered), dtype=torch.long),
    )
    forces = np.zeros((len(atoms), 3))
    forces[order] = out["forces"].detach().double().numpy()
    return float(out["energy"]), forces


def _check(model, atoms, num_ranks, gradient_forces, energy_tol, forces_tol, shuffle_seed=None):
    order = np.arange(len(atoms))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(atoms))
    ids = np.empty(len(atoms), dtype=np.int64)
    ids[order] = np.arange(1, len(atoms) + 1)  # atom order[k] has ID k + 1
    energy, per_atom, forces = run_domains(model, atoms, ids, num_ranks, gradient_forces)
    expected_energy, expected_forces = _single_process(model, atoms, order)
    scale = max(1.0, abs(expected_energy))
    assert abs(energy - expected_energy) <= energy_tol * scale, (energy, expected_energy)
    force_scale = max(1.0, float(np.abs(expected_forces).max()))
    assert float(np.abs(forces - expected_forces).max()) <= forces_tol * force_scale
    assert abs(per_atom.sum() - energy) < 1e-9 * scale
    return energy


@pytest.fixture(scope="module")
def conservative64(export_artifact):
    return torch.jit.load(export_artifact("painn_tiny", "torchscript", "conservative", "float64"))


@pytest.fixture(scope="module")
def direct32(export_artifact):
    return torch.jit.load(export_artifact("painn_tiny", "torchscript", None, "float32"))


@pytest.fixture(scope="module")
def gradient32(export_artifact):
    return torch.jit.load(export_artifact("painn_tiny_grad", "torchscript", None, "float32"))


@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("num_ranks", [1, 2, 3])
def test_conservative_float64_equals_single_process(conservative64, name, num_ranks):
    _check(conservative64, STRUCTURES[name](), num_ranks, True, F64_ENERGY, F64_FORCES)


@pytest.mark.parametrize("num_ranks", [1, 2])
def test_atom_ids_decide_the_capped_graph(conservative64, num_ranks):
    """A shuffled numbering changes the energy under the cap, in both paths alike."""
    atoms = rattled_cu()
    file_order = _check(conservative64, atoms, num_ranks, True, F64_ENERGY, F64_FORCES)
    shuffled = _check(conservative64, atoms, num_ranks, True, F64_ENERGY, F64_FORCES, shuffle_seed=11)
    assert abs(file_order - shuffled) > 1e-6  # the cap binds: the order matters


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_direct_float32_equals_single_process(direct32, name):
    _check(direct32, STRUCTURES[name](), 2, False, F32_ENERGY, F32_FORCES)


def test_gradient_forces_float32_equal_single_process(gradient32):
    _check(gradient32, rattled_cu(), 2, True, F32_ENERGY, F32_FORCES)


def test_generated_structures(conservative64):
    """Every class of the seeded generator (tiny cells, lone atoms, fragments, ...) on 2 emulated ranks."""
    for name, atoms in generated_structures(23, 12, 83):
        if len(atoms) < 1:
            continue
        _check(conservative64, atoms, 2, True, F64_ENERGY, F64_FORCES)


def test_lone_atom_has_no_edges(conservative64):
    atoms = ethanol()[:1]
    energy, per_atom, forces = run_domains(conservative64, atoms, np.array([1]), 1, True)
    assert np.all(forces == 0.0)
    expected, _ = _single_process(conservative64, atoms, np.arange(1))
    assert abs(energy - expected) < 1e-12


# ---------------------------------------------------------------------------
# The domain programs of an AOTInductor package (exporter/domain_aoti.py)
# ---------------------------------------------------------------------------
def package_programs(path: str):
    """(call(name, *tensors) -> tuple of outputs, the package's domain record) of a package's domain programs."""
    import json

    from torch._inductor.package import load_package

    from ocpdeploy.runtime.keys import AOTI_METADATA_KEY

    record = json.loads(load_package(path, "model").get_metadata()[AOTI_METADATA_KEY])["domain"]
    programs = {name: load_package(path, name) for name in record["programs"]}

    def call(name, *inputs):
        outputs = programs[name](*inputs)
        return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)

    return call, record


def _scatter(rows_total: int, rows: torch.Tensor, x: torch.Tensor, vec: torch.Tensor):
    """Active rows' (x, vec) into all-row host buffers (zero elsewhere)."""
    full_x = torch.zeros((rows_total,) + tuple(x.shape[1:]), dtype=x.dtype)
    full_vec = torch.zeros((rows_total,) + tuple(vec.shape[1:]), dtype=vec.dtype)
    full_x[rows] = x
    full_vec[rows] = vec
    return full_x, full_vec


def run_package_domains(call, record, atoms, ids: np.ndarray, num_ranks: int, cutoff: float):
    """``run_domains`` through a package's domain programs (the C++ host's sequence, src/domain.cpp)."""
    layers, _, width = record["layout"]
    gradient = "domain_layer_backward" in record["programs"]
    scale, offset = record["force_convention"]
    cell_np = _box(atoms)
    cell = torch.tensor(cell_np)
    pbc = torch.tensor(np.asarray(atoms.pbc, dtype=bool))
    ranks = decompose(atoms, cell_np, cutoff, num_ranks)
    numbers = torch.tensor(atoms.numbers, dtype=torch.long)
    ids_t = torch.tensor(ids, dtype=torch.long)

    def args(rank):
        return rank.positions, ids_t[rank.atom], torch.tensor(rank.num_local), cell, pbc, rank.centre, rank.neighbour

    if width > 0:
        keys = forward_comm(ranks, [call("domain_cap", *args(rank))[0] for rank in ranks])
    else:
        keys = [torch.zeros((len(rank.atom), 0), dtype=torch.long) for rank in ranks]
    # rows, edge_index, edge_rbf, edge_unit, x, vec per rank
    built = [call("domain_build", *args(rank), k, numbers[rank.atom]) for rank, k in zip(ranks, keys)]
    features = [_scatter(len(rank.atom), b[0], b[4], b[5]) for rank, b in zip(ranks, built)]
    inputs = []
    for k in range(layers):
        active = [(x[b[0]], v[b[0]]) for (x, v), b in zip(features, built)]
        inputs.append(active)
        outputs = [call("domain_layer", torch.tensor(k), x, v, b[1], b[2], b[3], torch.tensor(rank.num_local))
                   for rank, (x, v), b in zip(ranks, active, built)]
        features = list(zip(forward_comm(ranks, [o[0] for o in outputs]), forward_comm(ranks, [o[1] for o in outputs])))
    final = [(x[: rank.num_local], v[: rank.num_local]) for rank, (x, v) in zip(ranks, features)]
    readouts = [call("domain_readout", x, v, torch.tensor(len(atoms))) for x, v in final]
    per_atom = np.zeros(len(atoms))
    forces = np.zeros((len(atoms), 3))
    for rank, readout in zip(ranks, readouts):
        per_atom[rank.atom[: rank.num_local]] = readout[0].detach().double().numpy()
        if not gradient:
            forces[rank.atom[: rank.num_local]] = readout[1].detach().double().numpy()
    if gradient:
        grads = [(readout[1], readout[2]) for readout in readouts]
        position_gradients = [torch.zeros((len(rank.atom), 3), dtype=torch.float64) for rank in ranks]
        for k in reversed(range(layers)):
            back = [call("domain_layer_backward", torch.tensor(k), x, v, b[1], rank.positions[b[0]], gx, gv)
                    for rank, (x, v), b, (gx, gv) in zip(ranks, inputs[k], built, grads)]
            full = []
            for r, (rank, b) in enumerate(zip(ranks, built)):
                position_gradients[r][b[0]] += back[r][2]
                full.append(_scatter(len(rank.atom), b[0], back[r][0], back[r][1]))
            grads = list(zip(reverse_comm(ranks, [f[0] for f in full]), reverse_comm(ranks, [f[1] for f in full])))
        for r, rank in enumerate(ranks):
            np.add.at(forces, rank.atom, -scale * position_gradients[r].numpy())
            forces[rank.atom[: rank.num_local]] += offset
    return per_atom.sum(), per_atom, forces


# package forces/dtype -> (energy, forces) tolerance against the TorchScript domain methods
PACKAGES = {"direct_float32": (None, "float32", F32_ENERGY, F32_FORCES),
            "conservative_float64": ("conservative", "float64", F64_ENERGY, F64_FORCES)}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_domain_programs_equal_torchscript_domain_methods(export_artifact, package):
    """Each structure on 1 and on 3 emulated ranks (shuffled IDs): the package's programs == the TorchScript methods."""
    forces_mode, dtype, energy_tol, forces_tol = PACKAGES[package]
    call, record = package_programs(export_artifact("painn_tiny", "aoti", forces_mode, dtype))
    torchscript = torch.jit.load(export_artifact("painn_tiny", "torchscript", forces_mode, dtype))
    assert record["layout"] == list(torchscript.domain_layout())
    assert record["force_convention"] == pytest.approx(list(torchscript.domain_force_convention()), rel=1e-12)
    assert ("domain_layer_backward" in record["programs"]) == (forces_mode == "conservative")
    for name, build in sorted(STRUCTURES.items()):
        atoms = build()
        for num_ranks, seed in ((1, None), (3, 11)):
            ids = np.arange(1, len(atoms) + 1) if seed is None else np.random.default_rng(seed).permutation(len(atoms)) + 1
            energy, per_atom, forces = run_package_domains(call, record, atoms, ids, num_ranks, float(torchscript.cutoff))
            expected, expected_per_atom, expected_forces = run_domains(torchscript, atoms, ids, num_ranks, forces_mode is not None)
            scale = max(1.0, abs(expected))
            assert abs(energy - expected) <= energy_tol * scale, (name, num_ranks, energy, expected)
            force_scale = max(1.0, float(np.abs(expected_forces).max()))
            assert float(np.abs(forces - expected_forces).max()) <= forces_tol * force_scale, (name, num_ranks)
            assert float(np.abs(per_atom - expected_per_atom).max()) <= energy_tol * scale, (name, num_ranks)


def test_domain_option_is_for_painn_packages(tmp_path):
    """--domain: refused, in one line and before any export work, for other formats and for GemNet-OC."""
    from ocpdeploy.exporter import export_checkpoint

    painn = str(Path(__file__).parents[1] / "data" / "checkpoints" / "painn_tiny.pt")
    gemnet = str(Path(__file__).parents[1] / "data" / "checkpoints" / "gemnet_oc_tiny.pt")
    for format_, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
        with pytest.raises(ValueError, match="--domain applies to --format aoti only"):
            export_checkpoint(painn, str(tmp_path / f"m{suffix}"), format=format_, domain=True)
    with pytest.raises(ValueError, match="only PaiNN has per-layer domain programs"):
        export_checkpoint(gemnet, str(tmp_path / "m.pt2"), format="aoti", domain=True)
    assert not list(tmp_path.iterdir())


def test_export_refuses_wrong_domain_programs(export_artifact, tmp_path):
    """The export's check of the domain programs (one rank, periodic images as ghosts) refuses a package whose
    programs disagree with the eager rewrite: here a rewrite whose forces normaliser is twice the package's."""
    import shutil

    from ocpdeploy.exporter.checkpoint import build_rewrite, read_checkpoint
    from ocpdeploy.exporter.deployed import PhysicalModel
    from ocpdeploy.exporter.export import VerificationError, _verify_domain

    path = tmp_path / "copy.pt2"
    shutil.copy(export_artifact("painn_tiny", "aoti", None, "float32"), path)
    _, record = package_programs(str(path))
    checkpoint = read_checkpoint(str(Path(__file__).parents[1] / "data" / "checkpoints" / "painn_tiny.pt"))
    core, graph = build_rewrite(checkpoint)
    core.requires_grad_(False)
    n = checkpoint.normalizers
    physical = PhysicalModel(core, "direct", n.energy_mean, n.energy_std, n.forces_mean, n.forces_std)
    _verify_domain(str(path), physical, graph, "float32", "cpu", record)  # the package as exported passes
    physical.forces_std *= 2.0  # the eager rewrite's forces double; the package's do not
    with pytest.raises(VerificationError, match="domain programs disagree with the eager rewrite on probe 'slab'"):
        _verify_domain(str(path), physical, graph, "float32", "cpu", record)
    assert not path.exists()
