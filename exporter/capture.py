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

from ocpdeploy.runtime.keys import ATOMIC_NUMBERS, BATCH, CELL, ENERGY, FORCES, FORCES_CONSERVATIVE, FORCES_DIRECT, POSITIONS, STRESS

from .deployed import PhysicalModel

STRUCTURE_INPUTS = [POSITIONS, CELL, ATOMIC_NUMBERS, BATCH]


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


def dynamic_shapes(graph_names: List[str], example: Tuple[Tensor, ...]) -> Tuple[Dict[int, Any], ...]:
    atoms = torch.export.Dim("atoms")
    structures = torch.export.Dim("structures")
    shapes: List[Dict[int, Any]] = [{0: atoms}, {0: structures}, {0: atoms}, {0: atoms}]
    for name, tensor in zip(graph_names, example[len(STRUCTURE_INPUTS) :]):
        # Every graph tensor has one variable dimension: the last for (2, E)
        # index pairs, the first otherwise.
        dim = 1 if (tensor.dim() == 2 and tensor.shape[0] == 2 and not tensor.is_floating_point()) else 0
        shapes.append({dim: torch.export.Dim(f"{name}_count")})
    return tuple(shapes)


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
    physical: PhysicalModel, graph_names: List[str], example: Tuple[Tensor, ...], automatic: bool = False
) -> Tuple[nn.Module, Tuple[Any, ...]]:
    """(module, dynamic_shapes) to hand to ``torch.export`` / ``torch.onnx.export`` with ``example``.

    ``automatic``: every dynamic dimension is ``Dim.AUTO`` instead of a named
    ``Dim``, so ``torch.export`` itself relates sizes that must be equal
    (``cell_offsets`` and ``edge_slot`` both have E rows); plain
    ``torch.export`` refuses named dimensions that turn out equal.
    """
    # A copy, on the example's device (the captured backward traces with the
    # weights); the caller's module stays where it is.
    physical = unchunked(physical).to(example[0].device)
    names = output_names(physical)
    shapes = dynamic_shapes(graph_names, example)
    if automatic:
        shapes = tuple({dim: torch.export.Dim.AUTO for dim in entry} for entry in shapes)
    if physical.forces_mode == FORCES_DIRECT:
        # torch.export matches dynamic_shapes to the signature: varargs are one nested entry.
        return FlatInputs(physical, graph_names, names), shapes[: len(STRUCTURE_INPUTS)] + (shapes[len(STRUCTURE_INPUTS) :],)
    return capture_backward(physical, graph_names, names, example), (shapes,)
