"""Seeded random structures covering every code path of the exported models.

``generated_structures(seed, count, max_atomic_number)`` returns ``(name,
atoms)`` pairs drawn from these classes, each with its own random triclinic
strain, pbc (TTT / TTF / FFF), tags (all 0, all 1, all 2 or mixed) and
elements from the checkpoint's range:

* ``random``: 3 to ~100 atoms at liquid density in a strained box;
* ``tiny_cell``: 1 or 2 atoms in a small triclinic cell (many periodic
  images, exactly collinear image pairs);
* ``slab``: fcc(111) slab of 2 to 3 layers with an adsorbate;
* ``molecule``: a small molecule in vacuum;
* ``lone_atom``: one atom (no edges);
* ``fragments``: two far-apart dimers (no triplets, no edge between them).
"""

from typing import List, Tuple

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc111, molecule

# Elements the structures are drawn from (those inside a checkpoint's range).
ELEMENTS = (1, 6, 7, 8, 13, 26, 28, 29, 46, 78, 79)
CLASSES = ("random", "tiny_cell", "slab", "molecule", "lone_atom", "fragments")
PBC_CHOICES = ((True, True, True), (True, True, False), (False, False, False))
PBC_WEIGHTS = (0.5, 0.3, 0.2)
TAG_CHOICES = ("zeros", "ones", "twos", "mixed")
VOLUME_PER_ATOM = 14.0  # Angstrom^3, a dense liquid
MIN_DISTANCE = 1.1  # Angstrom between random atoms
MAX_STRAIN = 0.08
VACUUM = 6.0
MOLECULES = ("H2O", "CO2", "CH4", "NH3", "C2H4", "CH3OH")


def _strain(rng: np.random.Generator) -> np.ndarray:
    return np.eye(3) + rng.uniform(-MAX_STRAIN, MAX_STRAIN, size=(3, 3))


def _tags(rng: np.random.Generator, count: int) -> np.ndarray:
    choice = TAG_CHOICES[rng.integers(len(TAG_CHOICES))]
    if choice == "mixed":
        return rng.integers(0, 3, size=count)
    return np.full(count, TAG_CHOICES.index(choice))


def _random_box(rng: np.random.Generator, elements: List[int]) -> Atoms:
    count = int(rng.choice([3, 5, 8, 12, 20, 35, 60, 100], p=[0.15, 0.15, 0.15, 0.15, 0.15, 0.1, 0.1, 0.05]))
    length = (count * VOLUME_PER_ATOM) ** (1.0 / 3.0)
    cell = length * _strain(rng)
    positions: List[np.ndarray] = []
    while len(positions) < count:
        candidate = rng.uniform(0.0, 1.0, size=3) @ cell
        if all(np.linalg.norm(candidate - p) >= MIN_DISTANCE for p in positions):
            positions.append(candidate)
    return Atoms(numbers=rng.choice(elements, size=count), positions=positions, cell=cell)


def _tiny_cell(rng: np.random.Generator, elements: List[int]) -> Atoms:
    count = int(rng.integers(1, 3))
    cell = rng.uniform(2.3, 3.2) * _strain(rng)
    if count == 1:
        return Atoms(numbers=rng.choice(elements, size=1), positions=[[0.0, 0.0, 0.0]], cell=cell)
    positions = [[0.0, 0.0, 0.0], rng.uniform(0.3, 0.7, size=3) @ cell]
    return Atoms(numbers=rng.choice(elements, size=2), positions=positions, cell=cell)


def _slab(rng: np.random.Generator, elements: List[int]) -> Atoms:
    slab = fcc111("Cu", size=(2, 2, int(rng.integers(2, 4))), vacuum=VACUUM, a=3.6)
    slab.numbers = rng.choice(elements, size=len(slab))
    add_adsorbate(slab, "O", 1.6, "fcc")
    slab.set_cell(slab.cell.array @ _strain(rng), scale_atoms=True)
    return slab


def _molecule(rng: np.random.Generator, elements: List[int]) -> Atoms:
    del elements
    atoms = molecule(MOLECULES[rng.integers(len(MOLECULES))])
    atoms.center(vacuum=VACUUM)
    return atoms


def _lone_atom(rng: np.random.Generator, elements: List[int]) -> Atoms:
    atoms = Atoms(numbers=rng.choice(elements, size=1), positions=[[0.0, 0.0, 0.0]])
    atoms.center(vacuum=VACUUM)
    return atoms


def _fragments(rng: np.random.Generator, elements: List[int]) -> Atoms:
    numbers = rng.choice(elements, size=4)
    positions = [[0, 0, 0], [1.3, 0, 0], [25, 0, 0], [25, 1.4, 0]]
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.center(vacuum=VACUUM)
    return atoms


BUILDERS = {
    "random": _random_box,
    "tiny_cell": _tiny_cell,
    "slab": _slab,
    "molecule": _molecule,
    "lone_atom": _lone_atom,
    "fragments": _fragments,
}


def generated_structures(seed: int, count: int, max_atomic_number: int) -> List[Tuple[str, Atoms]]:
    """``count`` structures, cycling through every class, each with random pbc, tags and strain."""
    rng = np.random.default_rng(seed)
    elements = [z for z in ELEMENTS if z <= max_atomic_number]
    structures = []
    for index in range(count):
        kind = CLASSES[index % len(CLASSES)]
        atoms = BUILDERS[kind](rng, elements)
        pbc = PBC_CHOICES[rng.choice(len(PBC_CHOICES), p=PBC_WEIGHTS)]
        if kind in ("molecule", "lone_atom", "fragments") and rng.random() < 0.5:
            pbc = (False, False, False)
        atoms.pbc = pbc
        atoms.rattle(0.03, seed=int(rng.integers(1 << 30)))
        if any(pbc):
            atoms.wrap(eps=0)
        atoms.set_tags(_tags(rng, len(atoms)))
        structures.append((f"{index:02d}_{kind}_{''.join('T' if p else 'F' for p in pbc)}", atoms))
    return structures
