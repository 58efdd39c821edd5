"""Small layers shared by the PaiNN and GemNet-OC rewrites.

Each one matches a fairchem-core 1.10 module of the same role and keeps its
``state_dict`` keys (``rbf.offset``, ``embeddings.weight``, ``scale_factor``).
"""

import math
from typing import Dict

import torch
from torch import Tensor, nn

# ScaledSiLU divides by this so that silu has roughly unit variance.
SCALED_SILU_DIVISOR: float = 0.6


class ScaledSiLU(nn.Module):
    """``silu(x) / 0.6`` (gemnet ``base_layers.ScaledSiLU``)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale_factor: float = 1.0 / SCALED_SILU_DIVISOR

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.silu(x) * self.scale_factor


class ScaleFactor(nn.Module):
    """Multiplies by a fitted constant (``modules/scaling/ScaleFactor``).

    The reference passes ``x`` through unchanged while the factor is 0
    (unfitted); the checkpoint loader stores 1.0 in that case, so the forward
    is a plain product. ``name`` is the key in the checkpoint's ``scale_dict``
    (the module path when the reference gave no explicit name).
    """

    def __init__(self, name: str = "") -> None:
        super().__init__()
        self.name: str = name
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale_factor


class AtomEmbedding(nn.Module):
    """``embeddings(Z - 1)``: (N,) int64 -> (N, emb_size)."""

    def __init__(self, emb_size: int, num_elements: int) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(num_elements, emb_size)

    def forward(self, atomic_numbers: Tensor) -> Tensor:
        return self.embeddings(atomic_numbers - 1)


class PolynomialEnvelope(nn.Module):
    """``1 + a d^p + b d^(p+1) + c d^(p+2)`` for ``d < 1``, else 0 (d = distance / cutoff)."""

    def __init__(self, exponent: int) -> None:
        super().__init__()
        if exponent <= 0:
            raise ValueError(f"polynomial envelope exponent must be > 0, got {exponent}")
        self.p: float = float(exponent)
        self.a: float = -(self.p + 1) * (self.p + 2) / 2
        self.b: float = self.p * (self.p + 2)
        self.c: float = -self.p * (self.p + 1) / 2

    def forward(self, d_scaled: Tensor) -> Tensor:
        value = (
            1
            + self.a * d_scaled**self.p
            + self.b * d_scaled ** (self.p + 1)
            + self.c * d_scaled ** (self.p + 2)
        )
        return torch.where(d_scaled < 1, value, torch.zeros_like(d_scaled))


class GaussianSmearing(nn.Module):
    """PyG ``GaussianSmearing(0, 1, num)``: ``exp(coeff * (d - offset)^2)``.

    ``coeff = -0.5 / (offset[1] - offset[0])^2`` is computed from the float32
    offsets, as in the reference.
    """

    def __init__(self, num_gaussians: int, start: float = 0.0, stop: float = 1.0) -> None:
        super().__init__()
        offset = torch.linspace(start, stop, num_gaussians)
        self.coeff: float = -0.5 / float((offset[1] - offset[0]).item()) ** 2
        self.register_buffer("offset", offset)

    def forward(self, distance: Tensor) -> Tensor:
        difference = distance.view(-1, 1) - self.offset.view(1, -1)
        return torch.exp(self.coeff * torch.pow(difference, 2))


class RadialBasis(nn.Module):
    """Envelope times gaussian basis of ``distance / cutoff``: (E,) -> (E, num_radial)."""

    def __init__(self, num_radial: int, cutoff: float, rbf: Dict[str, str], envelope: Dict[str, int]) -> None:
        super().__init__()
        self.inv_cutoff: float = 1.0 / cutoff
        self.envelope = PolynomialEnvelope(int(envelope["exponent"]))
        self.rbf = GaussianSmearing(num_radial)

    def forward(self, distance: Tensor) -> Tensor:
        d_scaled = distance * self.inv_cutoff
        return self.envelope(d_scaled)[:, None] * self.rbf(d_scaled)


def check_radial_options(rbf: dict, envelope: dict) -> None:
    """Reject basis options the rewrites do not implement, with a clear message."""
    if str(rbf.get("name", "gaussian")).lower() != "gaussian":
        raise ValueError(f"unsupported rbf {rbf!r}: only 'gaussian' (the OCP default) is implemented")
    extra = set(rbf) - {"name"}
    if extra:
        raise ValueError(f"unsupported rbf options {sorted(extra)}: only the default gaussian basis is implemented")
    if str(envelope.get("name", "polynomial")).lower() != "polynomial":
        raise ValueError(f"unsupported envelope {envelope!r}: only 'polynomial' (the OCP default) is implemented")


def inv_sqrt(n: float) -> float:
    """``1 / sqrt(n)`` as the reference computes its constants."""
    return 1.0 / math.sqrt(n)


# Floats per per-edge chunk tensor in the CPU edge loops of both models (4 MB
# in float32: 682 PaiNN edges of 3H = 1536, 2048 GemNet-OC edges of 512):
# far below glibc's mmap threshold, so chunks reuse heap memory, and close to
# the cache. Measured (PaiNN h512, 1,008-atom bulk, TorchScript, 2 threads):
# unchunked 13-16 s, 16 MB chunks 6-9 s, 4 MB 4-5.5 s, 1 MB 3.7-5.7 s; four
# GemNet-OC ResidualLayers on 30,280 x 512 edges: 1.60 s whole, 0.96 s in
# 2,048-row chunks (the 8 matmuls alone, whole: 1.08 s).
EDGE_CHUNK_ELEMENTS: int = 1024 * 1024


def edge_chunk_rows(chunk_elements: int, width: int, num_rows: int, is_cpu: bool) -> int:
    """Rows per chunk of a row-local computation on (num_rows, width) tensors.

    0 means one pass over all rows: when ``chunk_elements <= 0`` (ONNX
    exports: no data-dependent loops; checked first, so an exporter never
    compares symbolic sizes), off the CPU (a GPU wants few, large kernels),
    or when all rows fit in one chunk.
    """
    if chunk_elements <= 0 or not is_cpu:
        return 0
    rows = max(1, chunk_elements // max(1, width))
    return 0 if rows >= num_rows else rows


def pad_groups(values: Tensor, out: Tensor, slot: Tensor, kmax: Tensor, num_groups: int) -> Tensor:
    """(T, C) -> (num_groups, K, C): ``values[t]`` at ``[out[t], slot[t]]``, zeros elsewhere.

    ``out`` (T,) sorted destination, ``slot`` (T,) the position within its
    group, ``kmax`` (K,) with K the largest group (``runtime/slots.py``);
    positions are unique, so in ONNX this is a plain copy (no accumulation).
    """
    width = kmax.shape[0]
    padded = torch.zeros((num_groups * width, values.shape[1]), dtype=values.dtype, device=values.device)
    # In place on the fresh zeros: the out-of-place form copies the whole padded tensor once more.
    return padded.index_put_((out * width + slot,), values).reshape(num_groups, width, values.shape[1])


def slot_positions(out: Tensor, slot: Tensor, kmax: Tensor) -> Tensor:
    """(T,) flat positions ``out * K + slot`` of entries in a (num_groups * K,) padded layout."""
    return out * kmax.shape[0] + slot


def at_positions(values: Tensor, positions: Tensor, size: int) -> Tensor:
    """(T,) -> (size,): ``values[t]`` at ``positions[t]`` (unique), 0 elsewhere."""
    table = torch.zeros(size, dtype=values.dtype, device=values.device)
    return table.index_put_((positions,), values)


def padded_index(index: Tensor, out: Tensor, slot: Tensor, kmax: Tensor, num_groups: int) -> Tensor:
    """(T,) -> (num_groups * K,): ``index[t]`` at ``out[t] * K + slot[t]``, 0 at unused slots.

    A gather table: ``rows.index_select(0, table).reshape(num_groups, K, C)``
    is ``pad_groups(rows[index], ...)`` except that unused slots hold
    ``rows[0]`` instead of zeros, so it must only be contracted with a
    padded tensor that is zero there (``pad_groups`` output or
    :func:`padding_mask`). It never forms the (T, C) gather, nor a zero
    fill and a scatter per call. Several tables over the same slots:
    ``at_positions(index, slot_positions(...), num_groups * K)``.
    """
    return at_positions(index, slot_positions(out, slot, kmax), num_groups * kmax.shape[0])


def occupied_mask(positions: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """(size,) of ``dtype``: 1 at ``positions`` (T,), 0 elsewhere."""
    return at_positions(torch.ones(positions.shape[0], dtype=dtype, device=positions.device), positions, size)


def padding_mask(out: Tensor, slot: Tensor, kmax: Tensor, num_groups: int, dtype: torch.dtype) -> Tensor:
    """(num_groups * K,) of ``dtype``: 1 at the slots entries occupy, 0 at unused ones."""
    return occupied_mask(slot_positions(out, slot, kmax), num_groups * kmax.shape[0], dtype)