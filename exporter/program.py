"""The self-contained program inside ONNX and AOTInductor artifacts: structures in, energy and forces out.

``StructureProgram.forward(positions (N,3), atomic_numbers (N,), cell (B,3,3),
pbc (B,3) bool, tags (N,), natoms (B,))`` returns, as a tuple, ``energy``
(B,), ``forces`` (N,3) and, in conservative mode, ``stress`` (B,3,3) (NaN for
a structure that is not periodic in all three directions): the inputs and
outputs of the TorchScript artifact's ``forward_batch``
(``runtime/contract.py``: ``PROGRAM_CONTRACT``). The neighbour graph is built
inside, by the same graph module (``runtime/graph_painn.py``,
``runtime/graph_gemnet_oc.py``) that TorchScript artifacts embed, then the
model runs on it (``capture.exportable``: the model, or for gradient and
conservative forces its captured backward). Only N and B are sizes of the
program's inputs; every graph size (edges, triplets, quadruplets, images,
bins) is data-dependent inside it.

Inputs are not validated inside the program (an exported graph cannot
raise on values): ``ocpdeploy.runtime`` checks structures before it calls
an artifact, and other hosts must pass valid structures (known elements,
finite positions, a non-singular cell where pbc is set).
"""

from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from ocpdeploy.runtime.contract import PROGRAM_CONTRACT, ContractInput
from ocpdeploy.runtime.sorting import expand_groups, nonzero_1d

from .capture import exportable, example_inputs, output_names
from .deployed import PhysicalModel, mask_non_periodic_stress

# Example structures for torch.export: their atom counts (sum 17) and their
# pbc. The batch size (4) and the atom count (17) differ from each other and
# from every fixed size (3), and neither is 0 or 1, so torch.export keeps
# both symbolic; the values only let the program run once. The probe suite
# (``probe.py``) then runs other batch sizes, image counts, bin grids and
# neighbour counts.
EXAMPLE_NATOMS = (4, 6, 3, 4)
EXAMPLE_PBC = ((True, True, True), (True, True, False), (False, False, False), (True, False, True))
EXAMPLE_BOX = 6.0
EXAMPLE_SEED = 20261207
# Largest batch and atom count an exported program declares (sizes derived
# from them must stay inside int64 in the program's size checks).
MAX_ATOMS = 2**31 - 1


# Graph entries whose length is a padded group width K (``runtime/slots.py``).
KMAX_SUFFIX = "_kmax"


def _never_one(kmax: Tensor) -> Tensor:
    """``kmax`` (K,) zeros -> (K',) zeros with K' = 2 where K = 1, else K; one size, declared K' != 1 to torch.export.

    K is a data-dependent size inside an exported program, and AOTInductor's
    CPU lowering of a batched product with K as a dimension asks whether
    K == 1 for its layout choice, which it cannot decide for a
    data-dependent size. The declaration settles it at compile time. The
    extra slot is unused and adds nothing to the sums; K stays 0 where there
    are no entries, so no gather runs on an empty table.
    """
    single = (torch.ones_like(kmax).sum() == 1).reshape(1)  # (1,) bool: K == 1
    extra = nonzero_1d(single)  # (1,) where K == 1, else (0,)
    widened = torch.cat([kmax, torch.zeros_like(extra)])
    # The concatenation's length is the sum of two data-dependent sizes. The
    # model reshapes (N*K', ...) slot tables to (N, K', ...), and the compiler
    # cannot match N*(u + v) with the expanded N*u + N*v: it then copies the
    # whole slot table (PaiNN h512's (N*K', 3, H) messages, 3 GB at 10k atoms)
    # instead of reducing it on the fly. A fresh nonzero makes K' one size.
    width = nonzero_1d(torch.ones_like(widened, dtype=torch.bool))
    torch._check(width.shape[0] != 1)
    return torch.zeros_like(width)


class StructureProgram(nn.Module):
    """Graph construction followed by the model; see the module docstring."""

    def __init__(self, graph: nn.Module, model: nn.Module, graph_names: List[str], has_stress: bool) -> None:
        super().__init__()
        self.graph_builder = graph  # not "graph": an exported program names its constants after submodules, and "graph" is taken
        self.model = model
        self.graph_names = graph_names
        self.has_stress = has_stress

    def forward(
        self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, tags: Tensor, natoms: Tensor
    ) -> Tuple[Tensor, ...]:
        batch = expand_groups(natoms, positions.shape[0])  # (N,)
        with torch.no_grad():
            graph = self.graph_builder(positions.detach(), cell.detach(), pbc, natoms, tags)
        prepared = [_never_one(graph[name]) if name.endswith(KMAX_SUFFIX) else graph[name] for name in self.graph_names]
        outputs = list(self.model(positions, cell, atomic_numbers, batch, *prepared))
        if self.has_stress:
            outputs[2] = mask_non_periodic_stress(outputs[2], pbc)
        return tuple(outputs)


def program_example(dtype: torch.dtype, max_atomic_number: int, device: torch.device) -> Tuple[Tensor, ...]:
    """Example inputs of ``PROGRAM_CONTRACT`` (``EXAMPLE_NATOMS`` structures in boxes of ``EXAMPLE_BOX``)."""
    generator = torch.Generator().manual_seed(EXAMPLE_SEED)
    num_atoms = sum(EXAMPLE_NATOMS)
    num_structures = len(EXAMPLE_NATOMS)
    positions = EXAMPLE_BOX * torch.rand((num_atoms, 3), generator=generator, dtype=torch.float64)
    cell = EXAMPLE_BOX * torch.eye(3, dtype=torch.float64).repeat(num_structures, 1, 1)
    atomic_numbers = torch.randint(1, max_atomic_number + 1, (num_atoms,), generator=generator)
    tags = torch.randint(0, 3, (num_atoms,), generator=generator)
    return (
        positions.to(device=device, dtype=dtype),
        atomic_numbers.to(device),
        cell.to(device=device, dtype=dtype),
        torch.tensor(EXAMPLE_PBC, dtype=torch.bool, device=device),
        tags.to(device),
        torch.tensor(EXAMPLE_NATOMS, dtype=torch.long, device=device),
    )


def program_dynamic_shapes(contract: List[ContractInput] = PROGRAM_CONTRACT) -> Tuple[Dict[int, Any], ...]:
    """One ``torch.export.Dim`` per named size of the program's inputs (atoms, structures)."""
    dims: Dict[str, Any] = {}
    shapes: List[Dict[int, Any]] = []
    for entry in contract:
        axes: Dict[int, Any] = {}
        for axis, size in enumerate(entry.shape):
            if isinstance(size, str):
                if size not in dims:
                    dims[size] = torch.export.Dim(size, min=0, max=MAX_ATOMS)
                axes[axis] = dims[size]
        shapes.append(axes)
    return tuple(shapes)


def build_program(
    physical: PhysicalModel,
    graph: nn.Module,
    model_contract: List[ContractInput],
    max_atomic_number: int,
    device: torch.device,
) -> Tuple[StructureProgram, Tuple[Tensor, ...], Tuple[Dict[int, Any], ...]]:
    """(program, example, dynamic_shapes) to hand to ``torch.export`` for the model of ``physical`` and ``graph``.

    ``model_contract`` is the prepared-graph contract of the model
    (``runtime/contract.py``: ``model_contract``); the model is captured on
    its example (``capture.exportable``) and composed with ``graph``.
    """
    dtype = next(t for t in physical.parameters() if t.is_floating_point()).dtype
    model_example = example_inputs(model_contract, dtype, max_atomic_number, device)
    model, _ = exportable(physical, model_contract, model_example)
    graph_names = list(graph.input_names)
    has_stress = len(output_names(physical)) == 3
    program = StructureProgram(graph.to(device), model, graph_names, has_stress)
    return program, program_example(dtype, max_atomic_number, device), program_dynamic_shapes()
