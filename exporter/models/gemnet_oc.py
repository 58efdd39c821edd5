"""GemNet-OC rewrite (fairchem-core 1.10 ``models/gemnet_oc``), scriptable and
ONNX-exportable.

``build_gemnet_oc(model_attributes) -> (core, graph)``:

* ``graph`` is :class:`runtime.graph_gemnet_oc.GemNetOCGraph` (all graphs and
  triplet/quadruplet indices, TorchScript/eager only);
* ``core`` is :class:`GemNetOCCore`, whose ``state_dict`` keys are those of
  the reference ``GemNetOC`` (including every ``*.scale_factor``), with
  ``energy_and_forces(positions, cell, atomic_numbers, batch, graph)``
  returning the raw per-structure energy (B,) and the raw direct forces
  (N, 3) (an empty (0, 3) tensor without a direct-force head).

The core recomputes all geometry from positions and cell, so the energy is
differentiable w.r.t. both (gradient forces, stress). It uses no
data-dependent control flow, no boolean indexing and only ``index_add`` for
aggregation; sizes come from input shapes.

Geometry convention (GemNet): for an edge s -> t of any graph,
``vector = (positions[t] - positions[s] + cell_offsets @ cell[batch[t]]) / d``.
"""

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from ocpdeploy.runtime.graph_gemnet_oc import GemNetOCGraph, resolve_cutoffs
from .layers import AtomEmbedding
from .gemnet_oc_basis import CircularBasisLayer, GemNetRadialBasis, SphericalBasisLayer
from .gemnet_oc_layers import (
    INV_SQRT_2,
    AtomUpdateBlock,
    BasisEmbedding,
    Dense,
    EdgeEmbedding,
    OutputBlock,
    PairInteraction,
    QuadrupletInteraction,
    ResidualLayer,
    TripletInteraction,
)
from .layers import (
    EDGE_CHUNK_ELEMENTS,
    at_positions,
    check_radial_options,
    edge_chunk_rows,
    occupied_mask,
    pad_groups,
    padded_index,
    slot_positions,
)

# Smallest |cross product| in the dihedral angle (reference ``get_angle``).
DIHEDRAL_EPS: float = 1.0e-9
# Below this sine two unit edge vectors count as collinear, and the plane
# they span (one side of the quadruplet dihedral) as undefined. For exactly
# collinear edges (an atom and its own periodic images at +R and -R, any
# centrosymmetric crystal) the reference's cross product is rounding noise,
# whose direction decides the dihedral: float32 results then depend on the
# kernel (eager ATen with fused multiply-adds vs ONNX Runtime vs compiled
# code) and differ from float64. Zeroing such cross products gives every
# artifact and dtype the value float64 gives (cosine 0, sine 1). The cone it
# covers (1e-5 rad) is far above float32 rounding of edge directions and far
# below any geometry a model resolves.
COLLINEAR_SINE: float = 1.0e-5


def _plane_normal(u: Tensor, v: Tensor, collinear_sine: float) -> Tensor:
    """``u x v`` of unit vectors (T, 3), zero where they are collinear within ``collinear_sine``."""
    cross = torch.cross(u, v, dim=-1)
    sine_squared = torch.sum(cross * cross, dim=-1, keepdim=True)
    return torch.where(sine_squared > collinear_sine * collinear_sine, cross, torch.zeros_like(cross))


def _inner_clamped(x: Tensor, y: Tensor) -> Tensor:
    return torch.sum(x * y, dim=-1).clamp(min=-1.0, max=1.0)


class InteractionBlock(nn.Module):
    """One GemNet-OC interaction block (``layers/interaction_block.py``).

    ``forward(h (N, A), m (E, D), bases, graph) -> (h, m)``; ``bases`` holds
    the shared basis embeddings computed once by the core.
    """

    inv_sqrt_num_eint: float
    inv_sqrt_num_aint: float
    edge_chunk_elements: int

    def __init__(
        self, prefix: str, emb_size_atom: int, emb_size_edge: int, emb_size_trip_in: int,
        emb_size_trip_out: int, emb_size_quad_in: int, emb_size_quad_out: int, emb_size_a2a_in: int,
        emb_size_a2a_out: int, emb_size_rbf: int, emb_size_cbf: int, emb_size_sbf: int,
        num_before_skip: int, num_after_skip: int, num_concat: int, num_atom: int,
        num_atom_emb_layers: int, quad_interaction: bool, atom_edge_interaction: bool,
        edge_atom_interaction: bool, atom_interaction: bool,
    ) -> None:
        super().__init__()
        self.inv_sqrt_2 = INV_SQRT_2
        self.dense_ca = Dense(emb_size_edge, emb_size_edge, activation=True)
        self.trip_interaction = TripletInteraction(
            emb_size_edge, emb_size_edge, emb_size_trip_in, emb_size_trip_out, emb_size_rbf,
            emb_size_cbf, True, True, prefix + ".trip_interaction",
        )
        self.quad_interaction = (
            QuadrupletInteraction(
                emb_size_edge, emb_size_quad_in, emb_size_quad_out, emb_size_rbf, emb_size_cbf,
                emb_size_sbf, prefix + ".quad_interaction",
            )
            if quad_interaction else None
        )
        self.atom_edge_interaction = (
            TripletInteraction(
                emb_size_atom, emb_size_edge, emb_size_trip_in, emb_size_trip_out, emb_size_rbf,
                emb_size_cbf, True, True, prefix + ".atom_edge_interaction",
            )
            if atom_edge_interaction else None
        )
        self.edge_atom_interaction = (
            TripletInteraction(
                emb_size_edge, emb_size_atom, emb_size_trip_in, emb_size_trip_out, emb_size_rbf,
                emb_size_cbf, False, False, prefix + ".edge_atom_interaction",
            )
            if edge_atom_interaction else None
        )
        self.atom_interaction = (
            PairInteraction(emb_size_atom, emb_size_a2a_in, emb_size_a2a_out, emb_size_rbf,
                            prefix + ".atom_interaction")
            if atom_interaction else None
        )
        self.layers_before_skip = nn.ModuleList([ResidualLayer(emb_size_edge) for _ in range(num_before_skip)])
        self.layers_after_skip = nn.ModuleList([ResidualLayer(emb_size_edge) for _ in range(num_after_skip)])
        self.atom_emb_layers = nn.ModuleList([ResidualLayer(emb_size_atom) for _ in range(num_atom_emb_layers)])
        self.atom_update = AtomUpdateBlock(emb_size_atom, emb_size_edge, emb_size_rbf, num_atom,
                                           prefix + ".atom_update")
        self.concat_layer = EdgeEmbedding(emb_size_atom, emb_size_edge, emb_size_edge)
        self.residual_m = nn.ModuleList([ResidualLayer(emb_size_edge) for _ in range(num_concat)])
        self.inv_sqrt_num_eint = (2.0 + float(quad_interaction) + float(atom_edge_interaction)) ** -0.5
        self.inv_sqrt_num_aint = (1.0 + float(edge_atom_interaction) + float(atom_interaction)) ** -0.5
        self.edge_chunk_elements = EDGE_CHUNK_ELEMENTS

    def _skip_rows(self, m: Tensor, x: Tensor) -> Tensor:
        for layer in self.layers_before_skip:
            x = layer(x)
        m = (m + x) * self.inv_sqrt_2
        for layer in self.layers_after_skip:
            m = layer(m)
        return m

    def _concat_rows(self, h: Tensor, m: Tensor, edge_index: Tensor) -> Tensor:
        m2 = self.concat_layer(h, m, edge_index)
        for layer in self.residual_m:
            m2 = layer(m2)
        return (m + m2) * self.inv_sqrt_2

    def _skip_update(self, m: Tensor, x: Tensor) -> Tensor:
        """``layers_before_skip`` on x, the skip into m, ``layers_after_skip``: (E, D), row-local."""
        num_edges = m.shape[0]
        rows = edge_chunk_rows(self.edge_chunk_elements, m.shape[1], num_edges, m.is_cpu)
        if rows == 0:
            return self._skip_rows(m, x)
        out = torch.empty_like(m)
        for start in range(0, num_edges, rows):
            stop = min(start + rows, num_edges)
            out[start:stop] = self._skip_rows(m[start:stop], x[start:stop])
        return out

    def _concat_update(self, h: Tensor, m: Tensor, edge_index: Tensor) -> Tensor:
        """``concat_layer`` of (h[s], h[t], m), ``residual_m`` and the skip into m: (E, D), row-local."""
        num_edges = m.shape[0]
        rows = edge_chunk_rows(self.edge_chunk_elements, m.shape[1], num_edges, m.is_cpu)
        if rows == 0:
            return self._concat_rows(h, m, edge_index)
        out = torch.empty_like(m)
        for start in range(0, num_edges, rows):
            stop = min(start + rows, num_edges)
            out[start:stop] = self._concat_rows(h, m[start:stop], edge_index[:, start:stop])
        return out

    def forward(
        self, h: Tensor, m: Tensor, bases: Dict[str, Tensor], graph: Dict[str, Tensor]
    ) -> Tuple[Tensor, Tensor]:
        num_atoms = h.shape[0]
        edge_index = graph["main_edge_index"]
        id_swap = graph["id_swap"]
        x_ca_skip = self.dense_ca(m)
        x = x_ca_skip + self.trip_interaction(
            m, bases["e2e_rad"], bases["e2e_w1"], bases["e2e_cir"], bases["e2e_in_padded"], id_swap, None,
        )
        if self.quad_interaction is not None:
            x = x + self.quad_interaction(
                m, bases["qint_rad"], bases["qint_cir"], bases["qint_weights"], graph["quad_trip_in_in"],
                bases["quad_in_padded"], id_swap,
            )
        if self.atom_edge_interaction is not None:
            x = x + self.atom_edge_interaction(
                h, bases["a2e_rad"], bases["a2e_w1"], bases["a2e_cir"], bases["a2e_in_padded"],
                id_swap, graph["a2ee2a_edge_index"][0],
            )
        x = x * self.inv_sqrt_num_eint
        # Both atom updates read the incoming h.
        h_update = h
        if self.edge_atom_interaction is not None:
            h_update = h_update + self.edge_atom_interaction.forward_to_atoms(
                m, bases["e2a_rad"], bases["e2a_w1"], bases["e2a_cir"], bases["e2a_in_padded"],
                id_swap, graph["a2ee2a_edge_index"][1], num_atoms,
            )
        if self.atom_interaction is not None:
            h_update = h_update + self.atom_interaction(h, bases["a2a_w1"], bases["a2a_source_padded"])
        h = h_update * self.inv_sqrt_num_aint
        m = self._skip_update(m, x)
        for layer in self.atom_emb_layers:
            h = layer(h)
        h = (h + self.atom_update(h, m, bases["atom_update"], edge_index[1])) * self.inv_sqrt_2
        return h, self._concat_update(h, m, edge_index)


class GemNetOCCore(nn.Module):
    """GemNet-OC energy (and direct-force) model on prepared graphs.

    ``energy_and_forces(positions (N,3), cell (B,3,3), atomic_numbers (N,) int64,
    batch (N,) int64, graph) -> (energy (B,), forces (N,3) or (0,3))``, both raw
    (normalised). ``graph`` is the output of :class:`GemNetOCGraph`.
    """

    num_blocks: int
    extensive: bool
    direct_forces: bool
    regress_forces: bool
    quad_interaction: bool
    atom_edge_interaction: bool
    edge_atom_interaction: bool
    atom_interaction: bool
    dihedral_eps: float
    collinear_sine: float
    edge_chunk_elements: int

    def __init__(
        self, num_spherical: int, num_radial: int, num_blocks: int, emb_size_atom: int,
        emb_size_edge: int, emb_size_trip_in: int, emb_size_trip_out: int, emb_size_quad_in: int,
        emb_size_quad_out: int, emb_size_aint_in: int, emb_size_aint_out: int, emb_size_rbf: int,
        emb_size_cbf: int, emb_size_sbf: int, num_before_skip: int, num_after_skip: int,
        num_concat: int, num_atom: int, num_output_afteratom: int, num_atom_emb_layers: int,
        num_global_out_layers: int, regress_forces: bool, direct_forces: bool, cutoff: float,
        cutoff_qint: float, cutoff_aeaint: float, cutoff_aint: float, envelope_exponent: int,
        sbf_name: str, extensive: bool, quad_interaction: bool, atom_edge_interaction: bool,
        edge_atom_interaction: bool, atom_interaction: bool, num_elements: int,
    ) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.dihedral_eps = DIHEDRAL_EPS
        self.collinear_sine = COLLINEAR_SINE
        self.extensive = extensive
        self.direct_forces = direct_forces
        self.regress_forces = regress_forces
        self.quad_interaction = quad_interaction
        self.atom_edge_interaction = atom_edge_interaction
        self.edge_atom_interaction = edge_atom_interaction
        self.atom_interaction = atom_interaction
        self.edge_chunk_elements = EDGE_CHUNK_ELEMENTS

        def radial(cut: float) -> GemNetRadialBasis:
            return GemNetRadialBasis(num_radial, cut, envelope_exponent)

        # Bases (init_basis_functions); each holds its own copy of the offsets.
        self.radial_basis = radial(cutoff)
        self.cbf_basis_qint = CircularBasisLayer(num_spherical, radial(cutoff_qint)) if quad_interaction else None
        self.sbf_basis_qint = (
            SphericalBasisLayer(num_spherical, radial(cutoff), sbf_name) if quad_interaction else None
        )
        self.radial_basis_aeaint = (
            radial(cutoff_aeaint) if (atom_edge_interaction or edge_atom_interaction) else None
        )
        self.cbf_basis_aeint = CircularBasisLayer(num_spherical, radial(cutoff)) if atom_edge_interaction else None
        self.cbf_basis_eaint = (
            CircularBasisLayer(num_spherical, radial(cutoff_aeaint)) if edge_atom_interaction else None
        )
        self.radial_basis_aint = radial(cutoff_aint) if atom_interaction else None
        self.cbf_basis_tint = CircularBasisLayer(num_spherical, radial(cutoff))

        # Shared down projections (init_shared_basis_layers).
        self.mlp_rbf_qint = Dense(num_radial, emb_size_rbf) if quad_interaction else None
        self.mlp_cbf_qint = BasisEmbedding(num_radial, emb_size_cbf, num_spherical) if quad_interaction else None
        self.mlp_sbf_qint = (
            BasisEmbedding(num_radial, emb_size_sbf, num_spherical**2) if quad_interaction else None
        )
        self.mlp_rbf_aeint = Dense(num_radial, emb_size_rbf) if atom_edge_interaction else None
        self.mlp_cbf_aeint = (
            BasisEmbedding(num_radial, emb_size_cbf, num_spherical) if atom_edge_interaction else None
        )
        self.mlp_rbf_eaint = Dense(num_radial, emb_size_rbf) if edge_atom_interaction else None
        self.mlp_cbf_eaint = (
            BasisEmbedding(num_radial, emb_size_cbf, num_spherical) if edge_atom_interaction else None
        )
        self.mlp_rbf_aint = BasisEmbedding(num_radial, emb_size_rbf) if atom_interaction else None
        self.mlp_rbf_tint = Dense(num_radial, emb_size_rbf)
        self.mlp_cbf_tint = BasisEmbedding(num_radial, emb_size_cbf, num_spherical)
        self.mlp_rbf_h = Dense(num_radial, emb_size_rbf)
        self.mlp_rbf_out = Dense(num_radial, emb_size_rbf)

        self.atom_emb = AtomEmbedding(emb_size_atom, num_elements)
        self.edge_emb = EdgeEmbedding(emb_size_atom, num_radial, emb_size_edge)
        self.int_blocks = nn.ModuleList(
            [
                InteractionBlock(
                    f"int_blocks.{i}", emb_size_atom, emb_size_edge, emb_size_trip_in, emb_size_trip_out,
                    emb_size_quad_in, emb_size_quad_out, emb_size_aint_in, emb_size_aint_out,
                    emb_size_rbf, emb_size_cbf, emb_size_sbf, num_before_skip, num_after_skip,
                    num_concat, num_atom, num_atom_emb_layers, quad_interaction,
                    atom_edge_interaction, edge_atom_interaction, atom_interaction,
                )
                for i in range(num_blocks)
            ]
        )
        self.out_blocks = nn.ModuleList(
            [
                OutputBlock(emb_size_atom, emb_size_edge, emb_size_rbf, num_atom, num_output_afteratom,
                            direct_forces, f"out_blocks.{i}")
                for i in range(num_blocks + 1)
            ]
        )
        self.out_mlp_E = nn.Sequential(
            Dense(emb_size_atom * (num_blocks + 1), emb_size_atom, activation=True),
            *[ResidualLayer(emb_size_atom) for _ in range(num_global_out_layers)],
        )
        self.out_energy = Dense(emb_size_atom, 1)
        if direct_forces:
            self.out_mlp_F = nn.Sequential(
                Dense(emb_size_edge * (num_blocks + 1), emb_size_edge, activation=True),
                *[ResidualLayer(emb_size_edge) for _ in range(num_global_out_layers)],
            )
            self.out_forces = Dense(emb_size_edge, 1)
        else:
            self.out_mlp_F = None
            self.out_forces = None

    # ---------------------------------------------------------------- geometry
    def _edge_geometry(
        self, positions: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, cell_offsets: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Distances (E,) and unit vectors s -> t (E, 3), differentiable."""
        target = edge_index[1]
        shift = torch.bmm(cell_offsets.to(positions.dtype).unsqueeze(1), cell[batch[target]]).squeeze(1)
        vector = positions[target] - positions[edge_index[0]] + shift
        distance = torch.linalg.norm(vector, dim=-1)
        return distance, vector / distance[:, None]

    def _a2a_radial(self, distance: Tensor) -> Tensor:
        """``mlp_rbf_aint(radial_basis_aint(d))``: (Ea,) -> (Ea, emb_rbf); on the CPU in edge chunks,
        so the (Ea, num_radial) basis of the largest graph (3M x 128 at 5,000 atoms) is never whole."""
        radial = self.radial_basis_aint
        mlp = self.mlp_rbf_aint
        assert radial is not None and mlp is not None
        num_edges = distance.shape[0]
        rows = edge_chunk_rows(self.edge_chunk_elements, mlp.weight.shape[1], num_edges, distance.is_cpu)
        if rows == 0:
            return mlp(radial(distance))
        out = torch.empty((num_edges, mlp.weight.shape[0]), dtype=distance.dtype, device=distance.device)
        for start in range(0, num_edges, rows):
            stop = min(start + rows, num_edges)
            out[start:stop] = mlp(radial(distance[start:stop]))
        return out

    def _quad_angular(
        self, cross_in: Tensor, cross_out: Tensor, cos_out: Tensor, tin_padded: Tensor, tout_padded: Tensor,
        used: Tensor,
    ) -> Tensor:
        """Two-angle basis at padded quadruplet slots (S,) -> (S, L^2), zero at unused slots.

        ``cross_in`` (T_in, 3) = v_db x v_ba, ``cross_out`` (T_out, 3) = v_ca x v_ba,
        ``cos_out`` (T_out,) the angle c-a-b; the slot tables pick each
        quadruplet's two triplets (unused slots: a real pair of triplets, so
        the values there are finite before ``used`` zeroes them).
        """
        sbf = self.sbf_basis_qint
        assert sbf is not None
        cross_a = cross_out.index_select(0, tout_padded)
        cross_b = cross_in.index_select(0, tin_padded)
        # dihedral c -> a - b <- d (half angle, parity ignored): the
        # reference's atan2(y, x) with y > 0, as its cosine and sine
        x = torch.sum(cross_a * cross_b, dim=-1)
        y = torch.linalg.norm(torch.cross(cross_a, cross_b, dim=-1), dim=-1).clamp(min=self.dihedral_eps)
        radius = torch.sqrt(x * x + y * y)
        return sbf.angular_masked(cos_out.index_select(0, tout_padded), x / radius, y / radius, used)

    def _quad_weights(
        self, rad_w1: Tensor, cross_in: Tensor, cross_out: Tensor, cos_out: Tensor, tin_padded: Tensor,
        tout_padded: Tensor, used: Tensor, width: int,
    ) -> Tensor:
        """``rad_W1[e] @ sph_pad[e]^T``: (E, I, L^2) -> (E, I, K), K = ``width``.

        On the CPU in chunks of main edges, so that neither the (Q, L^2) basis
        nor its padded (E, K, L^2) copy (7 GB each at 5,000 atoms) is formed.
        """
        num_main = rad_w1.shape[0]
        num_sph = rad_w1.shape[2]
        rows = edge_chunk_rows(self.edge_chunk_elements, width * num_sph, num_main, rad_w1.is_cpu)
        if rows == 0:
            sph = self._quad_angular(cross_in, cross_out, cos_out, tin_padded, tout_padded, used)
            return torch.matmul(rad_w1, sph.reshape(num_main, width, num_sph).transpose(1, 2))
        weights = torch.empty((num_main, rad_w1.shape[1], width), dtype=rad_w1.dtype, device=rad_w1.device)
        for start in range(0, num_main, rows):
            stop = min(start + rows, num_main)
            first = start * width
            last = stop * width
            sph = self._quad_angular(
                cross_in, cross_out, cos_out, tin_padded[first:last], tout_padded[first:last], used[first:last]
            )
            weights[start:stop] = torch.matmul(
                rad_w1[start:stop], sph.reshape(stop - start, width, num_sph).transpose(1, 2)
            )
        return weights

    def _bases(
        self, positions: Tensor, cell: Tensor, batch: Tensor, graph: Dict[str, Tensor]
    ) -> Tuple[Dict[str, Tensor], Tensor]:
        """All basis embeddings shared by the blocks (``get_bases``), and V_main.

        Besides the float bases it holds the ``padded_index`` gather tables
        (``*_in_padded``, ``a2a_source_padded``: int64 (G*K,)) with which
        every block gathers its messages into the padded layout, and for
        quadruplets the pre-contracted ``qint_weights`` (E, I, K): the
        two-angle basis is evaluated directly at the (E, K) slots (unused
        slots at quadruplet 0's triplets, then zeroed), never as (Q, S^2).
        """
        d_main, v_main = self._edge_geometry(
            positions, cell, batch, graph["main_edge_index"], graph["main_cell_offsets"]
        )
        bases: Dict[str, Tensor] = {}
        rad_main = self.radial_basis(d_main)
        bases["rad_main"] = rad_main

        trip_in = graph["trip_e2e_in"]
        trip_out = graph["trip_e2e_out"]
        cos_cab = _inner_clamped(v_main[trip_out], v_main[trip_in])
        rad_cir, cir = self.cbf_basis_tint(d_main, cos_cab)
        bases["e2e_rad"] = self.mlp_rbf_tint(rad_main)
        bases["e2e_w1"] = self.mlp_cbf_tint(rad_cir)
        num_main = d_main.shape[0]
        bases["e2e_cir"] = pad_groups(cir, graph["trip_e2e_out"], graph["trip_e2e_slot"], graph["trip_e2e_kmax"], num_main)
        bases["e2e_in_padded"] = padded_index(
            trip_in, trip_out, graph["trip_e2e_slot"], graph["trip_e2e_kmax"], num_main
        )

        if (
            self.cbf_basis_qint is not None and self.sbf_basis_qint is not None
            and self.mlp_rbf_qint is not None and self.mlp_cbf_qint is not None
            and self.mlp_sbf_qint is not None
        ):
            d_qint, v_qint = self._edge_geometry(
                positions, cell, batch, graph["qint_edge_index"], graph["qint_cell_offsets"]
            )
            tin_in = graph["quad_trip_in_in"]
            tin_out = graph["quad_trip_in_out"]
            tout_in = graph["quad_trip_out_in"]
            tout_out = graph["quad_trip_out_out"]
            quad_out = graph["quad_out"]
            quad_slot = graph["quad_slot"]
            quad_kmax = graph["quad_kmax"]
            # Per (main edge, slot) of the padded layout, (E*K,): the quadruplet's
            # two triplets, and whether a quadruplet sits there (positions once: Q is
            # the largest index of the model, 32M at 4,840 atoms).
            positions_q = slot_positions(quad_out, quad_slot, quad_kmax)
            padded_size = num_main * quad_kmax.shape[0]
            tin_padded = at_positions(graph["quad_trip_in_to_quad"], positions_q, padded_size)
            tout_padded = at_positions(graph["quad_trip_out_to_quad"], positions_q, padded_size)
            used = occupied_mask(positions_q, padded_size, d_main.dtype)
            # d -> b -> a
            v_ba = v_qint[tin_out]
            v_db = v_main[tin_in]
            cos_abd = _inner_clamped(v_ba, v_db)
            cross_in = _plane_normal(v_db, v_ba, self.collinear_sine)  # (T_in, 3)
            # c -> a <- b
            v_ca = v_main[tout_out]
            v_ba_out = v_qint[tout_in]
            cos_cab_q = _inner_clamped(v_ca, v_ba_out)
            cross_out = _plane_normal(v_ca, v_ba_out, self.collinear_sine)  # (T_out, 3)
            rad_cir_q, cir_q = self.cbf_basis_qint(d_qint, cos_abd)
            bases["qint_rad"] = self.mlp_rbf_qint(rad_main)
            bases["qint_cir"] = self.mlp_cbf_qint.project(rad_cir_q, cir_q, tin_out)
            bases["qint_weights"] = self._quad_weights(
                self.mlp_sbf_qint(self.sbf_basis_qint.radial_basis(d_main)), cross_in, cross_out, cos_cab_q,
                tin_padded, tout_padded, used, quad_kmax.shape[0],
            )
            bases["quad_in_padded"] = tin_padded

        if self.radial_basis_aeaint is not None:
            d_ae, v_ae = self._edge_geometry(
                positions, cell, batch, graph["a2ee2a_edge_index"], graph["a2ee2a_cell_offsets"]
            )
            if (
                self.cbf_basis_aeint is not None and self.mlp_rbf_aeint is not None
                and self.mlp_cbf_aeint is not None
            ):
                a2e_in = graph["trip_a2e_in"]
                a2e_out = graph["trip_a2e_out"]
                rad_cir_a2e, cir_a2e = self.cbf_basis_aeint(
                    d_main, _inner_clamped(v_main[a2e_out], v_ae[a2e_in])
                )
                bases["a2e_rad"] = self.mlp_rbf_aeint(self.radial_basis_aeaint(d_ae))
                bases["a2e_w1"] = self.mlp_cbf_aeint(rad_cir_a2e)
                bases["a2e_cir"] = pad_groups(
                    cir_a2e, graph["trip_a2e_out"], graph["trip_a2e_slot"], graph["trip_a2e_kmax"], num_main
                )
                bases["a2e_in_padded"] = padded_index(
                    a2e_in, a2e_out, graph["trip_a2e_slot"], graph["trip_a2e_kmax"], num_main
                )
            if (
                self.cbf_basis_eaint is not None and self.mlp_rbf_eaint is not None
                and self.mlp_cbf_eaint is not None
            ):
                e2a_in = graph["trip_e2a_in"]
                e2a_out = graph["trip_e2a_out"]
                rad_cir_e2a, cir_e2a = self.cbf_basis_eaint(
                    d_ae, _inner_clamped(v_ae[e2a_out], v_main[e2a_in])
                )
                bases["e2a_rad"] = self.mlp_rbf_eaint(rad_main)
                bases["e2a_w1"] = self.mlp_cbf_eaint(rad_cir_e2a)
                bases["e2a_cir"] = pad_groups(
                    cir_e2a, e2a_out, graph["trip_e2a_slot"], graph["trip_e2a_kmax"], d_ae.shape[0]
                )
                bases["e2a_in_padded"] = padded_index(
                    e2a_in, e2a_out, graph["trip_e2a_slot"], graph["trip_e2a_kmax"], d_ae.shape[0]
                )

        if self.radial_basis_aint is not None and self.mlp_rbf_aint is not None:
            d_a2a, _ = self._edge_geometry(
                positions, cell, batch, graph["a2a_edge_index"], graph["a2a_cell_offsets"]
            )
            a2a_target = graph["a2a_edge_index"][1]
            bases["a2a_w1"] = pad_groups(
                self._a2a_radial(d_a2a), a2a_target, graph["a2a_slot"], graph["a2a_kmax"], positions.shape[0]
            )
            bases["a2a_source_padded"] = padded_index(
                graph["a2a_edge_index"][0], a2a_target, graph["a2a_slot"], graph["a2a_kmax"], positions.shape[0]
            )

        bases["atom_update"] = self.mlp_rbf_h(rad_main)
        bases["output"] = self.mlp_rbf_out(rad_main)
        return bases, v_main

    # ------------------------------------------------------------------ model
    @torch.jit.export
    def energy_and_forces(
        self, positions: Tensor, cell: Tensor, atomic_numbers: Tensor, batch: Tensor,
        graph: Dict[str, Tensor],
    ) -> Tuple[Tensor, Tensor]:
        """Raw energy (B,) and raw direct forces (N, 3) (or an empty (0, 3))."""
        num_atoms = positions.shape[0]
        num_structures = cell.shape[0]
        edge_index = graph["main_edge_index"]
        edge_target = edge_index[1]
        bases, v_main = self._bases(positions, cell, batch, graph)

        h = self.atom_emb(atomic_numbers)
        m = self.edge_emb(h, bases["rad_main"], edge_index)
        xs_e: List[Tensor] = []
        xs_f: List[Tensor] = []
        # out_blocks[i] reads the state before int_blocks[i]; the last one the final state.
        for block, out_block in zip(self.int_blocks, self.out_blocks):
            x_e, x_f = out_block(h, m, bases["output"], edge_target)
            xs_e.append(x_e)
            xs_f.append(x_f)
            h, m = block(h, m, bases, graph)
        x_e, x_f = self.out_blocks[-1](h, m, bases["output"], edge_target)
        xs_e.append(x_e)
        xs_f.append(x_f)

        energy_per_atom = self.out_energy(self.out_mlp_E(torch.cat(xs_e, dim=-1)))  # (N, 1)
        energy = torch.zeros(
            (num_structures, 1), dtype=energy_per_atom.dtype, device=energy_per_atom.device
        ).index_add(0, batch, energy_per_atom)
        if not self.extensive:
            count = torch.zeros(num_structures, dtype=energy.dtype, device=energy.device).index_add(
                0, batch, torch.ones_like(batch, dtype=energy.dtype)
            )
            energy = energy / count.clamp(min=1.0)[:, None]
        energy = energy.squeeze(1)

        forces = torch.zeros((0, 3), dtype=positions.dtype, device=positions.device)
        if self.regress_forces and self.out_mlp_F is not None and self.out_forces is not None:
            forces = torch.zeros((num_atoms, 3), dtype=positions.dtype, device=positions.device)
            num_edges = edge_target.shape[0]
            # (E, D * (num_blocks + 1)) is never formed whole: edge chunks, summed in edge order.
            rows = edge_chunk_rows(self.edge_chunk_elements, m.shape[1] * len(xs_f), num_edges, positions.is_cpu)
            if rows == 0:
                f_st = self.out_forces(self.out_mlp_F(torch.cat(xs_f, dim=-1)))  # (E, 1)
                return energy, forces.index_add(0, edge_target, f_st * v_main)
            for start in range(0, num_edges, rows):
                stop = min(start + rows, num_edges)
                f_st = self.out_forces(self.out_mlp_F(torch.cat([x_f[start:stop] for x_f in xs_f], dim=-1)))
                forces.index_add_(0, edge_target[start:stop], f_st * v_main[start:stop])
        return energy, forces

    def forward(
        self, positions: Tensor, cell: Tensor, atomic_numbers: Tensor, batch: Tensor,
        graph: Dict[str, Tensor],
    ) -> Tuple[Tensor, Tensor]:
        return self.energy_and_forces(positions, cell, atomic_numbers, batch, graph)


# ---------------------------------------------------------------------------
# Construction from checkpoint ``model_attributes``.
# ---------------------------------------------------------------------------
_REQUIRED = (
    "num_spherical", "num_radial", "num_blocks", "emb_size_atom", "emb_size_edge",
    "emb_size_trip_in", "emb_size_trip_out", "emb_size_quad_in", "emb_size_quad_out",
    "emb_size_aint_in", "emb_size_aint_out", "emb_size_rbf", "emb_size_cbf", "emb_size_sbf",
    "num_before_skip", "num_after_skip", "num_concat", "num_atom", "num_output_afteratom",
)
SUPPORTED_SBF = ("spherical_harmonics", "legendre_outer")


def _check_options(attrs: dict) -> None:
    """Raise ``ValueError`` naming the first unsupported option."""
    missing = [key for key in _REQUIRED if key not in attrs]
    if missing:
        raise ValueError(f"gemnet_oc model_attributes lack required options {missing}")
    activation = str(attrs.get("activation", "silu")).lower()
    if activation not in ("silu", "swish"):
        raise ValueError(f"unsupported activation {attrs.get('activation')!r}: only 'silu' is implemented")
    rbf = attrs.get("rbf") or {"name": "gaussian"}
    envelope = attrs.get("envelope") or {"name": "polynomial", "exponent": 5}
    check_radial_options(rbf, envelope)
    rbf_spherical = attrs.get("rbf_spherical")
    if rbf_spherical:
        check_radial_options(rbf_spherical, envelope)
    extra_envelope = set(envelope) - {"name", "exponent"}
    if extra_envelope:
        raise ValueError(f"unsupported envelope options {sorted(extra_envelope)}")
    cbf = attrs.get("cbf") or {"name": "spherical_harmonics"}
    if str(cbf.get("name")).lower() != "spherical_harmonics" or set(cbf) - {"name"}:
        raise ValueError(f"unsupported cbf {cbf!r}: only 'spherical_harmonics' is implemented")
    sbf = attrs.get("sbf") or {"name": "spherical_harmonics"}
    if str(sbf.get("name")).lower() not in SUPPORTED_SBF or set(sbf) - {"name"}:
        raise ValueError(f"unsupported sbf {sbf!r}: only {list(SUPPORTED_SBF)} are implemented")
    if attrs.get("scale_basis", False):
        raise ValueError("unsupported option scale_basis=True: only scale_basis=False is implemented")
    if attrs.get("forces_coupled", False) and attrs.get("direct_forces", False):
        raise ValueError("unsupported option forces_coupled=True: only forces_coupled=False is implemented")
    if not attrs.get("enforce_max_neighbors_strictly", True):
        raise ValueError("unsupported option enforce_max_neighbors_strictly=False")
    if int(attrs["num_blocks"]) <= 0:
        raise ValueError(f"num_blocks must be > 0, got {attrs['num_blocks']}")


def build_gemnet_oc(model_attributes: dict) -> Tuple[GemNetOCCore, GemNetOCGraph]:
    """Core and graph module for a ``gemnet_oc`` checkpoint's ``model_attributes``.

    Unset ``cutoff_*`` / ``max_neighbors_*`` fall back as in the reference
    (``set_cutoffs`` / ``set_max_neighbors``); graph-building flags
    (``otf_graph``, ``use_pbc``) and training-only options are ignored.
    """
    attrs = dict(model_attributes)
    _check_options(attrs)
    quad = bool(attrs.get("quad_interaction", False))
    a2e = bool(attrs.get("atom_edge_interaction", False))
    e2a = bool(attrs.get("edge_atom_interaction", False))
    aint = bool(attrs.get("atom_interaction", False))
    cutoff = float(attrs.get("cutoff", 6.0))
    max_neighbors = int(attrs.get("max_neighbors", 50))
    cutoffs = resolve_cutoffs(
        cutoff, attrs.get("cutoff_qint"), attrs.get("cutoff_aeaint"), attrs.get("cutoff_aint"),
        max_neighbors, attrs.get("max_neighbors_qint"), attrs.get("max_neighbors_aeaint"),
        attrs.get("max_neighbors_aint"), quad, a2e, e2a, aint,
    )
    envelope = attrs.get("envelope") or {"name": "polynomial", "exponent": 5}
    sbf = attrs.get("sbf") or {"name": "spherical_harmonics"}
    core = GemNetOCCore(
        num_spherical=int(attrs["num_spherical"]),
        num_radial=int(attrs["num_radial"]),
        num_blocks=int(attrs["num_blocks"]),
        emb_size_atom=int(attrs["emb_size_atom"]),
        emb_size_edge=int(attrs["emb_size_edge"]),
        emb_size_trip_in=int(attrs["emb_size_trip_in"]),
        emb_size_trip_out=int(attrs["emb_size_trip_out"]),
        emb_size_quad_in=int(attrs["emb_size_quad_in"]),
        emb_size_quad_out=int(attrs["emb_size_quad_out"]),
        emb_size_aint_in=int(attrs["emb_size_aint_in"]),
        emb_size_aint_out=int(attrs["emb_size_aint_out"]),
        emb_size_rbf=int(attrs["emb_size_rbf"]),
        emb_size_cbf=int(attrs["emb_size_cbf"]),
        emb_size_sbf=int(attrs["emb_size_sbf"]),
        num_before_skip=int(attrs["num_before_skip"]),
        num_after_skip=int(attrs["num_after_skip"]),
        num_concat=int(attrs["num_concat"]),
        num_atom=int(attrs["num_atom"]),
        num_output_afteratom=int(attrs["num_output_afteratom"]),
        num_atom_emb_layers=int(attrs.get("num_atom_emb_layers", 0)),
        num_global_out_layers=int(attrs.get("num_global_out_layers", 2)),
        regress_forces=bool(attrs.get("regress_forces", True)),
        direct_forces=bool(attrs.get("direct_forces", False)),
        cutoff=cutoffs[0],
        cutoff_qint=cutoffs[1],
        cutoff_aeaint=cutoffs[2],
        cutoff_aint=cutoffs[3],
        envelope_exponent=int(envelope.get("exponent", 5)),
        sbf_name=str(sbf["name"]).lower(),
        extensive=bool(attrs.get("extensive", True)),
        quad_interaction=quad,
        atom_edge_interaction=a2e,
        edge_atom_interaction=e2a,
        atom_interaction=aint,
        num_elements=int(attrs.get("num_elements", 83)),
    )
    graph = GemNetOCGraph(
        cutoff=cutoff,
        cutoff_qint=attrs.get("cutoff_qint"),
        cutoff_aeaint=attrs.get("cutoff_aeaint"),
        cutoff_aint=attrs.get("cutoff_aint"),
        max_neighbors=max_neighbors,
        max_neighbors_qint=attrs.get("max_neighbors_qint"),
        max_neighbors_aeaint=attrs.get("max_neighbors_aeaint"),
        max_neighbors_aint=attrs.get("max_neighbors_aint"),
        quad_interaction=quad,
        atom_edge_interaction=a2e,
        edge_atom_interaction=e2a,
        atom_interaction=aint,
        qint_tags=attrs.get("qint_tags"),
        enforce_max_neighbors_strictly=bool(attrs.get("enforce_max_neighbors_strictly", True)),
    )
    return core, graph


__all__ = ["GemNetOCCore", "build_gemnet_oc"]
