"""Input checks shared by TorchScript artifacts and the Python runtime.

Scriptable: the same function runs inside every TorchScript artifact (so a C++
host that passes wrong shapes gets a one-line error, not a crash deep inside
torch) and in the Python runtime before an ONNX session is fed.
"""

import torch
from torch import Tensor

# |det(cell)| below this (Angstrom^3) counts as singular when a direction is periodic.
MIN_CELL_VOLUME: float = 1.0e-6


def check_structure(
    positions: Tensor,
    atomic_numbers: Tensor,
    cell: Tensor,
    pbc: Tensor,
    tags: Tensor,
    min_atomic_number: int,
    max_atomic_number: int,
    min_cell_volume: float = MIN_CELL_VOLUME,
) -> None:
    """Raise ``ValueError`` with a one-line message if a structure is unusable.

    Expected: positions (N, 3) floating, finite; atomic_numbers (N,) integer in
    ``[min_atomic_number, max_atomic_number]``; cell (3, 3) finite, with a
    non-zero volume when any pbc is set; pbc (3,) bool; tags (N,) integer; N >= 1.
    """
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError("positions must have shape (N, 3), got " + str(list(positions.shape)))
    num_atoms = positions.shape[0]
    if num_atoms == 0:
        raise ValueError("empty structure: zero atoms")
    if not positions.is_floating_point():
        raise ValueError("positions must be a floating point tensor, got " + str(positions.dtype))
    if atomic_numbers.dim() != 1 or atomic_numbers.shape[0] != num_atoms:
        raise ValueError(
            "atomic_numbers must have shape (N,) = (" + str(num_atoms) + ",), got " + str(list(atomic_numbers.shape))
        )
    if atomic_numbers.is_floating_point():
        raise ValueError("atomic_numbers must be an integer tensor, got " + str(atomic_numbers.dtype))
    if tags.dim() != 1 or tags.shape[0] != num_atoms:
        raise ValueError("tags must have shape (N,) = (" + str(num_atoms) + ",), got " + str(list(tags.shape)))
    if cell.dim() != 2 or cell.shape[0] != 3 or cell.shape[1] != 3:
        raise ValueError("cell must have shape (3, 3), got " + str(list(cell.shape)))
    if pbc.dim() != 1 or pbc.shape[0] != 3:
        raise ValueError("pbc must have shape (3,), got " + str(list(pbc.shape)))
    if not bool(torch.isfinite(positions).all()):
        bad = int(torch.nonzero(~torch.isfinite(positions).all(dim=1))[0, 0])
        raise ValueError("positions contain NaN or inf (first at atom " + str(bad) + ")")
    lowest = int(atomic_numbers.min())
    highest = int(atomic_numbers.max())
    if lowest < min_atomic_number or highest > max_atomic_number:
        offending = lowest if lowest < min_atomic_number else highest
        raise ValueError(
            "atomic number "
            + str(offending)
            + " is outside the model's element range ["
            + str(min_atomic_number)
            + ", "
            + str(max_atomic_number)
            + "]"
        )
    if bool(pbc.to(torch.bool).any()):
        if not bool(torch.isfinite(cell).all()):
            raise ValueError("cell contains NaN or inf")
        volume = float(torch.linalg.det(cell.to(torch.float64)))
        if abs(volume) < min_cell_volume:
            raise ValueError(
                "cell is singular (volume " + str(volume) + " A^3) but pbc is set: "
                "give three independent cell vectors (a vacuum vector along non-periodic directions)"
            )
