"""PaiNN's per-layer domain entry points as programs of an AOTInductor package.

A TorchScript PaiNN artifact carries the ``domain_*`` methods of
``exporter/domain.py`` for hosts that split space between MPI ranks
(LAMMPS). An AOTInductor package (``export-model --format aoti --domain``)
carries the same computation as additional named programs next to its
whole-system program ``model``, compiled ahead of time like it. Fewer
programs than methods (each is a separate compile):

* ``domain_cap`` (``domain_cap``): positions (N, 3) float64, ids (N,),
  num_local () int64, cell (3, 3) float64, pbc (3,) bool, centre (P,),
  neighbour (P,) -> capped keys (n, M) int64. Only when the model has a cap.
* ``domain_build`` (``domain_graph`` + the choice of active rows +
  ``domain_geometry`` + ``domain_embed``): the same inputs, then
  capped_keys_all (N, M) int64 and atomic_numbers (N,) -> rows (A,) int64
  (the host rows of the active rows: owned rows, then the ghost rows that
  are an edge source, ascending), edge_index (2, E) in active rows,
  edge_rbf (E, R), edge_unit (E, 3), x (A, H), vec (A, 3, H).
* ``domain_layer``: layer () int64, x (A, H), vec (A, 3, H), edge_index,
  edge_rbf, edge_unit, num_local () int64 -> x (n, H), vec (n, 3, H). One
  program for all layers: every layer's weights are stacked (L, ...) and
  the layer's slice is selected inside.
* ``domain_readout``: x (n, H), vec (n, 3, H), total_atoms () int64 ->
  per-atom energies (n,) eV and, for direct forces, forces (n, 3); for
  gradient forces (``gradient`` / ``conservative``) the gradients of the
  differentiated energy w.r.t. x (n, H) and vec (n, 3, H) instead
  (``domain_readout`` and ``domain_readout_backward`` in one call).
* ``domain_layer_backward`` (gradient forces only): layer, x (A, H),
  vec (A, 3, H), edge_index, active positions (A, 3) float64, grad_x
  (n, H), grad_vec (n, 3, H) -> gradients of x (A, H), vec (A, 3, H) and of
  the positions (A, 3) float64 through this layer's edge features
  (``domain_layer_backward`` and this layer's share of
  ``domain_geometry_backward``); the host sums the position gradients over
  layers.

Scalars travel as 0-d int64 tensors (a package takes tensors only); sizes
derived from them are declared to ``torch.export`` with ``torch._check``.
The backward programs are captured with ``make_fx`` like the whole-system
program's backward (``capture.py``). ``domain_record`` is stored in the
package's metadata under ``DOMAIN_KEY``: program names, ``[L, H, M]`` and
the force convention ``(scale, offset)``. ``run_one_rank`` runs the
programs as a host does, on one rank that holds periodic images as ghosts
(the export's verification against the eager rewrite).
"""

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.fx.experimental._config
from torch import Tensor, nn

from ocpdeploy.runtime.domain_graph import NO_KEY, SHIFT_BASE, SHIFT_RANGE, _lexicographically_negative
from ocpdeploy.runtime.radius_graph import SELF_DISTANCE_SQ, cap_neighbors, wrap_into_cell
from ocpdeploy.runtime.slots import inner_index, slots
from ocpdeploy.runtime.sorting import nonzero_1d

from .capture import TracedWithWeights
from .deployed import PhysicalModel
from .models.painn import PaiNN
from .program import _never_one

# Metadata key (in the package's ocp-deploy record) of the domain programs.
DOMAIN_KEY = "domain"
DOMAIN_FORMAT_VERSION = 1
CAP, BUILD, LAYER, READOUT, LAYER_BACKWARD = (
    "domain_cap", "domain_build", "domain_layer", "domain_readout", "domain_layer_backward",
)
# Example sizes: distinct, none 0 or 1, none equal to a weight dimension of
# the tiny models (torch.export would otherwise relate or specialise them).
EXAMPLE_OWNED = 11
EXAMPLE_GHOSTS = 26
EXAMPLE_SEED = 20261207
EXAMPLE_BOX = 7.0


def _owned_count(num_local: Tensor, rows: int) -> Any:
    """``num_local`` () int64 as a size in ``[0, rows]`` (a data-dependent size of the program)."""
    count = num_local.item()
    torch._check(count >= 0)
    torch._check(count <= rows)
    return count


def _pair_key(neighbour_id: Tensor, shift: Tensor) -> Tensor:
    """``domain_graph.pair_key`` without its host-side range check (the program cannot raise on values)."""
    biased = shift + SHIFT_RANGE
    code = (biased[:, 0] * SHIFT_BASE + biased[:, 1]) * SHIFT_BASE + biased[:, 2]
    return neighbour_id * (SHIFT_BASE * SHIFT_BASE * SHIFT_BASE) + code


def _candidates(
    positions: Tensor, ids: Tensor, cell: Tensor, pbc: Tensor, centre: Tensor, neighbour: Tensor, cutoff: float
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``domain_graph.candidate_pairs`` without the input checks that read values on the host."""
    positions = positions.to(torch.float64)
    difference = positions.index_select(0, neighbour) - positions.index_select(0, centre)
    distance_sq = (difference * difference).sum(dim=1)
    within = nonzero_1d((distance_sq <= cutoff * cutoff) & (distance_sq > SELF_DISTANCE_SQ))
    centre = centre.index_select(0, within)
    neighbour = neighbour.index_select(0, within)
    distance_sq = distance_sq.index_select(0, within)
    _, image = wrap_into_cell(positions, cell.to(torch.float64), pbc.to(torch.bool))
    shift = image.index_select(0, neighbour) - image.index_select(0, centre)
    key = _pair_key(ids.index_select(0, neighbour), shift)
    order = torch.sort(key, stable=True).indices
    order = order.index_select(0, torch.sort(centre.index_select(0, order), stable=True).indices)
    return (centre.index_select(0, order), neighbour.index_select(0, order), shift.index_select(0, order),
            distance_sq.index_select(0, order))


class _Parts(nn.Module):
    """Copies of some of a PaiNN core's submodules and attributes, for its methods called on them
    (``PaiNN.edge_features(parts, ...)``): a program then holds only the weights it uses."""

    def __init__(self, core: PaiNN, names: List[str]) -> None:
        super().__init__()
        for name in names:
            value = getattr(core, name)
            setattr(self, name, copy.deepcopy(value) if isinstance(value, nn.Module) else value)


class CapProgram(nn.Module):
    """``domain_cap``: the owned atoms' capped neighbour keys (n, M)."""

    def __init__(self, cutoff: float, max_neighbors: int) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors

    def forward(self, positions, ids, num_local, cell, pbc, centre, neighbour):
        n = _owned_count(num_local, positions.shape[0])
        width = self.max_neighbors
        centre, neighbour, shift, distance_sq = _candidates(positions, ids, cell, pbc, centre, neighbour, self.cutoff)
        key = _pair_key(ids.index_select(0, neighbour), shift)
        kept = nonzero_1d(cap_neighbors(centre, distance_sq, n, width, key))
        kept_centre = centre.index_select(0, kept)
        table = torch.full((n * width,), NO_KEY, dtype=torch.long, device=positions.device)
        table = table.index_copy(0, kept_centre * width + inner_index(kept_centre, n), key.index_select(0, kept))
        return table.view(n, width)


class BuildProgram(nn.Module):
    """``domain_build``: edges after cap and symmetrisation, the active rows, edge features, embedding."""

    def __init__(self, core: nn.Module, cutoff: float, max_neighbors: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.parts = _Parts(core, ["radial_basis", "min_distance", "atom_emb"])
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.dtype = dtype

    def forward(self, positions, ids, num_local, cell, pbc, centre, neighbour, capped_keys_all, atomic_numbers):
        num_rows = positions.shape[0]
        n = _owned_count(num_local, num_rows)
        centre, neighbour, shift, _ = _candidates(positions, ids, cell, pbc, centre, neighbour, self.cutoff)
        if self.max_neighbors > 0:
            centre_id = ids.index_select(0, centre)
            neighbour_id = ids.index_select(0, neighbour)
            kept_here = (neighbour_id < centre_id) | ((neighbour_id == centre_id) & _lexicographically_negative(shift))
            decider = torch.where(kept_here, centre, neighbour)
            key = torch.where(kept_here, _pair_key(neighbour_id, shift), _pair_key(centre_id, -shift))
            member = (capped_keys_all.index_select(0, decider) == key.unsqueeze(1)).any(dim=1)
            selected = nonzero_1d(member)
            centre = centre.index_select(0, selected)
            neighbour = neighbour.index_select(0, selected)
        # Active rows: owned rows, then the ghost rows that are an edge source (ascending host rows).
        row_numbers = torch.arange(num_rows, dtype=torch.long, device=positions.device)
        used = (row_numbers < n).index_fill(0, neighbour, True)
        rows = nonzero_1d(used)
        active = torch.full((num_rows,), -1, dtype=torch.long, device=positions.device)
        active = active.index_copy(0, rows, torch.arange(rows.shape[0], dtype=torch.long, device=positions.device))
        edge_index = torch.stack([active.index_select(0, neighbour), active.index_select(0, centre)], dim=0)
        active_positions = positions.to(torch.float64).index_select(0, rows)
        edge_rbf, edge_unit = _geometry(self.parts, active_positions, edge_index, self.dtype)
        x, vec = PaiNN.embed(self.parts, atomic_numbers.index_select(0, rows))
        return rows, edge_index, edge_rbf, edge_unit, x, vec


def _geometry(parts: nn.Module, positions: Tensor, edge_index: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """``domain_geometry``: differences in float64, then the model's edge features in its dtype."""
    vector = (positions.index_select(0, edge_index[0]) - positions.index_select(0, edge_index[1])).to(dtype)
    distance = torch.linalg.vector_norm(vector, dim=-1)
    return PaiNN.edge_features(parts, vector, distance)


class _OneLayer(nn.Module):
    """A message and an update layer with the attributes ``PaiNN.interactions`` reads (one layer's worth)."""

    def __init__(self, core: PaiNN) -> None:
        super().__init__()
        self.message_layers = nn.ModuleList([copy.deepcopy(core.message_layers[0])])
        self.update_layers = nn.ModuleList([copy.deepcopy(core.update_layers[0])])
        self.scales = nn.ModuleList([copy.deepcopy(core.scales[0])])
        self.inv_sqrt_2 = core.inv_sqrt_2
        for module in self.modules():
            if hasattr(module, "edge_chunk_elements"):
                module.edge_chunk_elements = 0  # one padded pass: an exported graph has no data-dependent loops

    def forward(self, x, vec, edge_index, edge_rbf, edge_unit, edge_slot, edge_kmax, num_targets):
        return PaiNN.interactions(self, x, vec, edge_index, edge_rbf, edge_unit, edge_slot, edge_kmax, num_targets, 0, 1)


class LayerStack(nn.Module):
    """Every message-passing layer of a PaiNN core: weights stacked (L, ...), layer chosen by a tensor."""

    def __init__(self, core: PaiNN) -> None:
        super().__init__()
        self.one = _OneLayer(core)
        per_layer: List[Dict[str, Tensor]] = []
        for k in range(core.num_layers):
            holder = nn.Module()
            holder.message_layers = nn.ModuleList([core.message_layers[k]])
            holder.update_layers = nn.ModuleList([core.update_layers[k]])
            holder.scales = nn.ModuleList([core.scales[k]])
            per_layer.append({**dict(holder.named_parameters()), **dict(holder.named_buffers())})
        self.names = list(per_layer[0])
        for i, name in enumerate(self.names):
            self.register_buffer(f"stack_{i}", torch.stack([state[name].detach() for state in per_layer]).clone())

    def forward(self, layer, x, vec, edge_index, edge_rbf, edge_unit, edge_slot, edge_kmax, num_targets):
        index = layer.reshape(1)
        weights = {name: getattr(self, f"stack_{i}").index_select(0, index).squeeze(0) for i, name in enumerate(self.names)}
        return torch.func.functional_call(
            self.one, weights, (x, vec, edge_index, edge_rbf, edge_unit, edge_slot, edge_kmax, num_targets)
        )


class LayerProgram(nn.Module):
    """``domain_layer``: layer ``layer`` on the active rows -> the owned rows."""

    def __init__(self, core: PaiNN) -> None:
        super().__init__()
        self.stack = LayerStack(core)

    def forward(self, layer, x, vec, edge_index, edge_rbf, edge_unit, num_local):
        n = _owned_count(num_local, x.shape[0])
        edge_slot, edge_kmax = slots(edge_index[1], n)
        return self.stack(layer, x, vec, edge_index, edge_rbf, edge_unit, edge_slot, _never_one(edge_kmax), n)


def _zeros_if_none(gradient: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if gradient is None else gradient


def _traced(module: nn.Module, body, example: Tuple[Tensor, ...]) -> nn.Module:
    """``body(module, *inputs)`` with ``module``'s weights as explicit inputs, traced by make_fx (autograd included)."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    module = copy.deepcopy(module)
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    names = list(state)

    def run(weights: List[Tensor], *inputs: Tensor):
        parameters = dict(zip(names, weights))
        with torch.enable_grad():
            return body(lambda *args: torch.func.functional_call(module, parameters, args), *inputs)

    with torch.fx.experimental._config.patch(use_duck_shape=False):
        traced = make_fx(run, tracing_mode="symbolic", decomposition_table=core_aten_decompositions())(
            [state[n] for n in names], *example
        )
    return TracedWithWeights(traced, [state[n] for n in names])


class _LayerWithGeometry(nn.Module):
    """One layer from the active positions: edge features, then ``LayerStack``."""

    def __init__(self, core: PaiNN, dtype: torch.dtype) -> None:
        super().__init__()
        self.parts = _Parts(core, ["radial_basis", "min_distance"])
        self.stack = LayerStack(core)
        self.dtype = dtype

    def forward(self, layer, x, vec, edge_index, positions, edge_slot, edge_kmax, num_targets):
        edge_rbf, edge_unit = _geometry(self.parts, positions, edge_index, self.dtype)
        return self.stack(layer, x, vec, edge_index, edge_rbf, edge_unit, edge_slot, edge_kmax, num_targets)


def _layer_backward_body(call, layer, x, vec, edge_index, positions, edge_slot, edge_kmax, grad_x, grad_vec):
    x = x.detach().requires_grad_(True)
    vec = vec.detach().requires_grad_(True)
    positions = positions.detach().requires_grad_(True)
    x_out, vec_out = call(layer, x, vec, edge_index, positions, edge_slot, edge_kmax, grad_x.shape[0])
    gradients = torch.autograd.grad([x_out, vec_out], [x, vec, positions], [grad_x, grad_vec], allow_unused=True)
    return (_zeros_if_none(gradients[0], x), _zeros_if_none(gradients[1], vec), _zeros_if_none(gradients[2], positions))


class LayerBackwardProgram(nn.Module):
    """``domain_layer_backward``: input and position gradients of layer ``layer`` from its output gradients."""

    def __init__(self, core: PaiNN, dtype: torch.dtype, example: Tuple[Tensor, ...]) -> None:
        super().__init__()
        layer, x, vec, edge_index, positions, grad_x, grad_vec = example
        edge_slot, edge_kmax = slots(edge_index[1], grad_x.shape[0])
        self.traced = _traced(
            _LayerWithGeometry(core, dtype), _layer_backward_body,
            (layer, x, vec, edge_index, positions, edge_slot, _never_one(edge_kmax), grad_x, grad_vec),
        )

    def forward(self, layer, x, vec, edge_index, positions, grad_x, grad_vec):
        edge_slot, edge_kmax = slots(edge_index[1], grad_x.shape[0])
        return self.traced(layer, x, vec, edge_index, positions, edge_slot, _never_one(edge_kmax), grad_x, grad_vec)


def _normalisers(physical: PhysicalModel) -> Tuple[float, float, float, float]:
    """(energy_mean, energy_std, forces_mean, forces_std) of the model, as floats."""
    return (float(physical.energy_mean), float(physical.energy_std), float(physical.forces_mean), float(physical.forces_std))


def _atom_share(energy_mean: float, total_atoms: Tensor, dtype: torch.dtype) -> Tensor:
    """The energy normaliser's mean per atom: ``mean / max(total_atoms, 1)`` (each atom carries its share)."""
    return (energy_mean / total_atoms.clamp(min=1).to(torch.float64)).to(dtype)


class ReadoutProgram(nn.Module):
    """``domain_readout`` of a direct-force model: per-atom energies (n,) and forces (n, 3)."""

    def __init__(self, physical: PhysicalModel, dtype: torch.dtype) -> None:
        super().__init__()
        self.parts = _Parts(physical.core, ["out_energy", "out_forces", "direct_forces"])
        self.normalisers = _normalisers(physical)
        self.dtype = dtype

    def forward(self, x, vec, total_atoms):
        energy_mean, energy_std, forces_mean, forces_std = self.normalisers
        raw_energy, raw_forces = PaiNN.readout(self.parts, x, vec, True)
        energy = raw_energy * energy_std + _atom_share(energy_mean, total_atoms, self.dtype)
        return energy, raw_forces * forces_std + forces_mean


class _EnergyHead(nn.Module):
    def __init__(self, core: PaiNN) -> None:
        super().__init__()
        self.out_energy = copy.deepcopy(core.out_energy)

    def forward(self, x):
        return self.out_energy(x).squeeze(1)


def _readout_backward_body(call, x, vec, scale):
    x = x.detach().requires_grad_(True)
    raw_energy = call(x)
    (grad_x,) = torch.autograd.grad([raw_energy.sum() * scale], [x])
    return raw_energy.detach(), grad_x, torch.zeros_like(vec)


class ReadoutGradientProgram(nn.Module):
    """``domain_readout`` of a gradient-force model: energies (n,), d(energy)/dx (n, H), d(energy)/dvec (n, 3, H)."""

    def __init__(self, physical: PhysicalModel, dtype: torch.dtype, scale: float, example: Tuple[Tensor, ...]) -> None:
        super().__init__()
        self.normalisers = _normalisers(physical)
        self.dtype = dtype
        x, vec, _ = example
        head = _EnergyHead(physical.core)
        self.traced = _traced(head, lambda call, x, vec: _readout_backward_body(call, x, vec, scale), (x, vec))

    def forward(self, x, vec, total_atoms):
        energy_mean, energy_std, _, _ = self.normalisers
        raw_energy, grad_x, grad_vec = self.traced(x, vec)
        energy = raw_energy * energy_std + _atom_share(energy_mean, total_atoms, self.dtype)
        return energy, grad_x, grad_vec


def force_convention(physical: PhysicalModel) -> Tuple[float, float]:
    """``domain_force_convention()``: force = -scale * gradient, plus offset on owned rows."""
    if physical.forces_mode == physical.conservative_mode:
        return 1.0, 0.0
    return float(physical.forces_std), float(physical.forces_mean)


def gradient_scale(physical: PhysicalModel) -> float:
    """d(differentiated energy)/d(raw energy): the physical energy's for conservative forces, else 1."""
    return float(physical.energy_std) if physical.forces_mode == physical.conservative_mode else 1.0


def _example_rank(max_atomic_number: int, device: torch.device) -> Dict[str, Tensor]:
    """Example rank: EXAMPLE_OWNED owned atoms and EXAMPLE_GHOSTS ghosts in a box, every pair a candidate.

    Only its sizes matter (none 0 or 1, none equal to another); the values
    let the programs run once.
    """
    generator = torch.Generator().manual_seed(EXAMPLE_SEED)
    n, total = EXAMPLE_OWNED, EXAMPLE_OWNED + EXAMPLE_GHOSTS
    positions = EXAMPLE_BOX * torch.rand((total, 3), generator=generator, dtype=torch.float64)
    ids = torch.randperm(total, generator=generator) + 1
    centre = torch.arange(n).repeat_interleave(total - 1)
    neighbour = torch.cat([torch.cat([torch.arange(i), torch.arange(i + 1, total)]) for i in range(n)])
    cell = torch.eye(3, dtype=torch.float64) * EXAMPLE_BOX
    pbc = torch.tensor([True, True, False])
    numbers = torch.randint(1, max_atomic_number + 1, (total,), generator=generator)
    tensors = dict(positions=positions, ids=ids, num_local=torch.tensor(n), cell=cell, pbc=pbc, centre=centre,
                   neighbour=neighbour, atomic_numbers=numbers)
    return {name: tensor.to(device) for name, tensor in tensors.items()}


def domain_programs(
    physical: PhysicalModel, cutoff: float, max_neighbors: int, max_atomic_number: int, device: torch.device
) -> Tuple[List[Tuple[str, nn.Module, Tuple[Tensor, ...], Tuple[Any, ...]]], Dict[str, Any]]:
    """([(name, module, example, dynamic_shapes)], metadata record) of a PaiNN model's domain programs.

    Each example is a run of the previous programs on an example rank, so
    every program is exported on consistent inputs.
    """
    physical = copy.deepcopy(physical).to(device)
    core: PaiNN = physical.core
    dtype = next(t for t in core.parameters() if t.is_floating_point()).dtype
    width = max(int(max_neighbors), 0)
    gradient = physical.forces_mode != physical.direct_mode
    rank = _example_rank(max_atomic_number, device)
    Dim = torch.export.Dim
    rows_dim, pairs_dim = Dim("rows", min=0), Dim("pairs", min=0)
    geometry_inputs = (rank["positions"], rank["ids"], rank["num_local"], rank["cell"], rank["pbc"], rank["centre"], rank["neighbour"])
    geometry_shapes = ({0: rows_dim}, {0: rows_dim}, None, None, None, {0: pairs_dim}, {0: pairs_dim})
    programs: List[Tuple[str, nn.Module, Tuple[Tensor, ...], Tuple[Any, ...]]] = []
    keys = torch.full((EXAMPLE_OWNED + EXAMPLE_GHOSTS, width), NO_KEY, dtype=torch.long, device=device)
    if width > 0:
        cap = CapProgram(cutoff, width)
        programs.append((CAP, cap, geometry_inputs, geometry_shapes))
        with torch.no_grad():
            owned = cap(*geometry_inputs)
        # Ghost keys as a host would copy them: here the owned rows' keys repeated (only their shape matters).
        keys = torch.cat([owned, owned.repeat(3, 1)[: EXAMPLE_GHOSTS]])
    build = BuildProgram(core, cutoff, width, dtype)
    build_inputs = geometry_inputs + (keys, rank["atomic_numbers"])
    build_shapes = geometry_shapes + ({0: rows_dim}, {0: rows_dim})
    programs.append((BUILD, build, build_inputs, build_shapes))
    with torch.no_grad():
        rows, edge_index, edge_rbf, edge_unit, x, vec = build(*build_inputs)
    active_dim, edges_dim, owned_dim = Dim("active", min=0), Dim("edges", min=0), Dim("owned", min=0)
    layer = torch.tensor(0, device=device)
    layer_inputs = (layer, x, vec, edge_index, edge_rbf, edge_unit, rank["num_local"])
    layer_shapes = (None, {0: active_dim}, {0: active_dim}, {1: edges_dim}, {0: edges_dim}, {0: edges_dim}, None)
    layer_program = LayerProgram(core)
    programs.append((LAYER, layer_program, layer_inputs, layer_shapes))
    with torch.no_grad():
        x_out, vec_out = layer_program(*layer_inputs)
    total_atoms = torch.tensor(EXAMPLE_OWNED + EXAMPLE_GHOSTS + 3, device=device)
    readout_inputs = (x_out, vec_out, total_atoms)
    readout_shapes = ({0: owned_dim}, {0: owned_dim}, None)
    if gradient:
        readout = ReadoutGradientProgram(physical, dtype, gradient_scale(physical), readout_inputs)
        programs.append((READOUT, readout, readout_inputs, readout_shapes))
        positions = rank["positions"].index_select(0, rows)
        backward_inputs = (layer, x, vec, edge_index, positions, torch.ones_like(x_out), torch.ones_like(vec_out))
        backward_shapes = (None, {0: active_dim}, {0: active_dim}, {1: edges_dim}, {0: active_dim}, {0: owned_dim}, {0: owned_dim})
        programs.append((LAYER_BACKWARD, LayerBackwardProgram(core, dtype, backward_inputs), backward_inputs, backward_shapes))
    else:
        programs.append((READOUT, ReadoutProgram(physical, dtype), readout_inputs, readout_shapes))
    scale, offset = force_convention(physical)
    record = {
        "version": DOMAIN_FORMAT_VERSION,
        "programs": [name for name, *_ in programs],
        "layout": [int(core.num_layers), int(core.hidden_channels), width],
        "force_convention": [scale, offset],
    }
    return programs, record



# ---------------------------------------------------------------------------
# Running a package's domain programs on one rank (export verification)
# ---------------------------------------------------------------------------
# Extra ghost shell and candidate-pair reach (Angstrom), as a LAMMPS skin.
VERIFY_SKIN = 1.0


def _one_rank(atoms, cutoff: float) -> Dict[str, Any]:
    """One rank that owns every atom (wrapped into the cell) with the periodic images within reach as ghosts."""
    import numpy as np

    cell = np.array(atoms.cell.array, dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    positions = np.array(atoms.positions, dtype=float)
    if pbc.any():
        fractional = positions @ np.linalg.inv(cell)
        positions = np.where(pbc, fractional - np.floor(fractional), fractional) @ cell
    reach = cutoff + VERIFY_SKIN
    inverse = np.linalg.inv(cell) if pbc.any() else np.zeros((3, 3))
    images = [int(np.ceil(reach * np.linalg.norm(inverse[:, d]))) if pbc[d] else 0 for d in range(3)]
    shifts = np.array([(a, b, c) for a in range(-images[0], images[0] + 1) for b in range(-images[1], images[1] + 1)
                       for c in range(-images[2], images[2] + 1) if (a, b, c) != (0, 0, 0)]).reshape(-1, 3)
    count = len(atoms)
    image_positions = (positions[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)
    image_owner = np.tile(np.arange(count), len(shifts))
    if len(image_positions) and count:
        distance = np.linalg.norm(image_positions[:, None, :] - positions[None, :, :], axis=-1).min(axis=1)
        ghosts = np.nonzero(distance <= reach)[0]
    else:
        ghosts = np.zeros(0, dtype=int)
    rows = np.concatenate([positions, image_positions[ghosts]])
    owner = np.concatenate([np.arange(count), image_owner[ghosts]])
    pair = np.linalg.norm(rows[None, :, :] - positions[:, None, :], axis=-1)  # (owned, rows)
    centre, neighbour = np.nonzero((pair <= reach) & (pair > 1.0e-9))
    box = cell.copy()
    for d in range(3):  # a host always has a box: non-periodic directions get a long vector
        if not pbc[d] or np.linalg.norm(box[d]) < 1.0e-9:
            box[d] = np.eye(3)[d] * (np.ptp(positions, axis=0).max() + 50.0 if count else 50.0)
    return {"positions": torch.tensor(rows), "owner": torch.tensor(owner), "num_local": count,
            "cell": torch.tensor(box), "pbc": torch.tensor(pbc), "centre": torch.tensor(centre),
            "neighbour": torch.tensor(neighbour), "numbers": torch.tensor(atoms.numbers, dtype=torch.long)}


def run_one_rank(path: str, record: Dict[str, Any], atoms, cutoff: float, device: str = "cpu") -> Tuple[float, Tensor]:
    """Energy (eV) and forces (N, 3) of ``atoms`` from the package's domain programs on one rank.

    The rank owns every atom and holds its periodic images as ghosts; ghost
    rows are refreshed from their owners between programs and their
    gradients summed into the owners, as a host's communication does.
    """
    from torch._inductor.package import load_package

    programs = {name: load_package(path, name) for name in record["programs"]}

    def call(name: str, *inputs: Tensor) -> Tuple[Tensor, ...]:
        outputs = programs[name](*[t.to(device) for t in inputs])
        outputs = tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)
        return tuple(o.cpu() for o in outputs)

    layers, _, width = record["layout"]
    gradient = LAYER_BACKWARD in record["programs"]
    scale, offset = record["force_convention"]
    rank = _one_rank(atoms, cutoff)
    n, owner = rank["num_local"], rank["owner"]
    total = owner.shape[0]
    ids = owner + 1
    numbers = rank["numbers"].index_select(0, owner)
    graph_inputs = (rank["positions"], ids, torch.tensor(n), rank["cell"], rank["pbc"], rank["centre"], rank["neighbour"])
    keys = torch.zeros((total, 0), dtype=torch.long)
    if width > 0:
        keys = call(CAP, *graph_inputs)[0].index_select(0, owner)  # ghosts: their owners' rows
    rows, edge_index, edge_rbf, edge_unit, x, vec = call(BUILD, *graph_inputs, keys, numbers)

    def all_rows(owned_x: Tensor, owned_vec: Tensor) -> Tuple[Tensor, Tensor]:
        return owned_x.index_select(0, owner).index_select(0, rows), owned_vec.index_select(0, owner).index_select(0, rows)

    inputs = []
    for k in range(layers):
        inputs.append((x, vec))
        x_out, vec_out = call(LAYER, torch.tensor(k), x, vec, edge_index, edge_rbf, edge_unit, torch.tensor(n))
        x, vec = all_rows(x_out, vec_out)
    readout = call(READOUT, x_out, vec_out, torch.tensor(n))
    energy = float(readout[0].double().sum())
    if not gradient:
        return energy, readout[1].double()
    grad_x, grad_vec = readout[1], readout[2]
    positions = rank["positions"].index_select(0, rows)
    forces = torch.zeros((n, 3), dtype=torch.float64)
    active_owner = owner.index_select(0, rows)
    for k in reversed(range(layers)):
        x_in, vec_in = inputs[k]
        back = call(LAYER_BACKWARD, torch.tensor(k), x_in, vec_in, edge_index, positions, grad_x, grad_vec)
        forces.index_add_(0, active_owner, -scale * back[2].double())
        grad_x = torch.zeros_like(grad_x).index_add_(0, active_owner, back[0])
        grad_vec = torch.zeros_like(grad_vec).index_add_(0, active_owner, back[1])
    return energy, forces + offset
