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


def pad_groups(values: Tensor, out: Tensor, slot: Tensor, kmax: Tensor, num_groups: int) -> Tensor:
    """(T, C) -> (num_groups, K, C): ``values[t]`` at ``[out[t], slot[t]]``, zeros elsewhere.

    ``out`` (T,) sorted destination, ``slot`` (T,) the position within its
    group, ``kmax`` (K,) with K the largest group (``runtime/slots.py``);
    positions are unique, so in ONNX this is a plain copy (no accumulation).
    """
    width = kmax.shape[0]
    padded = torch.zeros((num_groups * width, values.shape[1]), dtype=values.dtype, device=values.device)
    return padded.index_put((out * width + slot,), values).reshape(num_groups, width, values.shape[1])
