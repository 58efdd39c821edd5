"""Graphs and interaction indices of GemNet-OC, as a scriptable module.

Reproduces ``GemNetOC.get_graphs_and_indices`` of fairchem-core 1.10
(``models/gemnet_oc/gemnet_oc.py`` and ``interaction_indices.py``) without
torch_sparse / torch_scatter. It runs in TorchScript, in eager Python and inside
exported programs (``torch.export`` for ONNX and AOTInductor: stable orders
come from ``sorting.py``, data-dependent sizes from ``nonzero`` and
``repeat_interleave``, and no tensor value is read on the host); the model
core consumes its output.

Conventions
-----------
All graphs use the GemNet-OC orientation: ``edge_index[0]`` is the source
atom ``s``, ``edge_index[1]`` the target ``t`` (edges are sorted by target),
and ``cell_offsets`` are the *negated* radius-graph shifts, so that::

    vector_st = positions[t] - positions[s] + cell_offsets @ cell   # (E, 3)

(``cell`` of the edge's structure, rows are lattice vectors). This is the
reference's ``-edge_distance_vec`` with ``cell_offset = -offsets``. The
returned ``*_cell_offsets`` are integer-valued and stored in the floating
dtype of ``positions``; every other entry is an int64 index tensor. No
geometry is returned: the core recomputes vectors and distances from
positions, cell and offsets (differentiable).

Graphs
------
* ``a2a``: radius graph (``cutoff_aint``, ``max_neighbors_aint``) from
  :func:`runtime.radius_graph.batched_radius_graph_pbc`, each structure with
  its own pbc. Built when any atom-edge/edge-atom/atom-atom interaction is on;
  otherwise the main graph is the radius graph itself.
* ``main``, ``a2ee2a``, ``qint``: sub-selections of ``a2a`` (of the
  unsymmetrised main graph for ``qint`` when ``a2a`` is absent): distance
  ``<= cutoff`` when the cutoff differs, then the strict per-target cap on
  the (non-squared) distance when the cap differs. ``qint`` then keeps edges
  whose source or target tag is in ``qint_tags``.
* only ``main`` is symmetrised: per structure ``[kept edges][their flips]``,
  an edge kept when ``s < t`` or ``s == t`` with a lexicographically negative
  offset; ``id_swap`` maps each edge to its counter edge. The symmetrised
  edges are then stably sorted by target atom (so, unlike the reference, the
  main graph is sorted by ``t`` too); ``id_swap`` and every index set below
  use the sorted edge ids.

Index sets (reference names in brackets)
----------------------------------------
* ``trip_e2e_in/out`` (``get_triplets``): for each main edge c->a (out) every
  other main edge b->a (in) with the same target.
* ``trip_a2e_in/out``: a2ee2a edge b->a (in) for each main edge c->a (out);
  ``trip_e2a_in/out``: main edge b->a (in) for each a2ee2a edge c->a (out)
  (``get_mixed_triplets``; pairs with the same source and cancelling offsets
  are dropped).
* quadruplets d->b->a<-c (``get_quadruplets``): ``quad_trip_in_in`` (main
  edge d->b) / ``quad_trip_in_out`` (qint edge b->a); ``quad_trip_out_in``
  (qint edge b->a) / ``quad_trip_out_out`` (main edge c->a); per quadruplet
  ``quad_out`` (main edge c->a), ``quad_trip_in_to_quad``,
  ``quad_trip_out_to_quad``; quadruplets with c == d (cancelling offsets)
  are dropped.

Every ``*_out`` list is sorted; within a group, inputs are ordered by source
atom as in the reference's SparseTensor (order among equal source atoms may
differ from the reference, which only changes float summation order).

Aggregation destinations
------------------------
Every index the core uses as the destination of an ``index_add`` is
non-decreasing (ONNX Runtime's CPU ScatterND with add reduction is only
deterministic with more than one thread for sorted indices):
``main_edge_index[1]`` (atom update, output blocks, direct forces),
``trip_e2e_out``, ``trip_a2e_out``, ``trip_e2a_out``, ``quad_out``,
``a2ee2a_edge_index[1]`` (edge-to-atom second sum) and ``a2a_edge_index[1]``
(pair interaction). The radius graph and its sub-selections are sorted by
target by construction. Gather-only indices (sources, ``*_in``,
``quad_trip_*``, ``*_to_quad``, ``id_swap``) are not sorted; their backward
(gradient forces) scatters over them.
"""

from typing import Dict, Final, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .radius_graph import batched_radius_graph_pbc, cap_neighbors
from .slots import group_offsets, inner_index, slots
from .sorting import expand_groups, inverse_permutation, nonzero_1d, stable_argsort

# Keys of the returned dictionary (see module docstring for shapes).
MAIN_EDGE_INDEX: Final[str] = "main_edge_index"  # (2, E) int64
MAIN_CELL_OFFSETS: Final[str] = "main_cell_offsets"  # (E, 3) float
ID_SWAP: Final[str] = "id_swap"  # (E,) int64
TRIP_E2E_IN: Final[str] = "trip_e2e_in"  # (T,) int64, main edge b->a
TRIP_E2E_OUT: Final[str] = "trip_e2e_out"  # (T,) int64, main edge c->a
A2EE2A_EDGE_INDEX: Final[str] = "a2ee2a_edge_index"  # (2, Eae) int64
A2EE2A_CELL_OFFSETS: Final[str] = "a2ee2a_cell_offsets"  # (Eae, 3) float
TRIP_A2E_IN: Final[str] = "trip_a2e_in"  # a2ee2a edge
TRIP_A2E_OUT: Final[str] = "trip_a2e_out"  # main edge
TRIP_E2A_IN: Final[str] = "trip_e2a_in"  # main edge
TRIP_E2A_OUT: Final[str] = "trip_e2a_out"  # a2ee2a edge
A2A_EDGE_INDEX: Final[str] = "a2a_edge_index"  # (2, Ea) int64
A2A_CELL_OFFSETS: Final[str] = "a2a_cell_offsets"  # (Ea, 3) float
QINT_EDGE_INDEX: Final[str] = "qint_edge_index"  # (2, Eq) int64
QINT_CELL_OFFSETS: Final[str] = "qint_cell_offsets"  # (Eq, 3) float
QUAD_TRIP_IN_IN: Final[str] = "quad_trip_in_in"  # main edge d->b
QUAD_TRIP_IN_OUT: Final[str] = "quad_trip_in_out"  # qint edge b->a
QUAD_TRIP_OUT_IN: Final[str] = "quad_trip_out_in"  # qint edge b->a
QUAD_TRIP_OUT_OUT: Final[str] = "quad_trip_out_out"  # main edge c->a
QUAD_OUT: Final[str] = "quad_out"  # (Q,) main edge c->a
QUAD_TRIP_IN_TO_QUAD: Final[str] = "quad_trip_in_to_quad"  # (Q,) index into quad_trip_in_*
QUAD_TRIP_OUT_TO_QUAD: Final[str] = "quad_trip_out_to_quad"  # (Q,) index into quad_trip_out_*

def _isclose(a: float, b: float) -> bool:
    """``np.isclose`` (atol 1e-8, rtol 1e-5): the reference's test for sub-selecting."""
    return abs(a - b) <= 1.0e-8 + 1.0e-5 * abs(b)


def resolve_cutoffs(
    cutoff: float,
    cutoff_qint: Optional[float],
    cutoff_aeaint: Optional[float],
    cutoff_aint: Optional[float],
    max_neighbors: int,
    max_neighbors_qint: Optional[int],
    max_neighbors_aeaint: Optional[int],
    max_neighbors_aint: Optional[int],
    quad_interaction: bool,
    atom_edge_interaction: bool,
    edge_atom_interaction: bool,
    atom_interaction: bool,
) -> Tuple[float, float, float, float, int, int, int, int]:
    """Fallbacks of ``GemNetOC.set_cutoffs`` / ``set_max_neighbors``.

    Returns ``(cutoff, cutoff_qint, cutoff_aeaint, cutoff_aint, max_neighbors,
    max_neighbors_qint, max_neighbors_aeaint, max_neighbors_aint)``. A value is
    replaced by the main one when its interaction is off or it is unset;
    ``*_aint`` falls back to the maximum of the others (also when
    ``atom_interaction`` is False).
    """
    aeaint = atom_edge_interaction or edge_atom_interaction
    c_aeaint = cutoff if (not aeaint or cutoff_aeaint is None) else float(cutoff_aeaint)
    c_qint = cutoff if (not quad_interaction or cutoff_qint is None) else float(cutoff_qint)
    if not atom_interaction or cutoff_aint is None:
        c_aint = max(cutoff, c_aeaint, c_qint)
    else:
        c_aint = float(cutoff_aint)
    m_aeaint = max_neighbors if (not aeaint or max_neighbors_aeaint is None) else int(max_neighbors_aeaint)
    m_qint = max_neighbors if (not quad_interaction or max_neighbors_qint is None) else int(max_neighbors_qint)
    if not atom_interaction or max_neighbors_aint is None:
        m_aint = max(max_neighbors, m_aeaint, m_qint)
    else:
        m_aint = int(max_neighbors_aint)
    if not (cutoff <= c_aint and c_aeaint <= c_aint and c_qint <= c_aint):
        raise ValueError(
            f"GemNet-OC cutoffs must not exceed cutoff_aint={c_aint}: got cutoff={cutoff}, "
            f"cutoff_aeaint={c_aeaint}, cutoff_qint={c_qint}"
        )
    if not (max_neighbors <= m_aint and m_aeaint <= m_aint and m_qint <= m_aint):
        raise ValueError(
            f"GemNet-OC max_neighbors must not exceed max_neighbors_aint={m_aint}: got "
            f"max_neighbors={max_neighbors}, max_neighbors_aeaint={m_aeaint}, max_neighbors_qint={m_qint}"
        )
    return float(cutoff), c_qint, c_aeaint, c_aint, int(max_neighbors), m_qint, m_aeaint, m_aint


def _cap_by_distance(target: Tensor, distance: Tensor, num_atoms: int, max_neighbors: int) -> Tensor:
    """Strict cap (``get_max_neighbors_mask`` with ``enforce_max_strictly``).

    ``target`` (E,) sorted; keeps the ``max_neighbors`` shortest edges of each
    target (ties by edge order); survivors keep their order. Returns a mask.
    """
    edge_order = torch.arange(target.shape[0], device=target.device)
    return cap_neighbors(target, distance, num_atoms, max_neighbors, edge_order)


def _neighbor_lists(
    center_of_entry: Tensor, sort_key: Tensor, num_atoms: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """CSR lists of entries per atom, ordered by ``sort_key`` (stable).

    Returns ``(order, first, counts)``: the entries of atom ``a`` are
    ``order[first[a] : first[a] + counts[a]]``.
    """
    by_key = stable_argsort(sort_key)
    by_center = stable_argsort(center_of_entry[by_key])
    order = by_key[by_center]
    counts = torch.zeros(num_atoms, dtype=torch.long, device=center_of_entry.device)
    counts.index_add_(0, center_of_entry, torch.ones_like(center_of_entry))
    return order, group_offsets(counts), counts


def _expand(query_atom: Tensor, order: Tensor, first: Tensor, counts: Tensor) -> Tuple[Tensor, Tensor]:
    """All (query, entry) pairs where the entry belongs to the query's atom.

    Returns ``(query_id, entry_id)``, sorted by query id.
    """
    per_query = counts[query_atom]
    query_id = expand_groups(per_query)
    within = torch.arange(query_id.shape[0], device=query_atom.device) - group_offsets(per_query)[query_id]
    return query_id, order[first[query_atom[query_id]] + within]


def _any_nonzero(offsets: Tensor) -> Tensor:
    return (offsets != 0).any(dim=1)


class GemNetOCGraph(nn.Module):
    """Builds every GemNet-OC graph and index set from positions.

    ``forward(positions (N,3) float, cell (B,3,3), pbc (B,3) bool,
    natoms (B,) int64, tags (N,) int64) -> Dict[str, Tensor]`` with the keys
    listed in ``input_names`` (which depend on the enabled interactions).
    """

    cutoff: float
    cutoff_qint: float
    cutoff_aeaint: float
    cutoff_aint: float
    max_neighbors: int
    max_neighbors_qint: int
    max_neighbors_aeaint: int
    max_neighbors_aint: int
    quad_interaction: bool
    atom_edge_interaction: bool
    edge_atom_interaction: bool
    atom_interaction: bool
    use_a2a: bool
    qint_tags: List[int]
    input_names: List[str]

    def __init__(
        self,
        cutoff: float = 6.0,
        cutoff_qint: Optional[float] = None,
        cutoff_aeaint: Optional[float] = None,
        cutoff_aint: Optional[float] = None,
        max_neighbors: int = 50,
        max_neighbors_qint: Optional[int] = None,
        max_neighbors_aeaint: Optional[int] = None,
        max_neighbors_aint: Optional[int] = None,
        quad_interaction: bool = False,
        atom_edge_interaction: bool = False,
        edge_atom_interaction: bool = False,
        atom_interaction: bool = False,
        qint_tags: Optional[List[int]] = None,
        enforce_max_neighbors_strictly: bool = True,
    ) -> None:
        super().__init__()
        if not enforce_max_neighbors_strictly:
            raise ValueError(
                "enforce_max_neighbors_strictly=False is not supported: only the strict "
                "max-neighbour cap (the OCP default) is implemented"
            )
        self.enforce_max_neighbors_strictly = True
        (
            self.cutoff,
            self.cutoff_qint,
            self.cutoff_aeaint,
            self.cutoff_aint,
            self.max_neighbors,
            self.max_neighbors_qint,
            self.max_neighbors_aeaint,
            self.max_neighbors_aint,
        ) = resolve_cutoffs(
            cutoff, cutoff_qint, cutoff_aeaint, cutoff_aint,
            max_neighbors, max_neighbors_qint, max_neighbors_aeaint, max_neighbors_aint,
            quad_interaction, atom_edge_interaction, edge_atom_interaction, atom_interaction,
        )
        self.quad_interaction = bool(quad_interaction)
        self.atom_edge_interaction = bool(atom_edge_interaction)
        self.edge_atom_interaction = bool(edge_atom_interaction)
        self.atom_interaction = bool(atom_interaction)
        self.use_a2a = self.atom_edge_interaction or self.edge_atom_interaction or self.atom_interaction
        self.qint_tags = [0, 1, 2] if qint_tags is None else [int(tag) for tag in qint_tags]

        names = ["main_edge_index", "main_cell_offsets", "id_swap", "trip_e2e_in", "trip_e2e_out", "trip_e2e_slot", "trip_e2e_kmax"]
        if self.atom_edge_interaction or self.edge_atom_interaction:
            names += ["a2ee2a_edge_index", "a2ee2a_cell_offsets"]
        if self.atom_edge_interaction:
            names += ["trip_a2e_in", "trip_a2e_out", "trip_a2e_slot", "trip_a2e_kmax"]
        if self.edge_atom_interaction:
            names += ["trip_e2a_in", "trip_e2a_out", "trip_e2a_slot", "trip_e2a_kmax"]
        if self.atom_interaction:
            names += ["a2a_edge_index", "a2a_cell_offsets", "a2a_slot", "a2a_kmax"]
        if self.quad_interaction:
            names += [
                "qint_edge_index", "qint_cell_offsets",
                "quad_trip_in_in", "quad_trip_in_out", "quad_trip_out_in", "quad_trip_out_out",
                "quad_out", "quad_trip_in_to_quad", "quad_trip_out_to_quad", "quad_slot", "quad_kmax",
            ]
        self.input_names = names

    # ------------------------------------------------------------------ graphs
    def _distances(self, positions: Tensor, cell: Tensor, edge_batch: Tensor,
                   edge_index: Tensor, cell_offsets: Tensor) -> Tensor:
        """Edge lengths (E,), for selection only (not returned)."""
        shift = torch.bmm(cell_offsets.to(positions.dtype).unsqueeze(1), cell[edge_batch]).squeeze(1)
        vector = positions[edge_index[1]] - positions[edge_index[0]] + shift
        return torch.linalg.norm(vector, dim=1)

    def _subselect(
        self, edge_index: Tensor, cell_offsets: Tensor, distance: Tensor, num_atoms: int,
        cutoff: float, max_neighbors: int, cutoff_orig: float, max_neighbors_orig: int,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """``subselect_graph``: cutoff filter and cap, only where they differ."""
        if not _isclose(cutoff, cutoff_orig):
            keep = nonzero_1d(distance <= cutoff)
            edge_index = edge_index.index_select(1, keep)
            cell_offsets = cell_offsets.index_select(0, keep)
            distance = distance.index_select(0, keep)
        if max_neighbors != max_neighbors_orig:
            keep = nonzero_1d(_cap_by_distance(edge_index[1], distance, num_atoms, max_neighbors))
            edge_index = edge_index.index_select(1, keep)
            cell_offsets = cell_offsets.index_select(0, keep)
            distance = distance.index_select(0, keep)
        return edge_index, cell_offsets, distance

    def _symmetrize(self, edge_index: Tensor, cell_offsets: Tensor, edge_batch: Tensor,
                    num_structures: int) -> Tuple[Tensor, Tensor, Tensor]:
        """``symmetrize_edges``: returns (edge_index, cell_offsets, id_swap)."""
        source = edge_index[0]
        target = edge_index[1]
        ox = cell_offsets[:, 0]
        oy = cell_offsets[:, 1]
        oz = cell_offsets[:, 2]
        cell_earlier = (ox < 0) | ((ox == 0) & (oy < 0)) | ((ox == 0) & (oy == 0) & (oz < 0))
        keep = (source < target) | ((source == target) & cell_earlier)
        kept_ids = nonzero_1d(keep)
        kept_batch = edge_batch[kept_ids]
        counts = torch.zeros(num_structures, dtype=torch.long, device=source.device)
        counts.index_add_(0, kept_batch, torch.ones_like(kept_batch))
        first = group_offsets(counts)
        rank = torch.arange(kept_ids.shape[0], device=source.device) - first[kept_batch]
        position = 2 * first[kept_batch] + rank  # kept edge, per structure first
        position_flip = position + counts[kept_batch]  # its counter edge
        num_new = 2 * kept_ids.shape[0]
        new_source = torch.empty(num_new, dtype=torch.long, device=source.device)
        new_target = torch.empty(num_new, dtype=torch.long, device=source.device)
        new_offsets = torch.empty((num_new, 3), dtype=cell_offsets.dtype, device=source.device)
        id_swap = torch.empty(num_new, dtype=torch.long, device=source.device)
        new_source[position] = source[kept_ids]
        new_target[position] = target[kept_ids]
        new_offsets[position] = cell_offsets[kept_ids]
        new_source[position_flip] = target[kept_ids]
        new_target[position_flip] = source[kept_ids]
        new_offsets[position_flip] = -cell_offsets[kept_ids]
        id_swap[position] = position_flip
        id_swap[position_flip] = position
        return torch.stack([new_source, new_target], dim=0), new_offsets, id_swap

    def _sort_by_target(self, edge_index: Tensor, cell_offsets: Tensor,
                        id_swap: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Stable permutation of the symmetrised edges by target atom.

        ``[kept][flips]`` per structure becomes ascending in ``edge_index[1]``
        (atoms of a structure are contiguous, so structures stay in order;
        ties keep their symmetrised order). ``id_swap`` is remapped to the new
        edge ids: ``new_id_swap = inverse[id_swap[perm]]``.
        """
        perm = stable_argsort(edge_index[1])
        inverse = inverse_permutation(perm)
        return edge_index[:, perm], cell_offsets[perm], inverse[id_swap[perm]]

    # ----------------------------------------------------------------- indices
    def _triplets(self, edge_index: Tensor, num_atoms: int) -> Tuple[Tensor, Tensor]:
        """``get_triplets``: (in, out) for b->a<-c, in != out (edge ids)."""
        order, first, counts = _neighbor_lists(edge_index[1], edge_index[0], num_atoms)
        out, edge_in = _expand(edge_index[1], order, first, counts)
        keep = nonzero_1d(edge_in != out)
        return edge_in.index_select(0, keep), out.index_select(0, keep)

    def _mixed_triplets(
        self, in_index: Tensor, in_offsets: Tensor, out_index: Tensor, out_offsets: Tensor,
        num_atoms: int, to_outedge: bool,
    ) -> Tuple[Tensor, Tensor]:
        """``get_mixed_triplets``: (in, out) edge ids of two graphs.

        For every out edge c->a, the in edges b->a (``to_outedge`` False) or
        b->c (True); the degenerate cases b == c with cancelling offsets
        (resp. b == a) are dropped.
        """
        order, first, counts = _neighbor_lists(in_index[1], in_index[0], num_atoms)
        query_atom = out_index[0] if to_outedge else out_index[1]
        out, edge_in = _expand(query_atom, order, first, counts)
        atom_in = in_index[0][edge_in]
        if to_outedge:
            atom_out = out_index[1][out]
            offsets_sum = out_offsets[out] + in_offsets[edge_in]
        else:
            atom_out = out_index[0][out]
            offsets_sum = out_offsets[out] - in_offsets[edge_in]
        keep = nonzero_1d((atom_in != atom_out) | _any_nonzero(offsets_sum))
        return edge_in.index_select(0, keep), out.index_select(0, keep)

    def _quadruplets(
        self, main_index: Tensor, main_offsets: Tensor, qint_index: Tensor, qint_offsets: Tensor,
        num_atoms: int,
    ) -> Dict[str, Tensor]:
        """``get_quadruplets`` for d->b->a<-c."""
        device = main_index.device
        trip_in_in, trip_in_out = self._mixed_triplets(
            main_index, main_offsets, qint_index, qint_offsets, num_atoms, True
        )  # d->b (main) for each b->a (qint); sorted by qint edge
        trip_out_in, trip_out_out = self._mixed_triplets(
            qint_index, qint_offsets, main_index, main_offsets, num_atoms, False
        )  # b->a (qint) for each c->a (main); sorted by main edge
        num_qint = qint_index.shape[1]
        per_inter = torch.zeros(num_qint, dtype=torch.long, device=device)
        per_inter.index_add_(0, trip_in_out, torch.ones_like(trip_in_out))
        first_in = group_offsets(per_inter)
        per_trip_out = per_inter[trip_out_in]
        trip_out_to_quad = expand_groups(per_trip_out)
        within = torch.arange(trip_out_to_quad.shape[0], device=device) - group_offsets(per_trip_out)[trip_out_to_quad]
        trip_in_to_quad = first_in[trip_out_in[trip_out_to_quad]] + within
        quad_out = trip_out_out[trip_out_to_quad]
        edge_db = trip_in_in[trip_in_to_quad]
        inter = trip_out_in[trip_out_to_quad]
        offsets_cd = main_offsets[edge_db] + qint_offsets[inter] - main_offsets[quad_out]
        keep = nonzero_1d((main_index[0][quad_out] != main_index[0][edge_db]) | _any_nonzero(offsets_cd))
        result: Dict[str, Tensor] = {
            "quad_trip_in_in": trip_in_in,
            "quad_trip_in_out": trip_in_out,
            "quad_trip_out_in": trip_out_in,
            "quad_trip_out_out": trip_out_out,
            "quad_out": quad_out.index_select(0, keep),
            "quad_trip_in_to_quad": trip_in_to_quad.index_select(0, keep),
            "quad_trip_out_to_quad": trip_out_to_quad.index_select(0, keep),
        }
        return result

    def _tag_filter(self, edge_index: Tensor, tags: Tensor) -> Tensor:
        """Mask of qint edges with a source or target tag in ``qint_tags``."""
        allowed = torch.tensor(self.qint_tags, dtype=torch.long, device=tags.device)
        tag_ok = (tags.to(torch.long).unsqueeze(1) == allowed.unsqueeze(0)).any(dim=1)  # (N,)
        return tag_ok[edge_index[0]] | tag_ok[edge_index[1]]

    # ----------------------------------------------------------------- forward
    def forward(
        self, positions: Tensor, cell: Tensor, pbc: Tensor, natoms: Tensor, tags: Tensor
    ) -> Dict[str, Tensor]:
        """All index tensors (see module docstring); offsets in ``positions.dtype``."""
        positions = positions.detach()
        cell = cell.detach()
        num_atoms = positions.shape[0]
        num_structures = natoms.shape[0]
        device = positions.device
        batch = expand_groups(natoms, num_atoms)
        out: Dict[str, Tensor] = {}

        if self.use_a2a:
            radius_cutoff = self.cutoff_aint
            radius_max = self.max_neighbors_aint
        else:
            radius_cutoff = self.cutoff
            radius_max = self.max_neighbors
        edge_index, shifts, _ = batched_radius_graph_pbc(
            positions, cell, pbc, natoms, radius_cutoff, radius_max
        )
        # GemNet orientation: offsets negated, vector = pos[t] - pos[s] + offsets @ cell.
        offsets = -shifts.to(positions.dtype)
        distance = self._distances(positions, cell, batch[edge_index[1]], edge_index, offsets)

        if self.use_a2a:
            main_index, main_offsets, main_distance = self._subselect(
                edge_index, offsets, distance, num_atoms,
                self.cutoff, self.max_neighbors, self.cutoff_aint, self.max_neighbors_aint,
            )
        else:
            main_index, main_offsets, main_distance = edge_index, offsets, distance

        if self.atom_interaction:
            out["a2a_edge_index"] = edge_index
            out["a2a_cell_offsets"] = offsets
            out["a2a_slot"], out["a2a_kmax"] = slots(edge_index[1], num_atoms)
        ae_index = edge_index
        ae_offsets = offsets
        if self.atom_edge_interaction or self.edge_atom_interaction:
            ae_index, ae_offsets, _ = self._subselect(
                edge_index, offsets, distance, num_atoms,
                self.cutoff_aeaint, self.max_neighbors_aeaint, self.cutoff_aint, self.max_neighbors_aint,
            )
            out["a2ee2a_edge_index"] = ae_index
            out["a2ee2a_cell_offsets"] = ae_offsets

        qint_index = edge_index
        qint_offsets = offsets
        if self.quad_interaction:
            if self.use_a2a:
                qint_index, qint_offsets, _ = self._subselect(
                    edge_index, offsets, distance, num_atoms,
                    self.cutoff_qint, self.max_neighbors_qint, self.cutoff_aint, self.max_neighbors_aint,
                )
            else:
                qint_index, qint_offsets, _ = self._subselect(
                    main_index, main_offsets, main_distance, num_atoms,
                    self.cutoff_qint, self.max_neighbors_qint, self.cutoff, self.max_neighbors,
                )
            keep = nonzero_1d(self._tag_filter(qint_index, tags))
            qint_index = qint_index.index_select(1, keep)
            qint_offsets = qint_offsets.index_select(0, keep)
            out["qint_edge_index"] = qint_index
            out["qint_cell_offsets"] = qint_offsets

        main_index, main_offsets, id_swap = self._symmetrize(
            main_index, main_offsets, batch[main_index[1]], num_structures
        )
        # Sort the main edges by target before any index set refers to them,
        # so that every aggregation destination is non-decreasing (ScatterND
        # with add reduction in ONNX Runtime CPU is only deterministic for
        # sorted indices). id_swap is remapped; the triplet/quadruplet lists
        # below are built on the sorted edge ids.
        main_index, main_offsets, id_swap = self._sort_by_target(main_index, main_offsets, id_swap)
        out["main_edge_index"] = main_index
        out["main_cell_offsets"] = main_offsets
        out["id_swap"] = id_swap

        num_main = main_index.shape[1]
        trip_in, trip_out = self._triplets(main_index, num_atoms)
        out["trip_e2e_in"] = trip_in
        out["trip_e2e_out"] = trip_out
        out["trip_e2e_slot"], out["trip_e2e_kmax"] = slots(trip_out, num_main)
        if self.quad_interaction:
            quad = self._quadruplets(main_index, main_offsets, qint_index, qint_offsets, num_atoms)
            for key, value in quad.items():
                out[key] = value
            out["quad_slot"], out["quad_kmax"] = slots(quad["quad_out"], num_main)
        if self.atom_edge_interaction:
            trip_in, trip_out = self._mixed_triplets(
                ae_index, ae_offsets, main_index, main_offsets, num_atoms, False
            )
            out["trip_a2e_in"] = trip_in
            out["trip_a2e_out"] = trip_out
            out["trip_a2e_slot"], out["trip_a2e_kmax"] = slots(trip_out, num_main)
        if self.edge_atom_interaction:
            trip_in, trip_out = self._mixed_triplets(
                main_index, main_offsets, ae_index, ae_offsets, num_atoms, False
            )
            out["trip_e2a_in"] = trip_in
            out["trip_e2a_out"] = trip_out
            out["trip_e2a_slot"], out["trip_e2a_kmax"] = slots(trip_out, ae_index.shape[1])
        ordered: Dict[str, Tensor] = {}
        for name in self.input_names:
            ordered[name] = out[name]
        return ordered


__all__ = ["GemNetOCGraph", "resolve_cutoffs"]
