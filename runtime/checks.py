"""Structure checks on numpy arrays: what the runtime refuses before any artifact runs.

``check_structure`` raises ``ValueError`` with one line naming what is
wrong with a structure (wrong shapes, no atoms, NaN or inf positions,
elements outside the model's range, a singular cell where pbc is set).
The runtime calls it for every backend (ONNX, AOTInductor, TorchScript),
so the same structure gets the same message whatever the artifact, and
without torch.

TorchScript artifacts carry the scripted twin (``validate.check_structure``,
same checks and messages, on tensors) inside, for C++ hosts that call them
without this runtime; keep the two in step (``tests/unit/test_structure_checks.py``
compares them).
"""

import numpy as np

# |det(cell)| below this (Angstrom^3) counts as singular when a direction is
# periodic; the same bound as ``validate.MIN_CELL_VOLUME``.
MIN_CELL_VOLUME: float = 1.0e-6


def check_structure(
    positions: np.ndarray,
    atomic_numbers: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    tags: np.ndarray,
    min_atomic_number: int,
    max_atomic_number: int,
    min_cell_volume: float = MIN_CELL_VOLUME,
) -> None:
    """Raise ``ValueError`` with a one-line message if a structure is unusable.

    Expected: positions (N, 3) floating, finite; atomic_numbers (N,) integer in
    ``[min_atomic_number, max_atomic_number]``; cell (3, 3) finite, with a
    non-zero volume when any pbc is set; pbc (3,) bool; tags (N,) integer; N >= 1.
    """
    positions = np.asarray(positions)
    atomic_numbers = np.asarray(atomic_numbers)
    cell = np.asarray(cell)
    pbc = np.asarray(pbc)
    tags = np.asarray(tags)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {list(positions.shape)}")
    num_atoms = positions.shape[0]
    if num_atoms == 0:
        raise ValueError("empty structure: zero atoms")
    if not np.issubdtype(positions.dtype, np.floating):
        raise ValueError(f"positions must be a floating point array, got {positions.dtype}")
    if atomic_numbers.ndim != 1 or atomic_numbers.shape[0] != num_atoms:
        raise ValueError(f"atomic_numbers must have shape (N,) = ({num_atoms},), got {list(atomic_numbers.shape)}")
    if not np.issubdtype(atomic_numbers.dtype, np.integer):
        raise ValueError(f"atomic_numbers must be an integer array, got {atomic_numbers.dtype}")
    if tags.ndim != 1 or tags.shape[0] != num_atoms:
        raise ValueError(f"tags must have shape (N,) = ({num_atoms},), got {list(tags.shape)}")
    if cell.ndim != 2 or cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3), got {list(cell.shape)}")
    if pbc.ndim != 1 or pbc.shape[0] != 3:
        raise ValueError(f"pbc must have shape (3,), got {list(pbc.shape)}")
    finite = np.isfinite(positions).all(axis=1)
    if not finite.all():
        raise ValueError(f"positions contain NaN or inf (first at atom {int(np.argmin(finite))})")
    lowest = int(atomic_numbers.min())
    highest = int(atomic_numbers.max())
    if lowest < min_atomic_number or highest > max_atomic_number:
        offending = lowest if lowest < min_atomic_number else highest
        raise ValueError(
            f"atomic number {offending} is outside the model's element range [{min_atomic_number}, {max_atomic_number}]"
        )
    if pbc.astype(bool).any():
        if not np.isfinite(cell).all():
            raise ValueError("cell contains NaN or inf")
        volume = float(np.linalg.det(cell.astype(np.float64)))
        if abs(volume) < min_cell_volume:
            raise ValueError(
                f"cell is singular (volume {volume} A^3) but pbc is set: "
                "give three independent cell vectors (a vacuum vector along non-periodic directions)"
            )
