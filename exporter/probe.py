"""Built-in probe structure used to verify artifacts and to trace ONNX exports.

A small Cu(111) slab with an O adatom and a CO molecule (pbc T,T,F, tags
0/1/2), rattled and wrapped into the cell; 21 atoms, a size
that equals no weight dimension (the symbolic tracer would merge equal sizes).
The 3x3 in-plane cell keeps every neighbour selection unambiguous: the
smallest k-th/(k+1)-th neighbour gap for k in 5..1000 at 6 and 12 A is
3e-4 A. (The former 2x2 cell had exact +R/-R self-image ties at a cap of
12, and float rounding then decided which edge was kept: verification of
conservative exports failed about one run in six.)
"""

from typing import Dict

import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111

PROBE_SEED = 20240611
PROBE_RATTLE = 0.05  # Angstrom


def probe_atoms() -> Atoms:
    """The probe as ``ase.Atoms`` (18 Cu + O + C + O)."""
    slab = fcc111("Cu", size=(3, 3, 2), vacuum=8.0, a=3.61)
    slab.set_tags([0] * 9 + [1] * 9)
    add_adsorbate(slab, "O", 1.5, "fcc")
    add_adsorbate(slab, "C", 1.9, "ontop")
    add_adsorbate(slab, "O", 3.05, "ontop")
    tags = slab.get_tags()
    tags[-3:] = 2
    slab.set_tags(tags)
    slab.pbc = (True, True, False)
    rng = np.random.default_rng(PROBE_SEED)
    slab.positions += rng.normal(scale=PROBE_RATTLE, size=slab.positions.shape)
    # Wrapped as the runtime wraps, so the artifact and the eager rewrite see
    # the same input (on exact ties at the neighbour cap, e.g. +R/-R self
    # images, the kept edge depends on the frame, as in the reference).
    slab.wrap(eps=0)
    return slab


def probe_tensors(dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """The probe as single-structure input tensors (positions, atomic_numbers, cell, pbc, tags)."""
    atoms = probe_atoms()
    return {
        "positions": torch.tensor(atoms.positions, dtype=dtype),
        "atomic_numbers": torch.tensor(atoms.numbers, dtype=torch.long),
        "cell": torch.tensor(np.asarray(atoms.cell), dtype=dtype),
        "pbc": torch.tensor(atoms.pbc, dtype=torch.bool),
        "tags": torch.tensor(atoms.get_tags(), dtype=torch.long),
    }
