"""ase.Atoms -> model input arrays, with the OCP calculator's conventions.

Positions are wrapped into the cell along periodic directions
(``ase.geometry.wrap_positions(..., eps=0)``, as fairchem's AtomsToGraphs
does); tags come from ``atoms.get_tags()``; pbc and cell from the Atoms.
"""

from typing import Dict, List

import numpy as np
from ase import Atoms
from ase.geometry import wrap_positions


def atoms_to_arrays(atoms: Atoms) -> Dict[str, np.ndarray]:
    """positions (N,3) float64, atomic_numbers (N,) int64, cell (3,3), pbc (3,) bool, tags (N,) int64."""
    if not isinstance(atoms, Atoms):
        raise TypeError(f"expected ase.Atoms, got {type(atoms).__name__}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if len(atoms) and pbc.any() and np.isfinite(positions).all() and abs(np.linalg.det(cell)) > 0:
        positions = wrap_positions(positions, cell, pbc=pbc, eps=0)
    return {
        "positions": positions,
        "atomic_numbers": np.asarray(atoms.numbers, dtype=np.int64),
        "cell": cell,
        "pbc": pbc,
        "tags": np.asarray(atoms.get_tags(), dtype=np.int64),
    }


def stack_structures(structures: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Concatenate per-structure arrays: cell (B,3,3), pbc (B,3), natoms (B,)."""
    return {
        "positions": np.concatenate([s["positions"] for s in structures]),
        "atomic_numbers": np.concatenate([s["atomic_numbers"] for s in structures]),
        "cell": np.stack([s["cell"] for s in structures]),
        "pbc": np.stack([s["pbc"] for s in structures]),
        "tags": np.concatenate([s["tags"] for s in structures]),
        "natoms": np.array([len(s["atomic_numbers"]) for s in structures], dtype=np.int64),
    }
