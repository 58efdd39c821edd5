"""Per-layer entry points of PaiNN TorchScript artifacts, for MPI domain decomposition.

A host that splits space between ranks (LAMMPS) calls these scripted
methods on each rank, with its owned atoms in rows ``[0, n)`` and ghost
atoms in rows ``[n, N)``, and exchanges per-atom data with the other ranks
in between. The graph rules are ``runtime/domain_graph.py``; the layers are
the same ``PaiNN.interactions`` the single-process ``forward`` runs.

Protocol per force call (``L`` layers, ``H`` channels, ``M`` cap width;
``domain_layout() -> [L, H, M]``):

1. ``capped_keys = domain_cap(...)`` (n, M) for the owned atoms; the host
   copies each owned row to that atom's ghosts (forward communication, M
   values per atom) to make ``capped_keys_all`` (N, M).
2. ``edge_index = domain_graph(..., capped_keys_all)`` (2, E), edges into
   owned atoms; ``edge_rbf, edge_unit = domain_geometry(positions, edge_index)``.
3. ``x, vec = domain_embed(atomic_numbers)`` (N, H), (N, 3, H). For each
   layer k: ``x_out, vec_out = domain_layer(k, x, vec, ...)`` (n, ...); the
   host forms the next (N, ...) inputs from the owned rows and the owners'
   rows copied to the ghosts (4H values per atom).
4. ``energy, forces = domain_readout(x, vec, total_atoms)``: per-atom
   energies (n,) in eV, summing to the total energy over all ranks, and
   direct forces (n, 3) (or (0, 3)).
5. Gradient forces (forces mode ``gradient`` or ``conservative``), backward
   layer by layer: ``grad_x, grad_vec = domain_readout_backward(x, vec)``;
   for k from L-1 to 0, ``domain_layer_backward(k, x_k, vec_k, ..., grad_x,
   grad_vec)`` returns the gradients of the layer's (N, ...) inputs and of
   the edge features; the host adds the ghost rows of the input gradients
   into their owners' rows (reverse communication, 4H values per atom) to
   get the next ``grad_x, grad_vec`` (owned rows), and sums the edge-feature
   gradients over layers; ``domain_geometry_backward`` turns those into
   position gradients (N, 3) for owned and ghost rows. With
   ``(scale, offset) = domain_force_convention()``, the force on every row
   is ``-scale * gradient`` (ghost rows go back to their owners as LAMMPS
   ghost forces), plus ``offset`` on owned rows.

Each backward call recomputes its layer's forward with autograd, so no
autograd graph is kept between calls.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ocpdeploy.runtime.domain_graph import capped_keys, domain_edges
from ocpdeploy.runtime.slots import slots

from .deployed import DeployedModel, PhysicalModel


def _gradient_or_zeros(gradient: Optional[Tensor], like: Tensor) -> Tensor:
    if gradient is None:
        return torch.zeros_like(like)
    return gradient


class PaiNNDomainModel(DeployedModel):
    """``DeployedModel`` of a PaiNN checkpoint plus the per-layer domain entry points."""

    def __init__(
        self,
        physical: PhysicalModel,
        graph: torch.nn.Module,
        min_atomic_number: int,
        max_atomic_number: int,
        dtype: torch.dtype,
    ) -> None:
        super().__init__(physical, graph, min_atomic_number, max_atomic_number, dtype)
        self.cutoff = float(graph.cutoff)
        self.max_neighbors = int(graph.max_neighbors)

    @torch.jit.export
    def domain_layout(self) -> List[int]:
        """[layers L, hidden channels H, cap width M (0: no cap)]."""
        core = self.physical.core
        return [core.num_layers, core.hidden_channels, max(self.max_neighbors, 0)]

    @torch.jit.export
    def domain_cap(
        self, positions: Tensor, ids: Tensor, num_local: int, cell: Tensor, pbc: Tensor, centre: Tensor, neighbour: Tensor
    ) -> Tensor:
        """Capped neighbour keys of the owned atoms, (n, M) int64 (``domain_graph.capped_keys``)."""
        return capped_keys(positions, ids, num_local, cell, pbc, centre, neighbour, self.cutoff, self.max_neighbors)

    @torch.jit.export
    def domain_graph(
        self,
        positions: Tensor,
        ids: Tensor,
        num_local: int,
        cell: Tensor,
        pbc: Tensor,
        centre: Tensor,
        neighbour: Tensor,
        capped_keys_all: Tensor,
    ) -> Tensor:
        """Edges into the owned atoms, (2, E) int64 (``domain_graph.domain_edges``)."""
        return domain_edges(positions, ids, num_local, cell, pbc, centre, neighbour, capped_keys_all, self.cutoff)

    @torch.jit.export
    def domain_geometry(self, positions: Tensor, edge_index: Tensor) -> Tuple[Tensor, Tensor]:
        """Edge radial basis (E, R) and unit vectors (E, 3) from unwrapped positions (N, 3)."""
        # Differences in float64 first: ghost coordinates can be far from the origin.
        vector = (positions.index_select(0, edge_index[0]) - positions.index_select(0, edge_index[1])).to(self._dtype())
        distance = torch.linalg.vector_norm(vector, dim=-1)
        return self.physical.core.edge_features(vector, distance)

    @torch.jit.export
    def domain_embed(self, atomic_numbers: Tensor) -> Tuple[Tensor, Tensor]:
        """Initial features x (N, H), vec (N, 3, H)."""
        return self.physical.core.embed(atomic_numbers.to(torch.long))

    @torch.jit.export
    def domain_layer(
        self, layer: int, x: Tensor, vec: Tensor, edge_index: Tensor, edge_rbf: Tensor, edge_unit: Tensor, num_local: int
    ) -> Tuple[Tensor, Tensor]:
        """Message-passing layer ``layer`` on (N, ...) features -> owned rows (n, H), (n, 3, H)."""
        core = self.physical.core
        if layer < 0 or layer >= core.num_layers:
            raise ValueError(f"layer must be in [0, {core.num_layers}), got {layer}")
        edge_slot, edge_kmax = slots(edge_index[1], num_local)
        return core.interactions(x, vec, edge_index, edge_rbf, edge_unit, edge_slot, edge_kmax, num_local, layer, layer + 1)

    @torch.jit.export
    def domain_readout(self, x: Tensor, vec: Tensor, total_atoms: int) -> Tuple[Tensor, Tensor]:
        """Per-atom energies (n,) eV and direct forces (n, 3) eV/A, or (0, 3).

        The energy normaliser's mean is per structure; each atom carries
        ``mean / total_atoms`` of it, so the energies sum to the total.
        """
        physical = self.physical
        direct = physical.forces_mode == physical.direct_mode
        raw_energy, raw_forces = physical.core.readout(x, vec, direct)
        energy = raw_energy * physical.energy_std + physical.energy_mean / float(max(total_atoms, 1))
        if direct:
            return energy, raw_forces * physical.forces_std + physical.forces_mean
        return energy, raw_forces

    def _gradient_scale(self) -> float:
        """d(differentiated energy)/d(raw energy): the physical energy's for conservative forces, else 1."""
        if self.physical.forces_mode == self.physical.conservative_mode:
            return self.physical.energy_std
        return 1.0

    @torch.jit.export
    def domain_force_convention(self) -> Tuple[float, float]:
        """(scale, offset): force = -scale * gradient on every row, plus offset on owned rows."""
        physical = self.physical
        if physical.forces_mode == physical.conservative_mode:
            return 1.0, 0.0
        return physical.forces_std, physical.forces_mean

    def _require_autograd(self) -> None:
        if not torch.is_grad_enabled():
            raise RuntimeError("domain backward calls need autograd: do not call them under no_grad / inference mode")

    @torch.jit.export
    def domain_readout_backward(self, x: Tensor, vec: Tensor) -> Tuple[Tensor, Tensor]:
        """Gradient of the owned atoms' differentiated energy w.r.t. x (n, H) and vec (n, 3, H)."""
        self._require_autograd()
        x = x.detach().requires_grad_(True)
        vec = vec.detach().requires_grad_(True)
        raw_energy, _ = self.physical.core.readout(x, vec, False)
        gradients = torch.autograd.grad([raw_energy.sum() * self._gradient_scale()], [x, vec], allow_unused=True)
        return _gradient_or_zeros(gradients[0], x), _gradient_or_zeros(gradients[1], vec)

    @torch.jit.export
    def domain_layer_backward(
        self,
        layer: int,
        x: Tensor,
        vec: Tensor,
        edge_index: Tensor,
        edge_rbf: Tensor,
        edge_unit: Tensor,
        num_local: int,
        grad_x: Tensor,
        grad_vec: Tensor,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Gradients of layer ``layer``'s inputs from its output gradients.

        x (N, H), vec (N, 3, H): the layer's inputs; grad_x (n, H), grad_vec
        (n, 3, H): gradients of its outputs. Returns the gradients of x and
        vec (N, ...) and of edge_rbf (E, R) and edge_unit (E, 3).
        """
        self._require_autograd()
        x = x.detach().requires_grad_(True)
        vec = vec.detach().requires_grad_(True)
        edge_rbf = edge_rbf.detach().requires_grad_(True)
        edge_unit = edge_unit.detach().requires_grad_(True)
        x_out, vec_out = self.domain_layer(layer, x, vec, edge_index, edge_rbf, edge_unit, num_local)
        output_gradients: List[Optional[Tensor]] = [grad_x, grad_vec]
        gradients = torch.autograd.grad([x_out, vec_out], [x, vec, edge_rbf, edge_unit], output_gradients, allow_unused=True)
        return (
            _gradient_or_zeros(gradients[0], x),
            _gradient_or_zeros(gradients[1], vec),
            _gradient_or_zeros(gradients[2], edge_rbf),
            _gradient_or_zeros(gradients[3], edge_unit),
        )

    @torch.jit.export
    def domain_geometry_backward(self, positions: Tensor, edge_index: Tensor, grad_rbf: Tensor, grad_unit: Tensor) -> Tensor:
        """Position gradients (N, 3) float64 from the summed edge-feature gradients."""
        self._require_autograd()
        positions = positions.detach().to(torch.float64).requires_grad_(True)
        edge_rbf, edge_unit = self.domain_geometry(positions, edge_index)
        if not edge_rbf.requires_grad:
            return torch.zeros_like(positions)
        output_gradients: List[Optional[Tensor]] = [grad_rbf, grad_unit]
        gradients = torch.autograd.grad([edge_rbf, edge_unit], [positions], output_gradients, allow_unused=True)
        return _gradient_or_zeros(gradients[0], positions)
