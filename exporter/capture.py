"""A ``PhysicalModel`` as one exportable ``nn.Module`` for ``torch.export`` (ONNX and AOTInductor).

Inputs (names in this order): ``positions`` (N,3), ``cell`` (B,3,3),
``atomic_numbers`` (N,), ``batch`` (N,), then the model's prepared graph
tensors (``graph.input_names``); N, B and every graph size are dynamic.
Outputs, as a tuple in this order: ``energy`` (B,), ``forces`` (N,3) and, in
conservative mode, ``stress`` (B,3,3).

The layers make one pass over all edges (``unchunked``): an exported graph
has no data-dependent loops. Direct-force models export as they are. For
gradient and conservative forces the backward pass is captured first: the
model is called through ``torch.func.functional_call`` with its weights as
explicit inputs, traced with ``make_fx`` (symbolic shapes, core ATen
decompositions, autograd included), and the traced graph is exported with
the weights held as buffers (see export-pitfalls.md: ``autograd.grad``
inside forward does not export otherwise).
"""

import copy
from typing import Any, Dict, List, Tuple

import torch
import torch.fx.experimental._config
from torch import Tensor, nn

from ocpdeploy.runtime.contract import STRUCTURE_CONTRACT, ContractInput, named_sizes
from ocpdeploy.runtime.keys import ATOMIC_NUMBERS, CELL, ENERGY, FORCES, FORCES_CONSERVATIVE, FORCES_DIRECT, POSITIONS, STRESS

from .deployed import PhysicalModel

STRUCTURE_INPUTS = [entry.name for entry in STRUCTURE_CONTRACT]


class FlatInputs(nn.Module):
    """Positional-tensor entry point around a PhysicalModel (direct forces)."""

    def __init__(self, physical: PhysicalModel, graph_names: List[str], output_names: List[str]) -> None:
        super().__init__()
        self.physical = physical
        self.graph_names = graph_names
        self.output_names = output_names

    def forward(self, positions: Tensor, cell: Tensor, atomic_numbers: Tensor, batch: Tensor, *graph_tensors: Tensor):
        outputs = self.physical(positions, cell, atomic_numbers, batch, dict(zip(self.graph_names, graph_tensors)))
        return tuple(outputs[name] for name in self.output_names)


class TracedWithWeights(nn.Module):
    """A make_fx graph that takes the weights first; holds them as buffers."""

    def __init__(self, traced: nn.Module, weights: List[Tensor]) -> None:
        super().__init__()
        self.traced = traced
        self.num_weights = len(weights)
        for i, weight in enumerate(weights):
            self.register_buffer(f"weight_{i}", weight.detach().clone())

    def forward(self, *inputs: Tensor):
        weights = [getattr(self, f"weight_{i}") for i in range(self.num_weights)]
        return self.traced(weights, *inputs)


def capture_backward(physical: PhysicalModel, graph_names: List[str], output_names: List[str], example: Tuple[Tensor, ...]) -> nn.Module:
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    model = copy.deepcopy(physical)  # functional_call tracing must not touch the caller's module
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    names = list(state)

    def run(weights: List[Tensor], positions, cell, atomic_numbers, batch, *graph_tensors):
        outputs = torch.func.functional_call(
            model, dict(zip(names, weights)), (positions, cell, atomic_numbers, batch, dict(zip(graph_names, graph_tensors)))
        )
        return tuple(outputs[name] for name in output_names)

    # No duck shaping: graph sizes that happen to be equal in the example
    # (or equal to a weight dimension) must stay independent symbols.
    with torch.fx.experimental._config.patch(use_duck_shape=False):
        traced = make_fx(run, tracing_mode="symbolic", decomposition_table=core_aten_decompositions())(
            [state[n] for n in names], *example
        )
    return TracedWithWeights(traced, [state[n] for n in names])


# Example sizes: distinct primes, so that no two independent sizes are equal
# in the example (torch.export would otherwise be free to relate them) and
# none is 0 or 1 (which it specialises); larger than every fixed size of the
# contract (2, 3).
EXAMPLE_SIZES = (13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109)
EXAMPLE_SEED = 20261203
# Example geometry: atoms uniform in a cube of this edge (Angstrom), cells
# this long, image shifts in {-1, 0, 1}. The example only fixes shapes;
# export verification runs real structures (``probe.py``).
EXAMPLE_BOX = 8.0


def example_sizes(contract: List[ContractInput]) -> Dict[str, int]:
    """A distinct example value (>= 2) for every named size of ``contract``."""
    names = named_sizes(contract)
    if len(names) > len(EXAMPLE_SIZES):
        raise ValueError(f"{len(names)} named sizes but only {len(EXAMPLE_SIZES)} distinct example sizes")
    return dict(zip(names, EXAMPLE_SIZES))


def example_inputs(
    contract: List[ContractInput], dtype: torch.dtype, max_atomic_number: int, device: torch.device
) -> Tuple[Tensor, ...]:
    """Inputs of the contract's shapes with every independent size distinct and >= 2.

    Index tensors hold valid indices of the size they index into (sorted,
    as destinations are); floating inputs are random geometry. The values
    only have to let the model run once; the exported program must not
    depend on them.
    """
    sizes = example_sizes(contract)
    generator = torch.Generator().manual_seed(EXAMPLE_SEED)
    tensors: List[Tensor] = []
    for entry in contract:
        shape = [sizes[s] if isinstance(s, str) else s for s in entry.shape]
        if entry.name == POSITIONS:
            tensor = EXAMPLE_BOX * torch.rand(shape, generator=generator, dtype=torch.float64)
        elif entry.name == CELL:
            tensor = EXAMPLE_BOX * torch.eye(3, dtype=torch.float64).expand(shape) + 0.1 * torch.randn(shape, generator=generator, dtype=torch.float64)
        elif entry.name == ATOMIC_NUMBERS:
            tensor = torch.randint(1, max_atomic_number + 1, shape, generator=generator)
        elif entry.indexes is not None:
            tensor = torch.randint(0, sizes[entry.indexes], shape, generator=generator).sort(dim=-1).values
        elif entry.name.endswith("_kmax"):
            tensor = torch.zeros(shape, dtype=torch.long)
        else:  # cell offsets: integer image shifts stored as floats
            tensor = torch.randint(-1, 2, shape, generator=generator).to(torch.float64)
        tensors.append(tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else torch.long))
    return tuple(tensors)


def dynamic_shapes(contract: List[ContractInput]) -> Tuple[Dict[int, Any], ...]:
    """One ``torch.export.Dim`` per named size, shared by every input dimension of that name."""
    dims = {name: torch.export.Dim(name, min=0) for name in named_sizes(contract)}
    return tuple({axis: dims[size] for axis, size in enumerate(entry.shape) if isinstance(size, str)} for entry in contract)


def unchunked(physical: PhysicalModel) -> PhysicalModel:
    """A copy whose layers make one pass over all edges: an exported graph has no data-dependent loops."""
    physical = copy.deepcopy(physical)
    for module in physical.modules():
        if hasattr(module, "edge_chunk_elements"):
            module.edge_chunk_elements = 0
    return physical


def output_names(physical: PhysicalModel) -> List[str]:
    return [ENERGY, FORCES] + ([STRESS] if physical.forces_mode == FORCES_CONSERVATIVE else [])


def exportable(
    physical: PhysicalModel, contract: List[ContractInput], example: Tuple[Tensor, ...]
) -> Tuple[nn.Module, Tuple[Any, ...]]:
    """(module, dynamic_shapes) to hand to ``torch.export`` / ``torch.onnx.export`` with ``example``.

    ``contract`` lists the inputs (``runtime/contract.py``); ``example`` is
    ``example_inputs(contract, ...)``. Each named size of the contract is one
    ``torch.export.Dim`` shared by the dimensions that carry its name, so the
    only size relations in the program are the declared ones.
    """
    # A copy, on the example's device (the captured backward traces with the
    # weights); the caller's module stays where it is.
    physical = unchunked(physical).to(example[0].device)
    names = output_names(physical)
    graph_names = [entry.name for entry in contract[len(STRUCTURE_INPUTS) :]]
    shapes = dynamic_shapes(contract)
    if physical.forces_mode == FORCES_DIRECT:
        # torch.export matches dynamic_shapes to the signature: varargs are one nested entry.
        return FlatInputs(physical, graph_names, names), shapes[: len(STRUCTURE_INPUTS)] + (shapes[len(STRUCTURE_INPUTS) :],)
    return capture_backward(physical, graph_names, names, example), (shapes,)
