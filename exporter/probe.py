"""Built-in probe structures: the suite every export is verified on.

``probe_suite()`` covers every code path of the models, so that an artifact
that specialised to one structure, or breaks on an empty index set, is
refused before it is written:

* ``slab``: Cu(111) 3x3x2 with an O adatom and a CO molecule, pbc T,T,F,
  tags 0/1/2 (quadruplets through the surface and adsorbate);
* ``bulk_tags0`` / ``bulk_tags1``: a strained, rattled Cu fcc cell
  of 8 atoms (no quadruplet interaction edges with tags 0; all with tags 1);
* ``one_atom_tags0`` / ``one_atom_tags1`` and ``two_atoms_tags0`` /
  ``two_atoms_tags1``: triclinic 1- and 2-atom cells, many periodic images
  (self edges, exactly collinear image pairs);
* ``column``: a rattled, strained Cu cell three times longer along c than
  along a and b, so that it has a different number of periodic images along
  each axis (and another bin grid and neighbour count than the other
  probes and the export example);
* ``molecule``: ethanol without pbc;
* ``lone_atom``: one atom without pbc (no edges at all);
* ``fragments``: two molecules far apart, each atom with one neighbour (no
  triplets, no edge between the fragments).

``probe_batch()`` is one mixed batch of them (5 structures: the export
example of ``exporter/program.py`` has 4). Positions are wrapped as the
runtime wraps them, so the artifact and the eager rewrite see the same
input. The slab keeps every neighbour selection unambiguous (smallest
k-th/(k+1)-th neighbour gap for k in 5..1000 at 6 and 12 A is 3e-4 A).
"""

from typing import Dict, List, Tuple

import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule

PROBE_SEED = 20240611
PROBE_RATTLE = 0.05  # Angstrom
# Lattice constants (Angstrom) of the bulk probes.
CU_FCC = 3.61
CU_HCP = 2.56
# Off-diagonal strain that makes the small cells triclinic.
TRICLINIC_STRAIN = np.array([[1.0, 0.07, -0.04], [0.03, 1.0, 0.06], [-0.05, 0.02, 1.0]])
# Separation of the two fragments and the vacuum around molecules (Angstrom):
# beyond any cutoff a checkpoint uses.
FRAGMENT_SEPARATION = 30.0
MOLECULE_VACUUM = 6.0
# Repeats of the cubic Cu cell in the ``column`` probe.
COLUMN_REPEATS = (1, 1, 3)
# Structures of the mixed batch, by name.
BATCH_MEMBERS = ("slab", "lone_atom", "one_atom_tags1", "fragments", "bulk_tags0")


def probe_atoms() -> Atoms:
    """The slab probe as ``ase.Atoms`` (18 Cu + O + C + O, tags 0/1/2)."""
    slab = fcc111("Cu", size=(3, 3, 2), vacuum=8.0, a=CU_FCC)
    slab.set_tags([0] * 9 + [1] * 9)
    add_adsorbate(slab, "O", 1.5, "fcc")
    add_adsorbate(slab, "C", 1.9, "ontop")
    add_adsorbate(slab, "O", 3.05, "ontop")
    tags = slab.get_tags()
    tags[-3:] = 2
    slab.set_tags(tags)
    slab.pbc = (True, True, False)
    _rattle(slab, 0)
    return slab


def _rattle(atoms: Atoms, offset: int) -> None:
    rng = np.random.default_rng(PROBE_SEED + offset)
    atoms.positions += rng.normal(scale=PROBE_RATTLE, size=atoms.positions.shape)
    if atoms.pbc.any():
        atoms.wrap(eps=0)


def _strained(atoms: Atoms) -> Atoms:
    atoms.set_cell(atoms.cell.array @ TRICLINIC_STRAIN, scale_atoms=True)
    return atoms


def _with_tags(atoms: Atoms, tag: int) -> Atoms:
    atoms = atoms.copy()
    atoms.set_tags([tag] * len(atoms))
    return atoms


def _bulk() -> Atoms:
    cell = _strained(bulk("Cu", "fcc", a=CU_FCC, cubic=True).repeat((2, 1, 1)))
    _rattle(cell, 1)
    return cell


def _one_atom() -> Atoms:
    cell = _strained(bulk("Cu", "fcc", a=CU_FCC))
    cell.wrap(eps=0)
    return cell


def _two_atoms() -> Atoms:
    cell = _strained(bulk("Cu", "hcp", a=CU_HCP))
    _rattle(cell, 2)
    return cell


def _column() -> Atoms:
    cell = _strained(bulk("Cu", "fcc", a=CU_FCC, cubic=True).repeat(COLUMN_REPEATS))
    _rattle(cell, 4)
    cell.set_tags([index % 3 for index in range(len(cell))])
    return cell


def _molecule() -> Atoms:
    ethanol = molecule("CH3CH2OH")
    _rattle(ethanol, 3)
    ethanol.center(vacuum=MOLECULE_VACUUM)
    ethanol.set_tags([2] * len(ethanol))
    return ethanol


def _lone_atom() -> Atoms:
    atom = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], tags=[1])
    atom.center(vacuum=MOLECULE_VACUUM)
    return atom


def _fragments() -> Atoms:
    """A CO and an O2 molecule far apart: one neighbour per atom, no triplets."""
    carbon_monoxide = molecule("CO")
    oxygen = molecule("O2")
    oxygen.translate([FRAGMENT_SEPARATION, 0.0, 0.0])
    pair = carbon_monoxide + oxygen
    pair.set_tags([1, 1, 2, 2])
    pair.center(vacuum=MOLECULE_VACUUM)
    return pair


def probe_suite() -> List[Tuple[str, Atoms]]:
    """(name, atoms) of every probe structure, in a fixed order (see the module docstring)."""
    bulk_cell = _bulk()
    one = _one_atom()
    two = _two_atoms()
    return [
        ("slab", probe_atoms()),
        ("bulk_tags0", _with_tags(bulk_cell, 0)),
        ("bulk_tags1", _with_tags(bulk_cell, 1)),
        ("one_atom_tags0", _with_tags(one, 0)),
        ("one_atom_tags1", _with_tags(one, 1)),
        ("two_atoms_tags0", _with_tags(two, 0)),
        ("two_atoms_tags1", _with_tags(two, 1)),
        ("column", _column()),
        ("molecule", _molecule()),
        ("lone_atom", _lone_atom()),
        ("fragments", _fragments()),
    ]


def probe_batch() -> List[Tuple[str, Atoms]]:
    """The structures of the mixed-batch probe, in batch order."""
    by_name = dict(probe_suite())
    return [(name, by_name[name]) for name in BATCH_MEMBERS]


def atoms_tensors(atoms: Atoms, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """One structure as input tensors (positions, atomic_numbers, cell, pbc, tags)."""
    return {
        "positions": torch.tensor(atoms.positions, dtype=dtype),
        "atomic_numbers": torch.tensor(atoms.numbers, dtype=torch.long),
        "cell": torch.tensor(np.asarray(atoms.cell), dtype=dtype),
        "pbc": torch.tensor(atoms.pbc, dtype=torch.bool),
        "tags": torch.tensor(atoms.get_tags(), dtype=torch.long),
    }
