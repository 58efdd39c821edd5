"""Stable orders, group expansion and sorted look-ups from exportable operations.

Graph construction runs in TorchScript, in ``torch.export`` (ONNX and
AOTInductor artifacts) and in eager Python from one implementation. Three
operations it needs have no ONNX translation in torch 2.13 (``sort`` with
``stable=True``, ``searchsorted``, ``kthvalue``); these helpers rebuild what
is needed from plain sorts of unique integer keys, which export to ONNX
(``TopK``) and give one order everywhere, because a sort of unique keys has
only one answer.

All helpers are integer-only and read no tensor value on the host.
"""

from typing import Optional

import torch
from torch import Tensor

# The most entries (edges, candidate pairs, triplets, quadruplets) one call
# declares to ``torch.export``. Bounding every data-dependent count keeps the
# bounds of sizes derived from them (products, sums) inside int64, which
# the ONNX translation of the program's size checks needs.
MAX_ENTRIES = 2**31 - 1


def declare_entries(entries: Tensor) -> Tensor:
    """``entries`` unchanged; while exporting, its length is declared at most ``MAX_ENTRIES``."""
    if not torch.jit.is_scripting():
        torch._check(entries.shape[0] <= MAX_ENTRIES)
    return entries


def nonzero_1d(mask: Tensor) -> Tensor:
    """Indices (K,) int64 of the true entries of a 1-D ``mask``, in order (a data-dependent size)."""
    return declare_entries(torch.nonzero(mask).reshape(-1))


def stable_argsort(values: Tensor) -> Tensor:
    """``torch.sort(values, stable=True).indices`` for int64 ``values`` (E,) >= 0.

    The key ``value * E + position`` is unique, so a plain sort of it is
    stable; ``max(values) * E`` must stay below 2^63 (atom and edge counts
    of any structure this project runs are far below that).
    """
    count = values.shape[0]
    position = torch.arange(count, dtype=torch.long, device=values.device)
    return torch.argsort(values * count + position)


def inverse_permutation(order: Tensor) -> Tensor:
    """``inverse[order[k]] = k`` of a permutation (E,) int64."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.shape[0], dtype=order.dtype, device=order.device)
    return inverse


def expand_groups(counts: Tensor, total: Optional[int] = None) -> Tensor:
    """Group of every entry when group ``g`` has ``counts[g]`` entries, in group order, (sum(counts),) int64.

    ``[2, 0, 3] -> [0, 0, 2, 2, 2]``: ``repeat_interleave`` of the group
    numbers (exportable; the total is a data-dependent size unless the
    caller knows it: ``total``, such as the atom count of ``natoms``).
    """
    if total is not None:
        # A mark at the first entry of every group; the running count of
        # marks, less one, is the group (empty groups share their mark
        # position with the next group, which wins).
        marks = torch.zeros(total + 1, dtype=torch.long, device=counts.device)
        marks.index_add_(0, torch.cumsum(counts, dim=0) - counts, torch.ones_like(counts))
        return torch.cumsum(marks, dim=0)[:total] - 1
    if not torch.jit.is_scripting():
        if EXPAND_BY_MARKS[0]:
            return _expand_by_marks(counts)
    # A trailing group without entries: ONNX's translation of repeat_interleave
    # reads the last count, so no groups at all (no triplets: no quadruplet
    # groups) would index an empty tensor.
    padded = torch.cat([counts, torch.zeros(1, dtype=counts.dtype, device=counts.device)])
    groups = torch.arange(padded.shape[0], dtype=torch.long, device=counts.device)
    return declare_entries(torch.repeat_interleave(groups, padded))


# Set while a program is captured for ONNX (``exporter/write_onnx.py``):
# onnxscript translates repeat_interleave by comparing every output position
# with every group end, a (groups x entries) matrix (10^11 elements for
# GemNet-OC's quadruplet groups of a bulk cell), so there group numbers come
# from marks and a running sum instead, O(groups + entries).
EXPAND_BY_MARKS = [False]


def _expand_by_marks(counts: Tensor) -> Tensor:
    """``expand_groups(counts)`` from a 1 at each group's first entry and a running sum (the total read as a size)."""
    total = counts.sum().item()
    torch._check_is_size(total)
    torch._check(total <= MAX_ENTRIES)
    marks = torch.zeros(total + 1, dtype=torch.long, device=counts.device)
    marks.index_add_(0, torch.cumsum(counts, dim=0) - counts, torch.ones_like(counts))
    return torch.cumsum(marks, dim=0)[:total] - 1


def lower_bound(sorted_values: Tensor, queries: Tensor) -> Tensor:
    """Number of ``sorted_values`` (G,) below each of ``queries`` (Q,), both int64 >= 0; (Q,) int64.

    ``torch.searchsorted(sorted_values, queries)`` by one merge: values and
    queries are sorted together with each query before the values equal to
    it; a query's position in the merge, less the queries before it, is the
    count of values below it. Ties among equal keys do not change the
    count, so an unstable sort suffices.
    """
    num_values = sorted_values.shape[0]
    merged_keys = torch.cat([sorted_values * 2 + 1, queries * 2])
    merged = torch.argsort(merged_keys)
    is_query = (merged >= num_values).to(torch.long)
    queries_before = torch.cumsum(is_query, dim=0) - is_query
    values_before = torch.arange(merged.shape[0], dtype=torch.long, device=queries.device) - queries_before
    # Scatter each query's count back to the query's own position.
    result = torch.zeros(merged.shape[0], dtype=torch.long, device=queries.device)
    result[merged] = values_before
    return result[num_values:]


__all__ = ["declare_entries", "expand_groups", "inverse_permutation", "lower_bound", "nonzero_1d", "stable_argsort"]
