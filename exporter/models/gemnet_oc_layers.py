"""Building blocks of the GemNet-OC rewrite (``models/gemnet_oc/layers``).

Every module keeps the reference's ``state_dict`` keys. The reference's
"efficient" layers pad triplets/quadruplets into ``(E, Kmax, ...)`` tensors
whose size depends on the data; here the same sums are written with
``index_add`` into the aggregation targets, which scripts and exports to
ONNX:

* ``BasisEmbedding`` returns the radial part ``rad_W1`` (E, I, S) (or (E, I)
  without a spherical part); the spherical basis stays per triplet.
* ``EfficientInteractionBilinear``: ``sph_m[e] = sum_{t: out[t]=e} sph[t] (x) m[t]``
  (E, S, in), then ``rad_W1[e] @ sph_m[e]`` (E, I, in), optionally summed
  again per target atom, flattened (I*in) and mapped by the bias-free
  ``bilinear`` Dense. The first sum is the reference's: ``sph`` and ``m``
  are copied into (E, K, S) / (E, K, in) at ``[out, slot]`` (unique
  positions, K the largest group; the shared bases once per model, the
  messages per block) and contracted with one batched matmul;
  that never forms the (T, S, in) outer product, which for the base model's
  6.7M quadruplets on a 1,008-atom bulk would be 42 GB.

Edge convention: ``edge_index[0]`` source ``s``, ``edge_index[1]`` target
``t``; messages are aggregated into targets.
"""

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .layers import ScaleFactor, ScaledSiLU, pad_groups

INV_SQRT_2: float = 1.0 / math.sqrt(2.0)


class Dense(nn.Module):
    """``linear`` (no bias by default) followed by ScaledSiLU or identity."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, activation: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = ScaledSiLU() if activation else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.linear(x))


class ResidualLayer(nn.Module):
    """``(x + MLP(x)) / sqrt(2)`` with two activated Dense layers (``dense_mlp``)."""

    def __init__(self, units: int, num_layers: int = 2) -> None:
        super().__init__()
        self.inv_sqrt_2 = INV_SQRT_2
        self.dense_mlp = nn.Sequential(*[Dense(units, units, activation=True) for _ in range(num_layers)])

    def forward(self, x: Tensor) -> Tensor:
        return (x + self.dense_mlp(x)) * self.inv_sqrt_2


def residual_mlp(units_in: int, units: int, num_hidden: int) -> nn.ModuleList:
    """``AtomUpdateBlock.get_mlp``: optional Dense(in -> units) then residual layers."""
    layers: List[nn.Module] = []
    if units_in != units:
        layers.append(Dense(units_in, units, activation=True))
    layers += [ResidualLayer(units) for _ in range(num_hidden)]
    return nn.ModuleList(layers)


class EdgeEmbedding(nn.Module):
    """``dense(cat[h[s], h[t], m])``: -> (E, out_features)."""

    def __init__(self, atom_features: int, edge_features: int, out_features: int) -> None:
        super().__init__()
        self.dense = Dense(2 * atom_features + edge_features, out_features, activation=True)

    def forward(self, h: Tensor, m: Tensor, edge_index: Tensor) -> Tensor:
        return self.dense(torch.cat([h[edge_index[0]], h[edge_index[1]], m], dim=-1))


def grouped_outer_sum(a_padded: Tensor, b: Tensor, out: Tensor, slot: Tensor, kmax: Tensor) -> Tensor:
    """``result[g] = sum_{t: out[t] = g} a[t] (x) b[t]``: (G, K, S) padded ``a``, (T, C) -> (G, S, C).

    ``a`` comes padded (``pad_groups``, done once per model for the bases
    every block shares); ``b`` is padded the same way and both are
    contracted with one batched matmul: exact sums without forming the
    (T, S, C) outer product.
    """
    return torch.matmul(a_padded.transpose(1, 2), pad_groups(b, out, slot, kmax, a_padded.shape[0]))


class BasisEmbedding(nn.Module):
    """Radial part of a circular/spherical basis embedding.

    With ``num_spherical`` S: weight (R, S, I), ``forward(rad (E, R)) -> (E, I, S)``
    by the reference's reshape of ``rad @ weight.reshape(R, S*I)``. Without:
    weight (I, R), ``forward(rad) -> (E, I)``.
    """

    num_spherical: int

    def __init__(self, num_radial: int, emb_size_interm: int, num_spherical: int = 0) -> None:
        super().__init__()
        self.num_spherical = num_spherical
        if num_spherical > 0:
            self.weight = nn.Parameter(torch.empty(num_radial, num_spherical, emb_size_interm))
        else:
            self.weight = nn.Parameter(torch.empty(emb_size_interm, num_radial))
        nn.init.normal_(self.weight)

    def forward(self, rad_basis: Tensor) -> Tensor:
        if self.num_spherical > 0:
            rad_w1 = rad_basis @ self.weight.reshape(self.weight.shape[0], -1)
            # Explicit sizes (the reference's -1 fails for zero edges).
            return rad_w1.reshape(rad_basis.shape[0], self.weight.shape[2], self.num_spherical)
        return rad_basis @ self.weight.t()

    def project(self, rad_basis: Tensor, sph_basis: Tensor, outer: Tensor) -> Tensor:
        """No aggregation (``idx_sph_inner`` None): ``rad_W1[outer] @ sph`` -> (T, I)."""
        rad_w1 = self.forward(rad_basis)[outer]  # (T, I, S)
        return (rad_w1 @ sph_basis[:, :, None]).squeeze(-1)


class EfficientInteractionBilinear(nn.Module):
    """Sum over triplets/quadruplets and bilinear map (index_add form).

    ``forward(rad_w1 (Eo, I, S), sph (Eo, K, S) padded by ``pad_groups``, m (T, in),
    out (T,), slot (T,), kmax (K,)) -> (Eo, out_size)``; ``out`` sorted,
    ``slot`` the position within its group, K the largest group;
    ``forward_to_atoms`` adds a second sum of the per-edge results into
    ``num_atoms`` targets (``idx_agg2``).
    """

    emb_size_in: int
    emb_size_interm: int

    def __init__(self, emb_size_in: int, emb_size_interm: int, emb_size_out: int) -> None:
        super().__init__()
        self.emb_size_in = emb_size_in
        self.emb_size_interm = emb_size_interm
        self.bilinear = Dense(emb_size_in * emb_size_interm, emb_size_out)

    def _sph_m(self, rad_w1: Tensor, sph: Tensor, m: Tensor, out: Tensor, slot: Tensor, kmax: Tensor) -> Tensor:
        return grouped_outer_sum(sph, m, out, slot, kmax)  # (Eo, S, in)

    def forward(self, rad_w1: Tensor, sph: Tensor, m: Tensor, out: Tensor, slot: Tensor, kmax: Tensor) -> Tensor:
        x = torch.matmul(rad_w1, self._sph_m(rad_w1, sph, m, out, slot, kmax))  # (Eo, I, in)
        return self.bilinear(x.reshape(x.shape[0], x.shape[1] * x.shape[2]))

    def forward_to_atoms(
        self, rad_w1: Tensor, sph: Tensor, m: Tensor, out: Tensor, slot: Tensor, kmax: Tensor,
        edge_target: Tensor, num_atoms: int,
    ) -> Tensor:
        per_edge = torch.matmul(rad_w1, self._sph_m(rad_w1, sph, m, out, slot, kmax))  # (Eo, I, in)
        x = torch.zeros(
            (num_atoms, per_edge.shape[1], per_edge.shape[2]), dtype=m.dtype, device=m.device
        ).index_add(0, edge_target, per_edge)  # (N, I, in)
        return self.bilinear(x.reshape(num_atoms, x.shape[1] * x.shape[2]))


class TripletInteraction(nn.Module):
    """Triplet message passing (edge-edge, atom-edge or edge-atom).

    Inputs: embeddings ``m`` of the in-graph (edges, or atoms expanded to
    a2ee2a edges), ``rad`` (E_in, emb_rbf), ``rad_w1`` (E_out, I, S), ``cir``
    (T, S), triplet ``trip_in``/``trip_out`` and ``id_swap``.
    """

    symmetric_mp: bool
    swap_output: bool

    def __init__(
        self, emb_size_in: int, emb_size_out: int, emb_size_trip_in: int, emb_size_trip_out: int,
        emb_size_rbf: int, emb_size_cbf: int, symmetric_mp: bool, swap_output: bool, scale_prefix: str,
    ) -> None:
        super().__init__()
        self.inv_sqrt_2 = INV_SQRT_2
        self.symmetric_mp = symmetric_mp
        self.swap_output = swap_output
        self.dense_ba = Dense(emb_size_in, emb_size_in, activation=True)
        self.mlp_rbf = Dense(emb_size_rbf, emb_size_in)
        self.scale_rbf = ScaleFactor(name=scale_prefix + ".scale_rbf")
        self.mlp_cbf = EfficientInteractionBilinear(emb_size_trip_in, emb_size_cbf, emb_size_trip_out)
        self.scale_cbf_sum = ScaleFactor(name=scale_prefix + ".scale_cbf_sum")
        self.down_projection = Dense(emb_size_in, emb_size_trip_in, activation=True)
        self.up_projection_ca = Dense(emb_size_trip_out, emb_size_out, activation=True)
        self.up_projection_ac = Dense(emb_size_trip_out, emb_size_out, activation=True) if symmetric_mp else None

    def _messages(self, m: Tensor, rad: Tensor, trip_in: Tensor, expand: Optional[Tensor]) -> Tensor:
        x_ba = self.dense_ba(m)
        if expand is not None:
            x_ba = x_ba[expand]
        x_ba = self.scale_rbf(x_ba * self.mlp_rbf(rad))
        return self.down_projection(x_ba)[trip_in]  # (T, trip_in)

    def _output(self, x: Tensor, id_swap: Tensor) -> Tensor:
        x = self.scale_cbf_sum(x)
        if self.up_projection_ac is not None:
            x_ca = self.up_projection_ca(x)
            x_ac = self.up_projection_ac(x)[id_swap]
            return (x_ca + x_ac) * self.inv_sqrt_2
        if self.swap_output:
            x = x[id_swap]
        return self.up_projection_ca(x)

    def forward(
        self, m: Tensor, rad: Tensor, rad_w1: Tensor, cir: Tensor, trip_in: Tensor, trip_out: Tensor,
        trip_slot: Tensor, trip_kmax: Tensor, id_swap: Tensor, expand: Optional[Tensor] = None,
    ) -> Tensor:
        x_ba = self._messages(m, rad, trip_in, expand)
        return self._output(self.mlp_cbf(rad_w1, cir, x_ba, trip_out, trip_slot, trip_kmax), id_swap)

    def forward_to_atoms(
        self, m: Tensor, rad: Tensor, rad_w1: Tensor, cir: Tensor, trip_in: Tensor, trip_out: Tensor,
        trip_slot: Tensor, trip_kmax: Tensor, id_swap: Tensor, edge_target: Tensor, num_atoms: int,
    ) -> Tensor:
        x_ba = self._messages(m, rad, trip_in, None)
        x = self.mlp_cbf.forward_to_atoms(rad_w1, cir, x_ba, trip_out, trip_slot, trip_kmax, edge_target, num_atoms)
        return self._output(x, id_swap)


class QuadrupletInteraction(nn.Module):
    """Quadruplet message passing d->b->a<-c (symmetric)."""

    def __init__(
        self, emb_size_edge: int, emb_size_quad_in: int, emb_size_quad_out: int, emb_size_rbf: int,
        emb_size_cbf: int, emb_size_sbf: int, scale_prefix: str,
    ) -> None:
        super().__init__()
        self.inv_sqrt_2 = INV_SQRT_2
        self.dense_db = Dense(emb_size_edge, emb_size_edge, activation=True)
        self.mlp_rbf = Dense(emb_size_rbf, emb_size_edge)
        self.scale_rbf = ScaleFactor(name=scale_prefix + ".scale_rbf")
        self.mlp_cbf = Dense(emb_size_cbf, emb_size_quad_in)
        self.scale_cbf = ScaleFactor(name=scale_prefix + ".scale_cbf")
        self.mlp_sbf = EfficientInteractionBilinear(emb_size_quad_in, emb_size_sbf, emb_size_quad_out)
        self.scale_sbf_sum = ScaleFactor(name=scale_prefix + ".scale_sbf_sum")
        self.down_projection = Dense(emb_size_edge, emb_size_quad_in, activation=True)
        self.up_projection_ca = Dense(emb_size_quad_out, emb_size_edge, activation=True)
        self.up_projection_ac = Dense(emb_size_quad_out, emb_size_edge, activation=True)

    def forward(
        self, m: Tensor, rad: Tensor, cir: Tensor, rad_w1: Tensor, sph: Tensor, trip_in_in: Tensor,
        trip_in_to_quad: Tensor, quad_out: Tensor, quad_slot: Tensor, quad_kmax: Tensor, id_swap: Tensor,
    ) -> Tensor:
        """``rad`` (E, emb_rbf), ``cir`` (T_in, emb_cbf), ``rad_w1`` (E, I, S^2), ``sph`` (Q, S^2)."""
        x_db = self.dense_db(m)
        x_db = self.scale_rbf(x_db * self.mlp_rbf(rad))
        x_db = self.down_projection(x_db)[trip_in_in]  # (T_in, quad_in)
        x_db = self.scale_cbf(x_db * self.mlp_cbf(cir))
        x_db = x_db[trip_in_to_quad]  # (Q, quad_in)
        x = self.scale_sbf_sum(self.mlp_sbf(rad_w1, sph, x_db, quad_out, quad_slot, quad_kmax))
        return (self.up_projection_ca(x) + self.up_projection_ac(x)[id_swap]) * self.inv_sqrt_2


class PairInteraction(nn.Module):
    """Atom-atom interaction over the a2a graph: (N, emb_atom) -> (N, emb_atom)."""

    def __init__(self, emb_size_atom: int, emb_size_pair_in: int, emb_size_pair_out: int,
                 emb_size_rbf: int, scale_prefix: str) -> None:
        super().__init__()
        self.bilinear = Dense(emb_size_rbf * emb_size_pair_in, emb_size_pair_out)
        self.scale_rbf_sum = ScaleFactor(name=scale_prefix + ".scale_rbf_sum")
        self.down_projection = Dense(emb_size_atom, emb_size_pair_in, activation=True)
        self.up_projection = Dense(emb_size_pair_out, emb_size_atom, activation=True)

    def forward(self, h: Tensor, rad_w1: Tensor, edge_index: Tensor, slot: Tensor, kmax: Tensor) -> Tensor:
        """``rad_w1`` (N, K, emb_rbf): ``mlp_rbf_aint`` of the a2a edges padded by target
        (``pad_groups``); ``edge_index[1]`` sorted, ``slot``/``kmax`` its slots."""
        num_atoms = h.shape[0]
        x_ba = self.down_projection(h)[edge_index[0]]  # (Ea, pair_in)
        x = grouped_outer_sum(rad_w1, x_ba, edge_index[1], slot, kmax)  # (N, rbf, pair_in)
        h_out = self.scale_rbf_sum(self.bilinear(x.reshape(num_atoms, x.shape[1] * x.shape[2])))
        return self.up_projection(h_out)


class AtomUpdateBlock(nn.Module):
    """Sum of ``m * dense_rbf(rad)`` into targets, then an MLP (``layers``)."""

    def __init__(self, emb_size_atom: int, emb_size_edge: int, emb_size_rbf: int, num_hidden: int,
                 scale_prefix: str) -> None:
        super().__init__()
        self.dense_rbf = Dense(emb_size_rbf, emb_size_edge)
        self.scale_sum = ScaleFactor(name=scale_prefix + ".scale_sum")
        self.layers = residual_mlp(emb_size_edge, emb_size_atom, num_hidden)

    def forward(self, h: Tensor, m: Tensor, rad: Tensor, edge_target: Tensor) -> Tensor:
        x = m * self.dense_rbf(rad)
        x = torch.zeros((h.shape[0], x.shape[1]), dtype=x.dtype, device=x.device).index_add(0, edge_target, x)
        x = self.scale_sum(x)
        for layer in self.layers:
            x = layer(x)
        return x


class OutputBlock(nn.Module):
    """Per-block energy (N, emb_atom) and force (E, emb_edge) features.

    ``layers`` and ``seq_energy_pre`` are the same module (both keys exist
    in the reference state_dict).
    """

    direct_forces: bool

    def __init__(self, emb_size_atom: int, emb_size_edge: int, emb_size_rbf: int, num_hidden: int,
                 num_hidden_afteratom: int, direct_forces: bool, scale_prefix: str) -> None:
        super().__init__()
        self.inv_sqrt_2 = INV_SQRT_2
        self.direct_forces = direct_forces
        self.dense_rbf = Dense(emb_size_rbf, emb_size_edge)
        self.scale_sum = ScaleFactor(name=scale_prefix + ".scale_sum")
        self.layers = residual_mlp(emb_size_edge, emb_size_atom, num_hidden)
        self.seq_energy_pre = self.layers
        self.seq_energy2 = (
            residual_mlp(emb_size_atom, emb_size_atom, num_hidden_afteratom) if num_hidden_afteratom >= 1 else None
        )
        if direct_forces:
            self.scale_rbf_F = ScaleFactor(name=scale_prefix + ".scale_rbf_F")
            self.seq_forces = residual_mlp(emb_size_edge, emb_size_edge, num_hidden)
            self.dense_rbf_F = Dense(emb_size_rbf, emb_size_edge)
        else:
            self.scale_rbf_F = None
            self.seq_forces = None
            self.dense_rbf_F = None

    def forward(self, h: Tensor, m: Tensor, rad: Tensor, edge_target: Tensor) -> Tuple[Tensor, Tensor]:
        x = m * self.dense_rbf(rad)
        x_e = torch.zeros((h.shape[0], x.shape[1]), dtype=x.dtype, device=x.device).index_add(0, edge_target, x)
        x_e = self.scale_sum(x_e)
        for layer in self.seq_energy_pre:
            x_e = layer(x_e)
        if self.seq_energy2 is not None:
            x_e = (x_e + h) * self.inv_sqrt_2
            for layer in self.seq_energy2:
                x_e = layer(x_e)
        x_f = torch.zeros((0, m.shape[1]), dtype=m.dtype, device=m.device)
        if self.seq_forces is not None:
            x_f = m
            for layer in self.seq_forces:
                x_f = layer(x_f)
            x_f = self.scale_rbf_F(x_f * self.dense_rbf_F(rad))
        return x_e, x_f
