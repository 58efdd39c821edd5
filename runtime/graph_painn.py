"""PaiNN's graph: radius graph, then fairchem's edge symmetrisation.

Reference: ``PaiNN.generate_graph_values`` / ``symmetrize_edges`` (the
non-symmetric branch) in fairchem-core 1.10. From the radius graph it keeps an
edge ``j -> i`` when ``j < i``, or ``j == i`` and its shift is
lexicographically negative, then appends the flipped copy of every kept edge
(source and target swapped, shift negated). Per structure the order is
``[kept edges][their flips]``. The result is not the raw radius graph.

Finally the edges are stably sorted by target atom (row 1). That changes only
the summation order (float round-off), and it makes the aggregation of
exported ONNX graphs race-free: ONNX Runtime's ScatterND with add reduction
is only deterministic on sorted indices.

Output (``Dict[str, Tensor]``, keys in ``input_names`` order):
    edge_index: (2, E) int64, row 0 source j, row 1 target i, sorted by i.
    cell_offsets: (E, 3) float (dtype of positions), integer shifts of j:
        ``vector = positions[j] - positions[i] + cell_offsets @ cell[batch[i]]``.
    edge_slot: (E,) int64, position of each edge among the edges of its
        target; edge_kmax: (K,) zeros, K the most edges of one target
        (``runtime/slots.py``). ONNX artifacts sum messages through this
        padded (N, K) layout instead of an accumulating scatter.
"""

from typing import Dict, Final, List

import torch
from torch import Tensor, nn

from .keys import CELL_OFFSETS, EDGE_INDEX, EDGE_KMAX, EDGE_SLOT
from .radius_graph import batched_radius_graph_pbc
from .slots import group_offsets, slots
from .sorting import expand_groups, nonzero_1d, stable_argsort


def _lexicographically_negative(cell_offsets: Tensor) -> Tensor:
    """(E,) bool: the shift is before zero in (x, y, z) lexicographic order."""
    x = cell_offsets[:, 0]
    y = cell_offsets[:, 1]
    z = cell_offsets[:, 2]
    return (x < 0) | ((x == 0) & (y < 0)) | ((x == 0) & (y == 0) & (z < 0))


class PaiNNGraph(nn.Module):
    """Prepared graph tensors of a batch of structures for the PaiNN core."""

    edge_index_key: Final[str] = EDGE_INDEX
    cell_offsets_key: Final[str] = CELL_OFFSETS
    edge_slot_key: Final[str] = EDGE_SLOT
    edge_kmax_key: Final[str] = EDGE_KMAX
    input_names: List[str]
    cutoff: float
    max_neighbors: int

    def __init__(self, cutoff: float, max_neighbors: int) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.input_names = [EDGE_INDEX, CELL_OFFSETS, EDGE_SLOT, EDGE_KMAX]

    def forward(
        self, positions: Tensor, cell: Tensor, pbc: Tensor, natoms: Tensor, tags: Tensor
    ) -> Dict[str, Tensor]:
        edge_index, cell_offsets, edges_per_structure = batched_radius_graph_pbc(
            positions, cell, pbc, natoms, self.cutoff, self.max_neighbors
        )
        batch = expand_groups(natoms, positions.shape[0])
        graph = self.symmetrize(edge_index, cell_offsets, batch.index_select(0, edge_index[1]), natoms.shape[0], positions.dtype)
        slot, kmax = slots(graph[self.edge_index_key][1], positions.shape[0])
        graph[self.edge_slot_key] = slot
        graph[self.edge_kmax_key] = kmax
        return graph

    def symmetrize(
        self, edge_index: Tensor, cell_offsets: Tensor, edge_structure: Tensor, num_structures: int, dtype: torch.dtype
    ) -> Dict[str, Tensor]:
        """Symmetrise a radius graph (in reference order) and sort by target.

        edge_index (2, E), cell_offsets (E, 3) int64 and edge_structure (E,),
        the structure of every edge (structures contiguous).
        """
        source = edge_index[0]
        target = edge_index[1]
        keep = nonzero_1d((source < target) | ((source == target) & _lexicographically_negative(cell_offsets)))
        kept_index = edge_index.index_select(1, keep)
        kept_offsets = cell_offsets.index_select(0, keep)
        num_kept = kept_index.shape[1]

        # Structure of every kept edge, and kept edges per structure.
        structure_of_edge = edge_structure.index_select(0, keep)
        kept_per_structure = torch.zeros(num_structures, dtype=torch.long, device=edge_index.device)
        kept_per_structure.index_add_(0, structure_of_edge, torch.ones_like(structure_of_edge))
        first_kept = group_offsets(kept_per_structure)

        # Structure s with h_s kept edges starting at k0_s occupies output slots
        # [2 k0_s, 2 k0_s + 2 h_s): kept edge k -> k0_s + k, its flip -> k0_s + h_s + k.
        kept_ids = torch.arange(num_kept, device=edge_index.device)
        start = first_kept[structure_of_edge]
        order = torch.empty(2 * num_kept, dtype=torch.long, device=edge_index.device)
        order[start + kept_ids] = kept_ids
        order[start + kept_per_structure[structure_of_edge] + kept_ids] = kept_ids + num_kept

        both_index = torch.cat([kept_index, kept_index.flip(0)], dim=1).index_select(1, order)
        both_offsets = torch.cat([kept_offsets, -kept_offsets], dim=0).index_select(0, order)

        by_target = stable_argsort(both_index[1])
        return {
            self.edge_index_key: both_index.index_select(1, by_target),
            self.cell_offsets_key: both_offsets.index_select(0, by_target).to(dtype),
        }
