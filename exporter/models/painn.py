"""PaiNN rewrite: pure torch, scriptable, exportable to ONNX.

Reference: ``fairchem/core/models/painn/painn.py`` (fairchem-core 1.10). The
module tree and ``state_dict`` keys are the reference's (``atom_emb``,
``radial_basis``, ``message_layers.{i}``, ``update_layers.{i}``,
``upd_out_scalar_scale_{i}``, ``out_energy``, ``out_forces``), so a reference
``state_dict`` loads key for key.

Shapes: N atoms, E edges, B structures, H hidden channels, R radial basis
functions. Scalar features ``x`` are (N, H), vector features ``vec`` (N, 3, H).
Messages flow from ``edge_index[0]`` (source j) into ``edge_index[1]``
(target i), summed with ``index_add_``.
"""

from typing import Dict, Final, Tuple

import torch
from torch import Tensor, nn

from ocpdeploy.runtime.graph_painn import PaiNNGraph
from ocpdeploy.runtime.keys import CELL_OFFSETS, EDGE_INDEX, EDGE_KMAX, EDGE_SLOT

from .layers import (
    EDGE_CHUNK_ELEMENTS, AtomEmbedding, RadialBasis, ScaledSiLU, ScaleFactor, check_radial_options, edge_chunk_rows,
    at_positions, inv_sqrt, slot_positions,
)

# Distances closer than this to zero are replaced by it before dividing
# (reference: ``torch.isclose(d, 0, atol=1e-6)`` then ``d = 1e-6``).
MIN_DISTANCE: float = 1.0e-6
# Added under the square root of the vector norm in the update layer.
NORM_EPSILON: float = 1.0e-8

PAINN_DEFAULTS: Dict[str, object] = {
    "hidden_channels": 512,
    "num_layers": 6,
    "num_rbf": 128,
    "cutoff": 12.0,
    "max_neighbors": 50,
    "rbf": {"name": "gaussian"},
    "envelope": {"name": "polynomial", "exponent": 5},
    "regress_forces": True,
    "direct_forces": True,
    "use_pbc": True,
    "use_pbc_single": False,
    "otf_graph": True,
    "num_elements": 83,
    "scale_file": None,
}


def edge_geometry(
    positions: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, cell_offsets: Tensor
) -> Tuple[Tensor, Tensor]:
    """Edge vectors and lengths, differentiable in positions and cell.

    Returns ``vector`` (E, 3) = ``positions[j] - positions[i] + cell_offsets @ cell[batch[i]]``
    and ``distance`` (E,).
    """
    source = edge_index[0]
    target = edge_index[1]
    shift = torch.bmm(cell_offsets.unsqueeze(1), cell[batch[target]]).squeeze(1)  # (E, 3)
    vector = positions[source] - positions[target] + shift
    distance = torch.linalg.vector_norm(vector, dim=-1)
    return vector, distance


class PaiNNMessage(nn.Module):
    """Equivariant message from source j to target i, summed per target.

    Edges are processed in chunks of at most ``edge_chunk_elements`` floats
    per (chunk, 3H) tensor (about 4 MB): the per-edge tensors of a large
    structure (E x 3 x H, hundreds of MB each for H = 512) are then never
    materialised whole, so they stay in cache and come from the allocator's
    free lists instead of fresh page-faulting ``mmap``s. The sums are the
    same: ``index_add_`` adds the edges of each target in edge order either
    way. ``edge_chunk_elements <= 0`` (set for ONNX exports: their graphs
    have no loops) is one pass over the padded (N, K) layout of
    ``edge_slot`` / ``edge_kmax`` instead (``_padded``): the messages are
    computed at the slots and the K slots of each target are reduced, so
    ONNX Runtime runs a ReduceSum rather than an accumulating
    ScatterElements (single-threaded and the slowest op of the one-pass
    graph).
    """

    hidden_channels: int
    edge_chunk_elements: int

    def __init__(self, hidden_channels: int, num_rbf: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.x_proj = nn.Sequential(
            nn.Linear(hidden_channels, hidden_channels),
            ScaledSiLU(),
            nn.Linear(hidden_channels, hidden_channels * 3),
        )
        self.rbf_proj = nn.Linear(num_rbf, hidden_channels * 3)
        self.x_layernorm = nn.LayerNorm(hidden_channels)
        self.edge_chunk_elements = EDGE_CHUNK_ELEMENTS
        # The message's constant factors, per (a, b, c) third of ``x_proj``'s
        # output: 1, 1/sqrt(3H) and 1/sqrt(H). Applied once per atom (N, 3H)
        # instead of once per edge; not in state_dict (keys stay the reference's).
        inv_sqrt_h = inv_sqrt(float(hidden_channels))
        third = torch.ones(hidden_channels)
        self.register_buffer(
            "message_scales",
            torch.cat([third, third * (inv_sqrt(3.0) * inv_sqrt_h), third * inv_sqrt_h]),
            persistent=False,
        )

    def forward(
        self,
        x: Tensor,
        vec: Tensor,
        edge_index: Tensor,
        edge_rbf: Tensor,
        edge_unit: Tensor,
        edge_slot: Tensor,
        edge_kmax: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        xh = self.x_proj(self.x_layernorm(x)) * self.message_scales  # (N, 3H), scaled (a, b, c) thirds
        if self.edge_chunk_elements <= 0:
            return self._padded(xh, vec, edge_index, edge_rbf, edge_unit, edge_slot, edge_kmax)
        dx = torch.zeros_like(x)  # (N, H)
        dvec = torch.zeros_like(vec)  # (N, 3, H)
        num_edges = edge_index.shape[1]
        chunk = edge_chunk_rows(self.edge_chunk_elements, 3 * self.hidden_channels, num_edges, x.is_cpu)
        if chunk == 0:
            chunk = max(1, num_edges)
        xh_thirds = self._thirds(xh)
        for start in range(0, num_edges, chunk):
            stop = min(start + chunk, num_edges)
            self._accumulate(xh_thirds, vec, edge_index[:, start:stop], edge_rbf[start:stop], edge_unit[start:stop], dx, dvec)
        return dx, dvec

    def _thirds(self, xh: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(N, 3H) -> its (a, b, c) thirds, each a contiguous (N, H) table to gather rows from."""
        xh_a, xh_b, xh_c = torch.split(xh, self.hidden_channels, dim=-1)
        return xh_a.contiguous(), xh_b.contiguous(), xh_c.contiguous()

    def _factors(
        self, xh_thirds: Tuple[Tensor, Tensor, Tensor], source: Tensor, edge_rbf: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """The three (E_c, H) factors ``a, b, c`` of E_c edges: ``xh[source]`` times ``rbf_proj(edge_rbf)``, per third."""
        xh_a, xh_b, xh_c = xh_thirds  # 3 x (N, H)
        return self._factor(xh_a, source, edge_rbf, 0), self._factor(xh_b, source, edge_rbf, 1), self._factor(xh_c, source, edge_rbf, 2)

    def _factor(self, xh_third: Tensor, source: Tensor, edge_rbf: Tensor, third: int) -> Tensor:
        """One (E_c, H) factor: ``xh_third[source]`` (E_c, H) times third ``third`` of ``rbf_proj(edge_rbf)``.

        ``rbf_proj`` runs as three (R -> H) products on its weight's thirds
        rather than one (R -> 3H) product split afterwards: the same FLOPs,
        but no split copy (ONNX Runtime copies each Split output), and each
        factor can be used and freed before the next is made.
        """
        hidden = self.hidden_channels
        rows = slice(third * hidden, (third + 1) * hidden)
        projected = nn.functional.linear(edge_rbf, self.rbf_proj.weight[rows], self.rbf_proj.bias[rows])
        return xh_third.index_select(0, source) * projected

    def _accumulate(
        self,
        xh_thirds: Tuple[Tensor, Tensor, Tensor],
        vec: Tensor,
        edge_index: Tensor,
        edge_rbf: Tensor,
        edge_unit: Tensor,
        dx: Tensor,
        dvec: Tensor,
    ) -> None:
        """Add the messages of these edges (E_c of them) into ``dx`` (N, H) and ``dvec`` (N, 3, H).

        ``xh_thirds`` (3 x (N, H)) already carry ``message_scales``, so the vector message
        (vec_j * b / sqrt(3) + c (x) u) / sqrt(H) is one product and one fused
        add (addcmul): two passes over the (E_c, 3, H) message instead of four.
        """
        source = edge_index[0]
        target = edge_index[1]
        a, b, c = self._factors(xh_thirds, source, edge_rbf)
        message_vec = torch.addcmul(vec.index_select(0, source) * b.unsqueeze(1), c.unsqueeze(1), edge_unit.unsqueeze(2))
        dx.index_add_(0, target, a)
        dvec.index_add_(0, target, message_vec)

    def _padded(
        self,
        xh: Tensor,
        vec: Tensor,
        edge_index: Tensor,
        edge_rbf: Tensor,
        edge_unit: Tensor,
        edge_slot: Tensor,
        edge_kmax: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        """One pass, with the messages computed directly in the padded (N, K) layout.

        Slot ``target * K + edge_slot`` holds its edge; unused slots read the
        zero rows appended to ``xh`` and ``vec`` (source index N) and to the
        edge features (edge index E), so their factors are exactly 0 without
        a mask pass. The K slots of each target
        are then reduced: ``a`` and ``vec_j * b`` are summed over K, and the
        ``c (x) u`` part is the batched product ``u^T c`` (N, 3, K) @ (N, K, H),
        so that (N*K, 3, H) tensor is never materialised. No (N*K, 3H) zero
        fill, scatter or copy: ONNX Runtime runs Gather, Gemm, Mul, MatMul and
        ReduceSum.
        """
        num_atoms = vec.shape[0]
        width = edge_kmax.shape[0]
        hidden = self.hidden_channels
        size = num_atoms * width
        num_edges = edge_index.shape[1]
        positions = slot_positions(edge_index[1], edge_slot, edge_kmax)  # (E,)
        edge_ids = torch.arange(num_edges, dtype=edge_index.dtype, device=edge_index.device)
        edge_at_slot = at_positions(edge_ids - num_edges, positions, size) + num_edges  # (N*K,), E at unused slots
        source_at_slot = at_positions(edge_index[0] - num_atoms, positions, size) + num_atoms  # (N*K,), N at unused
        xh_padded = torch.cat([xh, torch.zeros((1, xh.shape[1]), dtype=xh.dtype, device=xh.device)])  # (N+1, 3H)
        vec_padded = torch.cat([vec, torch.zeros((1, 3, hidden), dtype=vec.dtype, device=vec.device)])  # (N+1, 3, H)
        # Unused slots read a zero edge row (index E): K may exceed every group's
        # size (exported programs pad it), and a structure may have no edges.
        rbf_padded = torch.cat([edge_rbf, torch.zeros((1, edge_rbf.shape[1]), dtype=edge_rbf.dtype, device=edge_rbf.device)])
        unit_padded = torch.cat([edge_unit, torch.zeros((1, 3), dtype=edge_unit.dtype, device=edge_unit.device)])
        rbf_at_slot = rbf_padded.index_select(0, edge_at_slot)  # (N*K, R)
        xh_a, xh_b, xh_c = self._thirds(xh_padded)  # 3 x (N+1, H)
        # Each (N*K, H) factor is reduced over K as soon as it is made, and the
        # vector part gathers one Cartesian component at a time, so no more
        # than a few (N*K, H) tensors are alive at once (ONNX Runtime frees a
        # tensor after its last reader; it does not fuse the gather into the sum).
        dx = self._factor(xh_a, source_at_slot, rbf_at_slot, 0).reshape(num_atoms, width, hidden).sum(dim=1)  # (N, H)
        b = self._factor(xh_b, source_at_slot, rbf_at_slot, 1)  # (N*K, H)
        vec_components = [
            (vec_padded[:, axis].index_select(0, source_at_slot) * b).reshape(num_atoms, width, hidden).sum(dim=1) for axis in range(3)
        ]  # 3 x (N, H)
        c = self._factor(xh_c, source_at_slot, rbf_at_slot, 2).reshape(num_atoms, width, hidden)  # (N, K, H)
        unit_at_slot = unit_padded.index_select(0, edge_at_slot).reshape(num_atoms, width, 3)  # (N, K, 3)
        dvec = torch.stack(vec_components, dim=1) + torch.bmm(unit_at_slot.transpose(1, 2), c)  # (N, 3, H)
        return dx, dvec


class PaiNNUpdate(nn.Module):
    """Per-atom update mixing scalar and vector channels."""

    hidden_channels: int
    inv_sqrt_2: float
    inv_sqrt_h: float
    norm_epsilon: Final[float] = NORM_EPSILON

    def __init__(self, hidden_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.vec_proj = nn.Linear(hidden_channels, hidden_channels * 2, bias=False)
        self.xvec_proj = nn.Sequential(
            nn.Linear(hidden_channels * 2, hidden_channels),
            ScaledSiLU(),
            nn.Linear(hidden_channels, hidden_channels * 3),
        )
        self.inv_sqrt_2 = inv_sqrt(2.0)
        self.inv_sqrt_h = inv_sqrt(float(hidden_channels))

    def forward(self, x: Tensor, vec: Tensor) -> Tuple[Tensor, Tensor]:
        vec1, vec2 = torch.split(self.vec_proj(vec), self.hidden_channels, dim=-1)  # (N, 3, H) each
        vec_dot = (vec1 * vec2).sum(dim=1) * self.inv_sqrt_h  # (N, H)
        vec2_norm = torch.sqrt(torch.sum(vec2**2, dim=-2) + self.norm_epsilon)  # (N, H)
        x_vec_h = self.xvec_proj(torch.cat([x, vec2_norm], dim=-1))  # (N, 3H)
        xvec1, xvec2, xvec3 = torch.split(x_vec_h, self.hidden_channels, dim=-1)
        dx = (xvec1 + xvec2 * vec_dot) * self.inv_sqrt_2
        dvec = xvec3.unsqueeze(1) * vec1
        return dx, dvec


class GatedEquivariantBlock(nn.Module):
    """Gated equivariant block (Schütt et al. 2021) of the force head."""

    out_channels: int

    def __init__(self, hidden_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.vec1_proj = nn.Linear(hidden_channels, hidden_channels, bias=False)
        self.vec2_proj = nn.Linear(hidden_channels, out_channels, bias=False)
        self.update_net = nn.Sequential(
            nn.Linear(hidden_channels * 2, hidden_channels),
            ScaledSiLU(),
            nn.Linear(hidden_channels, out_channels * 2),
        )
        self.act = ScaledSiLU()

    def forward(self, x: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        # Norm over the 3 spatial components, written out: torch's CPU
        # vector_norm over a middle dimension is ~10-100x slower than this
        # (measured 42 ms against 3.8 ms on (1008, 3, 512)).
        vec1 = torch.sqrt(torch.sum(self.vec1_proj(v) ** 2, dim=-2))  # (N, H)
        vec2 = self.vec2_proj(v)  # (N, 3, out)
        x, v = torch.split(self.update_net(torch.cat([x, vec1], dim=-1)), self.out_channels, dim=-1)
        v = v.unsqueeze(1) * vec2
        return self.act(x), v


class NoForceHead(nn.Module):
    """Stands in for the force head of a model without one (``direct_forces: False``).

    It has the head's signature, so that TorchScript can compile the
    direct-forces branch it never takes; forces then come from -dE/dx.
    ``forward(x (N, H), vec (N, 3, H)) -> (0, 3)``.
    """

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        del vec
        return torch.zeros((0, 3), dtype=x.dtype, device=x.device)


class PaiNNOutput(nn.Module):
    """Direct force head: two gated equivariant blocks, (N, 3, H) -> (N, 3)."""

    def __init__(self, hidden_channels: int) -> None:
        super().__init__()
        self.output_network = nn.ModuleList(
            [GatedEquivariantBlock(hidden_channels, hidden_channels // 2), GatedEquivariantBlock(hidden_channels // 2, 1)]
        )

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        for layer in self.output_network:
            x, vec = layer(x, vec)
        return vec.squeeze(-1)


class PaiNN(nn.Module):
    """PaiNN energy (and direct-force) model on prepared graph tensors."""

    hidden_channels: int
    num_layers: int
    direct_forces: bool
    inv_sqrt_2: float
    min_distance: Final[float] = MIN_DISTANCE
    edge_index_key: Final[str] = EDGE_INDEX
    cell_offsets_key: Final[str] = CELL_OFFSETS
    edge_slot_key: Final[str] = EDGE_SLOT
    edge_kmax_key: Final[str] = EDGE_KMAX

    def __init__(
        self,
        hidden_channels: int,
        num_layers: int,
        num_rbf: int,
        cutoff: float,
        rbf: Dict[str, str],
        envelope: Dict[str, int],
        direct_forces: bool,
        num_elements: int,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.direct_forces = direct_forces
        self.inv_sqrt_2 = inv_sqrt(2.0)
        self.atom_emb = AtomEmbedding(hidden_channels, num_elements)
        self.radial_basis = RadialBasis(num_rbf, cutoff, rbf, envelope)
        self.message_layers = nn.ModuleList([PaiNNMessage(hidden_channels, num_rbf) for _ in range(num_layers)])
        self.update_layers = nn.ModuleList([PaiNNUpdate(hidden_channels) for _ in range(num_layers)])
        for i in range(num_layers):
            setattr(self, f"upd_out_scalar_scale_{i}", ScaleFactor(f"upd_out_scalar_scale_{i}"))
        # The same ScaleFactor modules as a list the scripted loop can iterate;
        # hidden from state_dict so the keys stay the reference's.
        self.scales = nn.ModuleList([getattr(self, f"upd_out_scalar_scale_{i}") for i in range(num_layers)])
        self._register_state_dict_hook(_drop_scale_aliases)
        self._register_load_state_dict_pre_hook(_fill_scale_aliases)
        self.out_energy = nn.Sequential(
            nn.Linear(hidden_channels, hidden_channels // 2),
            ScaledSiLU(),
            nn.Linear(hidden_channels // 2, 1),
        )
        if direct_forces:
            self.out_forces = PaiNNOutput(hidden_channels)
        else:
            self.out_forces = NoForceHead()

    def forward(
        self, positions: Tensor, cell: Tensor, atomic_numbers: Tensor, batch: Tensor, graph: Dict[str, Tensor]
    ) -> Tuple[Tensor, Tensor]:
        return self.energy_and_forces(positions, cell, atomic_numbers, batch, graph)

    @torch.jit.export
    def energy_and_forces(
        self, positions: Tensor, cell: Tensor, atomic_numbers: Tensor, batch: Tensor, graph: Dict[str, Tensor]
    ) -> Tuple[Tensor, Tensor]:
        """Raw (normalised) energy (B,) and direct forces (N, 3) or (0, 3)."""
        edge_index = graph[self.edge_index_key]
        vector, distance = edge_geometry(positions, cell, batch, edge_index, graph[self.cell_offsets_key])
        edge_rbf, edge_unit = self.edge_features(vector, distance)
        x, vec = self.embed(atomic_numbers)
        x, vec = self.interactions(
            x, vec, edge_index, edge_rbf, edge_unit, graph[self.edge_slot_key], graph[self.edge_kmax_key], x.shape[0], 0, self.num_layers
        )
        per_atom_energy, forces = self.readout(x, vec, self.direct_forces)
        energy = torch.zeros(cell.shape[0], dtype=x.dtype, device=x.device).index_add_(0, batch, per_atom_energy)
        return energy, forces

    def edge_features(self, vector: Tensor, distance: Tensor) -> Tuple[Tensor, Tensor]:
        """Edge vectors (E, 3) and lengths (E,) -> radial basis (E, R) and unit vectors (E, 3)."""
        distance = torch.where(distance.abs() <= self.min_distance, torch.full_like(distance, self.min_distance), distance)
        edge_unit = vector / distance[:, None]  # (E, 3)
        return self.radial_basis(distance), edge_unit

    def embed(self, atomic_numbers: Tensor) -> Tuple[Tensor, Tensor]:
        """Initial features: scalars x (N, H) from the element, vectors vec (N, 3, H) zero."""
        x = self.atom_emb(atomic_numbers)  # (N, H)
        vec = torch.zeros((x.shape[0], 3, x.shape[1]), dtype=x.dtype, device=x.device)  # (N, 3, H)
        return x, vec

    def interactions(
        self,
        x: Tensor,
        vec: Tensor,
        edge_index: Tensor,
        edge_rbf: Tensor,
        edge_unit: Tensor,
        edge_slot: Tensor,
        edge_kmax: Tensor,
        num_targets: int,
        first: int,
        stop: int,
    ) -> Tuple[Tensor, Tensor]:
        """Message-passing layers ``first .. stop - 1`` (message, then update).

        x (N, H), vec (N, 3, H) in; the first ``num_targets`` rows are
        updated and returned, (n, H) and (n, 3, H). Edge targets must be
        below ``num_targets``; sources may be any row. In one process
        ``num_targets`` is N and all layers run in one call; on a rank of a
        domain decomposition the rows past ``num_targets`` are ghost atoms,
        whose features the host refreshes between single-layer calls.
        """
        layer = 0
        for message, update, scale in zip(self.message_layers, self.update_layers, self.scales):
            if layer >= first and layer < stop:
                dx, dvec = message(x, vec, edge_index, edge_rbf, edge_unit, edge_slot, edge_kmax)
                x = (x[:num_targets] + dx[:num_targets]) * self.inv_sqrt_2
                vec = vec[:num_targets] + dvec[:num_targets]
                dx, dvec = update(x, vec)
                x = scale(x + dx)
                vec = vec + dvec
            layer += 1
        return x, vec

    def readout(self, x: Tensor, vec: Tensor, with_forces: bool) -> Tuple[Tensor, Tensor]:
        """Raw per-atom energies (N,) and direct forces (N, 3); (0, 3) without a force head or ``with_forces``."""
        per_atom_energy = self.out_energy(x).squeeze(1)  # (N,)
        if with_forces and self.direct_forces:
            forces = self.out_forces(x, vec)
        else:
            forces = torch.zeros((0, 3), dtype=x.dtype, device=x.device)
        return per_atom_energy, forces


SCALE_ALIAS_PREFIX: str = "scales."


def _drop_scale_aliases(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + SCALE_ALIAS_PREFIX)]:
        del state_dict[key]


def _fill_scale_aliases(state_dict: dict, prefix: str, *args) -> None:
    i = 0
    while prefix + f"upd_out_scalar_scale_{i}.scale_factor" in state_dict:
        state_dict[prefix + f"{SCALE_ALIAS_PREFIX}{i}.scale_factor"] = state_dict[prefix + f"upd_out_scalar_scale_{i}.scale_factor"]
        i += 1


def build_painn(model_attributes: dict) -> Tuple[PaiNN, PaiNNGraph]:
    """PaiNN core and graph from ``config["model_attributes"]``."""
    unknown = set(model_attributes) - set(PAINN_DEFAULTS) - {"name"}
    if unknown:
        raise ValueError(f"unsupported PaiNN model_attributes {sorted(unknown)}; known: {sorted(PAINN_DEFAULTS)}")
    attributes = dict(PAINN_DEFAULTS)
    attributes.update({k: v for k, v in model_attributes.items() if k != "name"})
    rbf = dict(attributes["rbf"] or {"name": "gaussian"})
    envelope = dict(attributes["envelope"] or {"name": "polynomial", "exponent": 5})
    check_radial_options(rbf, envelope)
    direct = bool(attributes["regress_forces"]) and bool(attributes["direct_forces"])
    core = PaiNN(
        hidden_channels=int(attributes["hidden_channels"]),
        num_layers=int(attributes["num_layers"]),
        num_rbf=int(attributes["num_rbf"]),
        cutoff=float(attributes["cutoff"]),
        rbf={"name": "gaussian"},
        envelope={"exponent": int(envelope.get("exponent", 5))},
        direct_forces=direct,
        num_elements=int(attributes["num_elements"]),
    )
    graph = PaiNNGraph(cutoff=float(attributes["cutoff"]), max_neighbors=int(attributes["max_neighbors"]))
    return core, graph
