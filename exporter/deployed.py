"""The modules inside artifacts: physical outputs and the TorchScript entry point.

``PhysicalModel`` turns a rewrite's raw outputs into physical ones (eV, eV/A,
eV/A^3) on prepared graph tensors; it is what ONNX artifacts contain.
``DeployedModel`` adds input checks and graph construction in front of it;
it is what TorchScript artifacts contain, so a C++ host passes only
positions, atomic numbers, cell, pbc and tags.

Forces modes (``keys.FORCES_*``):
* ``direct``: the model's force head, ``forces = raw * forces_std + forces_mean``.
* ``gradient``: ``forces = -d(raw energy)/d(positions) * forces_std + forces_mean``,
  as the reference computes it for ``direct_forces: False`` checkpoints.
* ``conservative``: ``forces = -dE/d(positions)`` of the physical energy, and
  ``stress = (1/V) dE/d(strain)`` (ASE sign); the strain is applied to
  positions and cell together.
"""

from typing import Dict, Final, List, Optional

import torch
from torch import Tensor, nn

from ocpdeploy.runtime.keys import ENERGY, FORCES, FORCES_CONSERVATIVE, FORCES_DIRECT, FORCES_GRADIENT, STRESS
from ocpdeploy.runtime.validate import check_structure


def cell_volume(cell: Tensor) -> Tensor:
    """|a0 . (a1 x a2)| of cells (B, 3, 3) -> (B,); written out so it exports to ONNX."""
    a = cell[:, 0]
    b = cell[:, 1]
    c = cell[:, 2]
    cross = torch.stack(
        [b[:, 1] * c[:, 2] - b[:, 2] * c[:, 1], b[:, 2] * c[:, 0] - b[:, 0] * c[:, 2], b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0]],
        dim=1,
    )
    return (a * cross).sum(dim=1).abs()


def mask_non_periodic_stress(stress: Tensor, pbc: Tensor) -> Tensor:
    """Stress (B, 3, 3) with NaN for the structures whose pbc (B, 3) is not all true (no stress defined)."""
    periodic = pbc.to(torch.bool).all(dim=1).view(-1, 1, 1)
    return torch.where(periodic, stress, torch.full_like(stress, float("nan")))


class PhysicalModel(nn.Module):
    """Rewrite core plus baked-in normalisers and the chosen forces mode.

    ``forward(positions (N,3), cell (B,3,3), atomic_numbers (N,), batch (N,),
    graph) -> {"energy": (B,), "forces": (N,3)[, "stress": (B,3,3)]}``.
    """

    energy_key: Final[str] = ENERGY
    forces_key: Final[str] = FORCES
    stress_key: Final[str] = STRESS
    direct_mode: Final[str] = FORCES_DIRECT
    conservative_mode: Final[str] = FORCES_CONSERVATIVE
    forces_mode: str
    energy_mean: float
    energy_std: float
    forces_mean: float
    forces_std: float

    def __init__(
        self,
        core: nn.Module,
        forces_mode: str,
        energy_mean: float,
        energy_std: float,
        forces_mean: float,
        forces_std: float,
    ) -> None:
        super().__init__()
        if forces_mode not in (FORCES_DIRECT, FORCES_GRADIENT, FORCES_CONSERVATIVE):
            raise ValueError(f"unknown forces mode '{forces_mode}'")
        self.core = core
        self.forces_mode = forces_mode
        self.energy_mean = energy_mean
        self.energy_std = energy_std
        self.forces_mean = forces_mean
        self.forces_std = forces_std

    def forward(
        self, positions: Tensor, cell: Tensor, atomic_numbers: Tensor, batch: Tensor, graph: Dict[str, Tensor]
    ) -> Dict[str, Tensor]:
        if self.forces_mode == self.direct_mode:
            raw_energy, raw_forces = self.core.energy_and_forces(positions, cell, atomic_numbers, batch, graph)
            return {
                self.energy_key: raw_energy * self.energy_std + self.energy_mean,
                self.forces_key: raw_forces * self.forces_std + self.forces_mean,
            }
        return self._differentiate(positions, cell, atomic_numbers, batch, graph)

    def _differentiate(
        self, positions: Tensor, cell: Tensor, atomic_numbers: Tensor, batch: Tensor, graph: Dict[str, Tensor]
    ) -> Dict[str, Tensor]:
        conservative = self.forces_mode == self.conservative_mode
        if not torch.is_grad_enabled():
            raise RuntimeError(
                "this artifact computes forces as -dE/dpositions and needs autograd: "
                "do not call it under torch.no_grad() / torch::NoGradGuard / inference mode"
            )
        positions = positions.detach().requires_grad_(True)
        strain = torch.zeros_like(cell).requires_grad_(True)  # (B, 3, 3)
        # Homogeneous deformation (I + strain) of atoms and cell.
        strained_positions = positions + torch.bmm(positions.unsqueeze(1), strain[batch]).squeeze(1)
        strained_cell = cell.detach() + torch.bmm(cell.detach(), strain)
        raw_energy, _ = self.core.energy_and_forces(strained_positions, strained_cell, atomic_numbers, batch, graph)
        energy = raw_energy * self.energy_std + self.energy_mean
        target = energy if conservative else raw_energy
        inputs: List[Tensor] = [positions, strain]
        gradients: List[Optional[Tensor]] = [None, None]
        if target.requires_grad:
            gradients = torch.autograd.grad([target.sum()], inputs, allow_unused=True)
        # else: no edge reaches any atom (a lone atom), so nothing depends on
        # the positions; forces and stress are zero below.
        position_gradient = gradients[0]
        if position_gradient is None:
            position_gradient = torch.zeros_like(positions)
        outputs: Dict[str, Tensor] = {self.energy_key: energy.detach()}
        if conservative:
            outputs[self.forces_key] = -position_gradient.detach()
            strain_gradient = gradients[1]
            if strain_gradient is None:
                strain_gradient = torch.zeros_like(cell)
            volume = cell_volume(cell.detach())  # (B,)
            outputs[self.stress_key] = strain_gradient.detach() / volume.view(-1, 1, 1)
        else:
            outputs[self.forces_key] = -position_gradient.detach() * self.forces_std + self.forces_mean
        return outputs


class DeployedModel(nn.Module):
    """TorchScript entry point: checks, graph construction, physical outputs.

    ``forward(positions (N,3), atomic_numbers (N,), cell (3,3), pbc (3,), tags (N,))``
    returns ``energy`` (0-dim), ``forces`` (N,3) and, in conservative mode for
    fully periodic structures, ``stress`` (3,3). ``forward_batch`` takes
    stacked structures (cell (B,3,3), pbc (B,3), natoms (B,)) and returns
    ``energy`` (B,), ``forces`` (N,3) and, in conservative mode, ``stress``
    (B,3,3) with NaN for structures that are not fully periodic.
    """

    energy_key: Final[str] = ENERGY
    forces_key: Final[str] = FORCES
    stress_key: Final[str] = STRESS
    min_atomic_number: int
    max_atomic_number: int
    dtype_name: str

    def __init__(
        self, physical: PhysicalModel, graph: nn.Module, min_atomic_number: int, max_atomic_number: int, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.physical = physical
        self.graph = graph
        self.min_atomic_number = min_atomic_number
        self.max_atomic_number = max_atomic_number
        self.dtype_name = str(dtype).replace("torch.", "")

    def _dtype(self) -> torch.dtype:
        if self.dtype_name == "float64":
            return torch.float64
        return torch.float32

    def forward(
        self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, tags: Tensor
    ) -> Dict[str, Tensor]:
        check_structure(positions, atomic_numbers, cell, pbc, tags, self.min_atomic_number, self.max_atomic_number)
        natoms = torch.full((1,), positions.shape[0], dtype=torch.long, device=positions.device)
        outputs = self.forward_batch(positions, atomic_numbers, cell.unsqueeze(0), pbc.unsqueeze(0), tags, natoms)
        result: Dict[str, Tensor] = {self.energy_key: outputs[self.energy_key][0], self.forces_key: outputs[self.forces_key]}
        if self.stress_key in outputs and bool(pbc.to(torch.bool).all()):
            result[self.stress_key] = outputs[self.stress_key][0]
        return result

    @torch.jit.export
    def forward_batch(
        self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, tags: Tensor, natoms: Tensor
    ) -> Dict[str, Tensor]:
        if cell.dim() != 3 or pbc.dim() != 2 or natoms.dim() != 1:
            raise ValueError("forward_batch expects cell (B,3,3), pbc (B,3) and natoms (B,)")
        if int(natoms.sum()) != positions.shape[0] or natoms.shape[0] != cell.shape[0] or pbc.shape[0] != cell.shape[0]:
            raise ValueError("natoms, cell and pbc disagree with each other or with the number of positions")
        dtype = self._dtype()
        positions = positions.to(dtype)
        cell = cell.to(dtype)
        pbc = pbc.to(torch.bool)
        atomic_numbers = atomic_numbers.to(torch.long)
        tags = tags.to(torch.long)
        first = 0
        for b in range(natoms.shape[0]):
            n = int(natoms[b])
            check_structure(
                positions[first : first + n],
                atomic_numbers[first : first + n],
                cell[b],
                pbc[b],
                tags[first : first + n],
                self.min_atomic_number,
                self.max_atomic_number,
            )
            first += n
        batch = torch.repeat_interleave(torch.arange(natoms.shape[0], device=positions.device), natoms)
        graph = self.graph(positions, cell, pbc, natoms, tags)
        outputs = self.physical(positions, cell, atomic_numbers, batch, graph)
        if self.stress_key in outputs:
            outputs[self.stress_key] = mask_non_periodic_stress(outputs[self.stress_key], pbc)
        return outputs
