"""Building blocks of the GemNet-OC rewrite (``models/gemnet_oc/layers``).

Every module keeps the reference's ``state_dict`` keys. The reference's
"efficient" layers pad triplets/quadruplets into ``(E, Kmax, ...)`` tensors
whose size depends on the data; here the same sums are written with
``index_add`` into the aggregation targets, which scripts and exports to
ONNX:

* ``BasisEmbedding`` returns the radial part ``rad_W1`` (E, I, S) (or (E, I)
  without a spherical part); the spherical basis stays per triplet.
* ``EfficientInteractionBilinear``: ``sph_m[e] = sum_{t: out[t]=e} sph[t] (x) m[in[t]]``
  (E, S, in), then ``rad_W1[e] @ sph_m[e]`` (E, I, in), optionally summed
  again per target atom, flattened (I*in) and mapped by the bias-free
  ``bilinear`` Dense. The first sum is the reference's (E, K, .) layout:
  ``sph`` is padded once per model (zeros at unused slots, K the largest
  group), the messages are gathered per block straight into (E, K, in)
  through a ``padded_index`` table, and both are contracted with one
  batched matmul; that never forms the (T, S, in) outer product (42 GB for
  the base model's 6.7M quadruplets on a 1,008-atom bulk), nor the (T, in)
  gather, a zero fill or a scatter per block.
* Quadruplets (S = 49 two-angle functions, more than I = emb_size_sbf):
  ``rad_W1[e] @ sph_pad[e]^T`` is contracted once per model into weights
  (E, I, K), so each block does one (I x K) @ (K x in) product per edge
  (the same sum in another order; fewer FLOPs and a smaller shared tensor).

Row-local work on the (E, 512) edge embeddings (Dense chains, residual
updates, per-edge products before a sum into atoms) runs in edge chunks of
``edge_chunk_elements`` floats on the CPU (``layers.edge_chunk_rows``): the
same values, computed in cache instead of as whole E x 512 tensors that
are memory-bound to create and fill. ONNX exports set it to 0 (one pass).

Edge convention: ``edge_index[0]`` source ``s``, ``edge_index[1]`` target
``t``; messages are aggregated into targets.
"""

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .layers import EDGE_CHUNK_ELEMENTS, ScaleFactor, ScaledSiLU, edge_chunk_rows

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


def gather_padded(rows: Tensor, rows_padded: Tensor, num_groups: int, width: int) -> Tensor:
    """(R, C) rows -> (num_groups, width, C) by a ``padded_index`` table (G*K,)."""
    return rows.index_select(0, rows_padded).reshape(num_groups, width, rows.shape[1])


def grouped_outer_sum(a_padded: Tensor, rows: Tensor, rows_padded: Tensor) -> Tensor:
    """``result[g] = sum_{t: out[t] = g} a[t] (x) rows[in[t]]``: (G, K, S), (R, C) -> (G, S, C).

    ``a`` comes padded (``pad_groups``: zeros at unused slots; done once per
    model for the bases every block shares); ``rows_padded`` (G*K,) is the
    ``padded_index`` table of ``in``, so the gathered rows land in the same
    (G, K, C) layout (unused slots hold row 0, multiplied by a's zeros) and
    both are contracted with one batched matmul: exact sums without forming
    the (T, S, C) outer product.
    """
    num_groups = a_padded.shape[0]
    b = gather_padded(rows, rows_padded, num_groups, a_padded.shape[1])
    return torch.matmul(a_padded.transpose(1, 2), b)


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
    """Sum over triplets/quadruplets and bilinear map.

    ``forward(rad_w1 (Eo, I, S), sph (Eo, K, S) padded by ``pad_groups``,
    m (E_in, in), m_padded (Eo*K,)) -> (Eo, out_size)``: ``m_padded`` the
    ``padded_index`` table of the triplets' input edges, K the largest
    group; ``forward_to_atoms`` adds a second sum of the per-edge results
    into ``num_atoms`` targets (``idx_agg2``); ``forward_weights`` takes
    ``rad_w1 @ sph^T`` (Eo, I, K) contracted beforehand (quadruplets).
    """

    emb_size_in: int
    emb_size_interm: int
    edge_chunk_elements: int

    def __init__(self, emb_size_in: int, emb_size_interm: int, emb_size_out: int) -> None:
        super().__init__()
        self.emb_size_in = emb_size_in
        self.emb_size_interm = emb_size_interm
        self.bilinear = Dense(emb_size_in * emb_size_interm, emb_size_out)
        self.edge_chunk_elements = EDGE_CHUNK_ELEMENTS

    def _contract(self, rad_w1: Tensor, sph: Tensor, m: Tensor, m_padded: Tensor) -> Tensor:
        """``rad_w1 @ (sph^T @ m_pad)`` (Eo, I, in); on the CPU in chunks of output edges, so the
        gathered (Eo, K, in) messages are never formed whole."""
        num_groups = sph.shape[0]
        width = sph.shape[1]
        rows = edge_chunk_rows(self.edge_chunk_elements, width * m.shape[1], num_groups, m.is_cpu)
        if rows == 0:
            return torch.matmul(rad_w1, grouped_outer_sum(sph, m, m_padded))
        x = torch.empty((num_groups, rad_w1.shape[1], m.shape[1]), dtype=m.dtype, device=m.device)
        for start in range(0, num_groups, rows):
            stop = min(start + rows, num_groups)
            x[start:stop] = torch.matmul(
                rad_w1[start:stop], grouped_outer_sum(sph[start:stop], m, m_padded[start * width:stop * width])
            )
        return x

    def forward(self, rad_w1: Tensor, sph: Tensor, m: Tensor, m_padded: Tensor) -> Tensor:
        x = self._contract(rad_w1, sph, m, m_padded)  # (Eo, I, in)
        return self.bilinear(x.reshape(x.shape[0], x.shape[1] * x.shape[2]))

    def forward_weights(self, weights: Tensor, m: Tensor, m_padded: Tensor) -> Tensor:
        """``weights`` (Eo, I, K) = ``rad_w1 @ sph^T`` -> (Eo, out_size); chunked like ``_contract``."""
        num_groups = weights.shape[0]
        width = weights.shape[2]
        rows = edge_chunk_rows(self.edge_chunk_elements, width * m.shape[1], num_groups, m.is_cpu)
        if rows == 0:
            x = torch.matmul(weights, gather_padded(m, m_padded, num_groups, width))  # (Eo, I, in)
        else:
            x = torch.empty((num_groups, weights.shape[1], m.shape[1]), dtype=m.dtype, device=m.device)
            for start in range(0, num_groups, rows):
                stop = min(start + rows, num_groups)
                x[start:stop] = torch.matmul(
                    weights[start:stop], gather_padded(m, m_padded[start * width:stop * width], stop - start, width)
                )
        return self.bilinear(x.reshape(x.shape[0], x.shape[1] * x.shape[2]))

    def forward_to_atoms(
        self, rad_w1: Tensor, sph: Tensor, m: Tensor, m_padded: Tensor, edge_target: Tensor, num_atoms: int,
    ) -> Tensor:
        per_edge = self._contract(rad_w1, sph, m, m_padded)  # (Eo, I, in)
        x = torch.zeros(
            (num_atoms, per_edge.shape[1], per_edge.shape[2]), dtype=m.dtype, device=m.device
        ).index_add(0, edge_target, per_edge)  # (N, I, in)
        return self.bilinear(x.reshape(num_atoms, x.shape[1] * x.shape[2]))


class SwapSymmetricOutput:
    """Mixin for the symmetric interactions: ``(up_projection_ca(x) + up_projection_ac(x)[id_swap]) / sqrt(2)``.

    (E, C) -> (E, D). ``up_projection_ac`` runs on all rows first (its rows
    are read swapped); ``up_projection_ca``, the swapped gather and the sum
    run in edge chunks of ``edge_chunk_elements`` on the CPU, so only the
    result is a whole (E, D) tensor (ONNX exports: one pass).
    """

    def _swap_sum(self, x: Tensor, id_swap: Tensor) -> Tensor:
        up_ca = self.up_projection_ca
        up_ac = self.up_projection_ac
        if up_ac is None:
            raise RuntimeError("symmetric output without up_projection_ac")
        x_ac = up_ac(x)
        num_rows = x.shape[0]
        rows = edge_chunk_rows(self.edge_chunk_elements, x_ac.shape[1], num_rows, x.is_cpu)
        if rows == 0:
            return (up_ca(x) + x_ac[id_swap]) * self.inv_sqrt_2
        out = torch.empty_like(x_ac)
        for start in range(0, num_rows, rows):
            stop = min(start + rows, num_rows)
            out[start:stop] = (up_ca(x[start:stop]) + x_ac.index_select(0, id_swap[start:stop])) * self.inv_sqrt_2
        return out


class TripletInteraction(SwapSymmetricOutput, nn.Module):
    """Triplet message passing (edge-edge, atom-edge or edge-atom).

    Inputs: embeddings ``m`` of the in-graph (edges, or atoms expanded to
    a2ee2a edges), ``rad`` (E_in, emb_rbf), ``rad_w1`` (E_out, I, S), ``cir``
    (E_out, K, S) padded, ``in_padded`` (E_out*K,) the ``padded_index`` table
    of the triplets' input edges, and ``id_swap``.
    """

    symmetric_mp: bool
    swap_output: bool
    edge_chunk_elements: int

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
        self.edge_chunk_elements = EDGE_CHUNK_ELEMENTS

    def _project(self, x_ba: Tensor, rad: Tensor) -> Tensor:
        return self.down_projection(self.scale_rbf(x_ba * self.mlp_rbf(rad)))

    def _messages(self, m: Tensor, rad: Tensor, expand: Optional[Tensor]) -> Tensor:
        """(E_in, trip_in) messages of the in-graph's edges (gathered per triplet by the bilinear)."""
        if expand is not None:
            # atoms -> a2ee2a edges: dense_ba on the N atoms, then per edge
            return self._project(self.dense_ba(m).index_select(0, expand), rad)
        num_rows = m.shape[0]
        rows = edge_chunk_rows(self.edge_chunk_elements, m.shape[1], num_rows, m.is_cpu)
        if rows == 0:
            return self._project(self.dense_ba(m), rad)
        out = torch.empty((num_rows, self.down_projection.linear.out_features), dtype=m.dtype, device=m.device)
        for start in range(0, num_rows, rows):
            stop = min(start + rows, num_rows)
            out[start:stop] = self._project(self.dense_ba(m[start:stop]), rad[start:stop])
        return out

    def _output(self, x: Tensor, id_swap: Tensor) -> Tensor:
        x = self.scale_cbf_sum(x)
        if self.up_projection_ac is not None:
            return self._swap_sum(x, id_swap)
        if self.swap_output:
            x = x[id_swap]
        return self.up_projection_ca(x)

    def forward(
        self, m: Tensor, rad: Tensor, rad_w1: Tensor, cir: Tensor, in_padded: Tensor, id_swap: Tensor,
        expand: Optional[Tensor] = None,
    ) -> Tensor:
        x_ba = self._messages(m, rad, expand)
        return self._output(self.mlp_cbf(rad_w1, cir, x_ba, in_padded), id_swap)

    def forward_to_atoms(
        self, m: Tensor, rad: Tensor, rad_w1: Tensor, cir: Tensor, in_padded: Tensor, id_swap: Tensor,
        edge_target: Tensor, num_atoms: int,
    ) -> Tensor:
        x_ba = self._messages(m, rad, None)
        x = self.mlp_cbf.forward_to_atoms(rad_w1, cir, x_ba, in_padded, edge_target, num_atoms)
        return self._output(x, id_swap)


class QuadrupletInteraction(SwapSymmetricOutput, nn.Module):
    """Quadruplet message passing d->b->a<-c (symmetric)."""

    edge_chunk_elements: int

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
        self.edge_chunk_elements = EDGE_CHUNK_ELEMENTS

    def _project(self, m: Tensor, rad: Tensor) -> Tensor:
        return self.down_projection(self.scale_rbf(self.dense_db(m) * self.mlp_rbf(rad)))

    def _edge_messages(self, m: Tensor, rad: Tensor) -> Tensor:
        """(E, quad_in) per-edge messages, row-local: in edge chunks on the CPU."""
        num_rows = m.shape[0]
        rows = edge_chunk_rows(self.edge_chunk_elements, m.shape[1], num_rows, m.is_cpu)
        if rows == 0:
            return self._project(m, rad)
        out = torch.empty((num_rows, self.down_projection.linear.out_features), dtype=m.dtype, device=m.device)
        for start in range(0, num_rows, rows):
            stop = min(start + rows, num_rows)
            out[start:stop] = self._project(m[start:stop], rad[start:stop])
        return out

    def forward(
        self, m: Tensor, rad: Tensor, cir: Tensor, weights: Tensor, trip_in_in: Tensor,
        quad_in_padded: Tensor, id_swap: Tensor,
    ) -> Tensor:
        """``rad`` (E, emb_rbf), ``cir`` (T_in, emb_cbf), ``weights`` (E, I, K) =
        ``rad_W1 @ sph_pad^T``, ``quad_in_padded`` (E*K,) the ``padded_index``
        table of each quadruplet's input triplet."""
        x_db = self._edge_messages(m, rad).index_select(0, trip_in_in)  # (T_in, quad_in)
        x_db = self.scale_cbf(x_db * self.mlp_cbf(cir))
        x = self.scale_sbf_sum(self.mlp_sbf.forward_weights(weights, x_db, quad_in_padded))
        return self._swap_sum(x, id_swap)


class PairInteraction(nn.Module):
    """Atom-atom interaction over the a2a graph: (N, emb_atom) -> (N, emb_atom)."""

    def __init__(self, emb_size_atom: int, emb_size_pair_in: int, emb_size_pair_out: int,
                 emb_size_rbf: int, scale_prefix: str) -> None:
        super().__init__()
        self.bilinear = Dense(emb_size_rbf * emb_size_pair_in, emb_size_pair_out)
        self.scale_rbf_sum = ScaleFactor(name=scale_prefix + ".scale_rbf_sum")
        self.down_projection = Dense(emb_size_atom, emb_size_pair_in, activation=True)
        self.up_projection = Dense(emb_size_pair_out, emb_size_atom, activation=True)

    def forward(self, h: Tensor, rad_w1: Tensor, source_padded: Tensor) -> Tensor:
        """``rad_w1`` (N, K, emb_rbf): ``mlp_rbf_aint`` of the a2a edges padded by target
        (``pad_groups``); ``source_padded`` (N*K,) the ``padded_index`` table of their sources."""
        num_atoms = h.shape[0]
        x = grouped_outer_sum(rad_w1, self.down_projection(h), source_padded)  # (N, rbf, pair_in)
        h_out = self.scale_rbf_sum(self.bilinear(x.reshape(num_atoms, x.shape[1] * x.shape[2])))
        return self.up_projection(h_out)


def sum_into_atoms(
    rad: Tensor, m: Tensor, rad_projection_weight: Tensor, edge_target: Tensor, num_atoms: int,
    chunk_elements: int,
) -> Tensor:
    """``sum_{e: target[e] = i} m[e] * (rad[e] @ W^T)``: (E, D) -> (num_atoms, D).

    ``rad`` (E, R), ``rad_projection_weight`` W (D, R): the weight of a
    bias-free, activation-free Dense. In edge chunks on the CPU: ``index_add_`` adds the
    edges of each atom in edge order either way.
    """
    num_edges = m.shape[0]
    width = m.shape[1]
    total = torch.zeros((num_atoms, width), dtype=m.dtype, device=m.device)
    rows = edge_chunk_rows(chunk_elements, width, num_edges, m.is_cpu)
    if rows == 0:
        return total.index_add(0, edge_target, m * (rad @ rad_projection_weight.t()))
    for start in range(0, num_edges, rows):
        stop = min(start + rows, num_edges)
        total.index_add_(0, edge_target[start:stop], m[start:stop] * (rad[start:stop] @ rad_projection_weight.t()))
    return total


class AtomUpdateBlock(nn.Module):
    """Sum of ``m * dense_rbf(rad)`` into targets, then an MLP (``layers``)."""

    edge_chunk_elements: int

    def __init__(self, emb_size_atom: int, emb_size_edge: int, emb_size_rbf: int, num_hidden: int,
                 scale_prefix: str) -> None:
        super().__init__()
        self.dense_rbf = Dense(emb_size_rbf, emb_size_edge)
        self.scale_sum = ScaleFactor(name=scale_prefix + ".scale_sum")
        self.layers = residual_mlp(emb_size_edge, emb_size_atom, num_hidden)
        self.edge_chunk_elements = EDGE_CHUNK_ELEMENTS

    def forward(self, h: Tensor, m: Tensor, rad: Tensor, edge_target: Tensor) -> Tensor:
        x = sum_into_atoms(rad, m, self.dense_rbf.linear.weight, edge_target, h.shape[0], self.edge_chunk_elements)
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
    edge_chunk_elements: int

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
        self.edge_chunk_elements = EDGE_CHUNK_ELEMENTS

    def _force_rows(self, m: Tensor, rad: Tensor) -> Tensor:
        x_f = m
        if self.seq_forces is not None and self.dense_rbf_F is not None and self.scale_rbf_F is not None:
            for layer in self.seq_forces:
                x_f = layer(x_f)
            x_f = self.scale_rbf_F(x_f * self.dense_rbf_F(rad))
        return x_f

    def _forces(self, m: Tensor, rad: Tensor) -> Tensor:
        """(E, emb_edge) direct-force features, row-local: in edge chunks on the CPU."""
        num_rows = m.shape[0]
        rows = edge_chunk_rows(self.edge_chunk_elements, m.shape[1], num_rows, m.is_cpu)
        if rows == 0:
            return self._force_rows(m, rad)
        out = torch.empty_like(m)
        for start in range(0, num_rows, rows):
            stop = min(start + rows, num_rows)
            out[start:stop] = self._force_rows(m[start:stop], rad[start:stop])
        return out

    def forward(self, h: Tensor, m: Tensor, rad: Tensor, edge_target: Tensor) -> Tuple[Tensor, Tensor]:
        x_e = sum_into_atoms(rad, m, self.dense_rbf.linear.weight, edge_target, h.shape[0], self.edge_chunk_elements)
        x_e = self.scale_sum(x_e)
        for layer in self.seq_energy_pre:
            x_e = layer(x_e)
        if self.seq_energy2 is not None:
            x_e = (x_e + h) * self.inv_sqrt_2
            for layer in self.seq_energy2:
                x_e = layer(x_e)
        x_f = torch.zeros((0, m.shape[1]), dtype=m.dtype, device=m.device)
        if self.seq_forces is not None:
            x_f = self._forces(m, rad)
        return x_e, x_f
