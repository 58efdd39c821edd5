"""PaiNN's graph on one rank of a spatial domain decomposition.

On several MPI ranks (LAMMPS), a rank holds its owned atoms (rows
``[0, n)``) and ghost atoms (rows ``[n, N)``): periodic images and other
ranks' atoms within the cutoff (plus skin) of its subdomain, at their
unwrapped positions. Every atom carries a global ID (the LAMMPS atom ID);
IDs order the atoms as the single-process graph orders them (atom-ID order
is file order), so every order-dependent rule of ``radius_graph.py`` and
``graph_painn.py`` compares IDs here, never local rows:

* Cap (``cap_neighbors``): an owned centre keeps its ``max_neighbors``
  nearest neighbours; ties at the cap go to the smaller key
  ``id(j) * SHIFT_CODES + code(shift)``, the reference's (neighbour, shift)
  enumeration order. The shift of a pair is its image shift in the frame of
  positions wrapped into the cell, ``floor(frac(x_j)) - floor(frac(x_i))``,
  the ``cell_offsets`` the single-process graph gives the same pair.
* Symmetrisation: of the two directions of a pair, the one with
  ``id(source) < id(target)`` (or, for an atom and its own image, a
  lexicographically negative shift) is kept when it is in its target's
  capped list, and mirrored.

So whether the edge ``j -> i`` exists is decided by the capped list of one
atom: ``i``'s when the ``j -> i`` direction is the kept one, else ``j``'s
(with the mirrored key ``id(i) * SHIFT_CODES + code(-shift)``). A rank
computes the capped lists of its owned atoms (``capped_keys``), the host
copies them to the ghosts (forward communication), and ``domain_edges``
looks each pair up in the list that decides it. Membership is tested by
key, not by distance, so two ranks that round a distance differently still
agree on every edge.

Only owned atoms are targets: a rank updates its owned atoms, and the host
exchanges their features with the ghosts between message-passing layers.
"""

from typing import Final, Tuple

import torch
from torch import Tensor

from .radius_graph import SELF_DISTANCE_SQ, cap_neighbors, wrap_into_cell
from .slots import inner_index

# Image shifts per direction a pair key can encode: |shift| <= SHIFT_RANGE
# (an image 64 cells away is only reached in a cell thinner than cutoff / 64).
SHIFT_RANGE: Final[int] = 64
SHIFT_BASE: Final[int] = 2 * SHIFT_RANGE + 1
# Keys per atom ID: id * SHIFT_CODES + code(shift) stays below 2^53 (exact
# as a double in LAMMPS's communication buffers) for IDs below 4e9.
SHIFT_CODES: Final[int] = SHIFT_BASE * SHIFT_BASE * SHIFT_BASE
# Capped-list padding (keys are non-negative).
NO_KEY: Final[int] = -1


def pair_key(neighbour_id: Tensor, shift: Tensor, shift_range: int = SHIFT_RANGE) -> Tensor:
    """Keys ``id * SHIFT_CODES + code(shift)`` (P,) int64 of neighbours (P,) at image shifts (P, 3).

    ``code`` numbers the shifts in ``[-shift_range, shift_range]^3`` in
    lexicographic order, so keys order pairs by neighbour ID, then shift.
    """
    if shift.shape[0] > 0 and bool((shift.abs() > shift_range).any()):
        raise ValueError(
            f"a neighbour pair spans more than {shift_range} periodic images in one direction; "
            "the cell is too thin for the cutoff"
        )
    base = 2 * shift_range + 1
    biased = shift + shift_range
    code = (biased[:, 0] * base + biased[:, 1]) * base + biased[:, 2]
    return neighbour_id * (base * base * base) + code


def _lexicographically_negative(shift: Tensor) -> Tensor:
    x = shift[:, 0]
    y = shift[:, 1]
    z = shift[:, 2]
    return (x < 0) | ((x == 0) & (y < 0)) | ((x == 0) & (y == 0) & (z < 0))


def _check_inputs(
    positions: Tensor, ids: Tensor, num_local: int, cell: Tensor, pbc: Tensor, centre: Tensor, neighbour: Tensor
) -> None:
    num_atoms = positions.shape[0]
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be (N, 3), got {list(positions.shape)}")
    if ids.shape != (num_atoms,):
        raise ValueError(f"ids must be (N,) = ({num_atoms},), got {list(ids.shape)}")
    if num_local < 0 or num_local > num_atoms:
        raise ValueError(f"num_local must be in [0, {num_atoms}], got {num_local}")
    if cell.shape != (3, 3) or pbc.shape != (3,):
        raise ValueError(f"cell must be (3, 3) and pbc (3,), got {list(cell.shape)} and {list(pbc.shape)}")
    if centre.dim() != 1 or centre.shape != neighbour.shape:
        raise ValueError(f"centre and neighbour must be (P,) each, got {list(centre.shape)} and {list(neighbour.shape)}")
    if centre.shape[0] > 0:
        if int(centre.min()) < 0 or int(centre.max()) >= num_local:
            raise ValueError(f"centre indices must be owned atoms in [0, {num_local})")
        if int(neighbour.min()) < 0 or int(neighbour.max()) >= num_atoms:
            raise ValueError(f"neighbour indices must be in [0, {num_atoms})")


def candidate_pairs(
    positions: Tensor,
    ids: Tensor,
    num_local: int,
    cell: Tensor,
    pbc: Tensor,
    centre: Tensor,
    neighbour: Tensor,
    cutoff: float,
    self_distance_sq: float = SELF_DISTANCE_SQ,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The host's candidate pairs within the cutoff, sorted by centre, then key.

    positions (N, 3) float64, unwrapped (ghosts at their image positions);
    ids (N,) int64 global IDs; cell (3, 3) rows are lattice vectors; pbc (3,)
    bool; centre (P,) owned rows, neighbour (P,) any rows: a superset of the
    pairs within ``cutoff``, each pair once.

    Returns ``(centre, neighbour, shift, distance_sq)``, (P',) (P',) (P', 3)
    int64 (P',): pairs with ``SELF_DISTANCE_SQ < d^2 <= cutoff^2`` and their
    wrapped-frame image shifts.
    """
    _check_inputs(positions, ids, num_local, cell, pbc, centre, neighbour)
    positions = positions.to(torch.float64)
    difference = positions.index_select(0, neighbour) - positions.index_select(0, centre)
    distance_sq = (difference * difference).sum(dim=1)
    within = torch.nonzero((distance_sq <= cutoff * cutoff) & (distance_sq > self_distance_sq)).reshape(-1)
    centre = centre.index_select(0, within)
    neighbour = neighbour.index_select(0, within)
    distance_sq = distance_sq.index_select(0, within)
    _, image = wrap_into_cell(positions, cell.to(torch.float64), pbc.to(torch.bool))  # (N, 3) int64
    shift = image.index_select(0, neighbour) - image.index_select(0, centre)
    key = pair_key(ids.index_select(0, neighbour), shift)
    order = torch.sort(key, stable=True).indices
    order = order.index_select(0, torch.sort(centre.index_select(0, order), stable=True).indices)
    return centre.index_select(0, order), neighbour.index_select(0, order), shift.index_select(0, order), distance_sq.index_select(0, order)


def capped_keys(
    positions: Tensor,
    ids: Tensor,
    num_local: int,
    cell: Tensor,
    pbc: Tensor,
    centre: Tensor,
    neighbour: Tensor,
    cutoff: float,
    max_neighbors: int,
    no_key: int = NO_KEY,
) -> Tensor:
    """The capped neighbour list of every owned atom, as keys: (n, M) int64.

    Row i holds ``id(j) * SHIFT_CODES + code(shift)`` of the (at most)
    ``M = max_neighbors`` neighbours atom i keeps under the cap, ascending,
    padded with ``NO_KEY``. ``M`` is 0 when there is no cap (every pair
    within the cutoff is kept). Inputs as ``candidate_pairs``.
    """
    width = max(max_neighbors, 0)
    centre, neighbour, shift, distance_sq = candidate_pairs(positions, ids, num_local, cell, pbc, centre, neighbour, cutoff)
    table = torch.full((num_local * width,), no_key, dtype=torch.long, device=positions.device)
    if width == 0:
        return table.view(num_local, 0)
    key = pair_key(ids.index_select(0, neighbour), shift)
    kept = torch.nonzero(cap_neighbors(centre, distance_sq, num_local, max_neighbors, key)).reshape(-1)
    kept_centre = centre.index_select(0, kept)
    table.index_copy_(0, kept_centre * width + inner_index(kept_centre, num_local), key.index_select(0, kept))
    return table.view(num_local, width)


def domain_edges(
    positions: Tensor,
    ids: Tensor,
    num_local: int,
    cell: Tensor,
    pbc: Tensor,
    centre: Tensor,
    neighbour: Tensor,
    capped_keys_all: Tensor,
    cutoff: float,
) -> Tensor:
    """Edges into the owned atoms after cap and symmetrisation: (2, E) int64.

    Row 0 is the source (any row), row 1 the target (an owned row), sorted
    by target. ``capped_keys_all`` (N, M) holds the ``capped_keys`` of every
    row: owned rows from this rank, ghost rows copied from their owners.
    Other inputs as ``candidate_pairs``.
    """
    num_atoms = positions.shape[0]
    width = capped_keys_all.shape[1]
    if capped_keys_all.dim() != 2 or capped_keys_all.shape[0] != num_atoms:
        raise ValueError(f"capped_keys_all must be (N, M) with N = {num_atoms}, got {list(capped_keys_all.shape)}")
    centre, neighbour, shift, _ = candidate_pairs(positions, ids, num_local, cell, pbc, centre, neighbour, cutoff)
    if width > 0:
        centre_id = ids.index_select(0, centre)
        neighbour_id = ids.index_select(0, neighbour)
        # Which direction of the pair the reference keeps: the one into the
        # larger ID (or, within one atom's images, the negative shift).
        kept_here = (neighbour_id < centre_id) | ((neighbour_id == centre_id) & _lexicographically_negative(shift))
        decider = torch.where(kept_here, centre, neighbour)
        key = torch.where(
            kept_here,
            pair_key(neighbour_id, shift),
            pair_key(centre_id, -shift),
        )
        member = (capped_keys_all.index_select(0, decider) == key.unsqueeze(1)).any(dim=1)
        selected = torch.nonzero(member).reshape(-1)
        centre = centre.index_select(0, selected)
        neighbour = neighbour.index_select(0, selected)
    return torch.stack([neighbour, centre], dim=0)
