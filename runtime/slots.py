"""Aggregation slots of a sorted destination index (graph construction side).

A model sums per-entry values into destination groups (edges into target
atoms, triplets into edges) without an accumulating scatter by copying each
entry to ``[destination, slot]`` of a zero (G, K, ...) tensor and reducing
over K (``exporter/models/layers.py::pad_groups``). These helpers compute the
slots: scriptable, integer-only, run inside TorchScript artifacts and by the
Python runtime before ONNX sessions.
"""

from typing import Tuple

import torch
from torch import Tensor

from .sorting import nonzero_1d


def group_offsets(counts: Tensor) -> Tensor:
    """Exclusive cumulative sum: the first position of each group, (G,)."""
    return torch.cumsum(counts, dim=0) - counts


def inner_index(sorted_index: Tensor, num_groups: int) -> Tensor:
    """Enumerate entries within groups of a sorted index: [0 0 1 1 1] -> [0 1 0 1 2]."""
    counts = torch.zeros(num_groups, dtype=torch.long, device=sorted_index.device)
    counts.index_add_(0, sorted_index, torch.ones_like(sorted_index))
    first = group_offsets(counts)
    return torch.arange(sorted_index.shape[0], device=sorted_index.device) - first.index_select(0, sorted_index)


def slots(sorted_out: Tensor, num_groups: int) -> Tuple[Tensor, Tensor]:
    """Aggregation slots of a sorted destination index (T,).

    Returns ``slot`` (T,): the position of each entry within its destination
    group, and ``kmax`` (K,) zeros whose length K is the largest group size:
    the model pads entries into (num_groups, K, ...) at ``[out, slot]`` and
    sums them with a batched matmul (the reference's ``out_agg`` / Kmax
    layout; K travels as a tensor length so that ONNX sees it as a dynamic
    dimension).

    K is taken as the length of the largest group's entries, never read on
    the host, so the same code runs in exported programs; a zero count is
    appended so that no groups (and no entries) give K = 0.
    """
    slot = inner_index(sorted_out, num_groups)
    counts = torch.zeros(num_groups + 1, dtype=torch.long, device=sorted_out.device)
    counts.index_add_(0, sorted_out, torch.ones_like(sorted_out))
    largest = torch.argmax(counts)
    members = nonzero_1d(sorted_out == largest)
    return slot, torch.zeros_like(members)
