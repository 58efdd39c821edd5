"""Write an ONNX artifact (``.onnx``) of a ``PhysicalModel`` with the dynamo exporter.

Inputs (names in this order): ``positions`` (N,3), ``cell`` (B,3,3),
``atomic_numbers`` (N,), ``batch`` (N,), then the model's prepared graph
tensors (``graph.input_names``); N, B and every graph size are dynamic.
Outputs: ``energy`` (B,), ``forces`` (N,3) and, in conservative mode,
``stress`` (B,3,3).

Direct-force models export with ``torch.onnx.export(dynamo=True)``. For
gradient and conservative forces the backward pass is captured into the
graph first: the model is called through ``torch.func.functional_call`` with
its weights as explicit inputs, traced with ``make_fx`` (symbolic shapes,
core ATen decompositions, autograd included), and the traced graph is
exported with the weights held as buffers (see export-pitfalls.md).
"""

import copy
import warnings
from typing import Any, Dict, List, Tuple

import onnx
import torch
import torch.fx.experimental._config
from torch import Tensor, nn

from ocpdeploy.runtime.keys import ATOMIC_NUMBERS, BATCH, CELL, ENERGY, FORCES, FORCES_CONSERVATIVE, FORCES_DIRECT, POSITIONS, STRESS
from ocpdeploy.runtime.metadata import to_onnx_props

from .deployed import PhysicalModel

ONNX_SUFFIX = ".onnx"
ONNX_OPSET = 20
STRUCTURE_INPUTS = [POSITIONS, CELL, ATOMIC_NUMBERS, BATCH]


class _FlatInputs(nn.Module):
    """Positional-tensor entry point around a PhysicalModel (direct forces)."""

    def __init__(self, physical: PhysicalModel, graph_names: List[str], output_names: List[str]) -> None:
        super().__init__()
        self.physical = physical
        self.graph_names = graph_names
        self.output_names = output_names

    def forward(self, positions: Tensor, cell: Tensor, atomic_numbers: Tensor, batch: Tensor, *graph_tensors: Tensor):
        outputs = self.physical(positions, cell, atomic_numbers, batch, dict(zip(self.graph_names, graph_tensors)))
        return tuple(outputs[name] for name in self.output_names)


class _TracedWithWeights(nn.Module):
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


def _capture_backward(physical: PhysicalModel, graph_names: List[str], output_names: List[str], example: Tuple[Tensor, ...]) -> nn.Module:
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
    return _TracedWithWeights(traced, [state[n] for n in names])


def _dynamic_shapes(graph_names: List[str], example: Tuple[Tensor, ...]) -> Tuple[Dict[int, Any], ...]:
    atoms = torch.export.Dim("atoms")
    structures = torch.export.Dim("structures")
    shapes: List[Dict[int, Any]] = [{0: atoms}, {0: structures}, {0: atoms}, {0: atoms}]
    for name, tensor in zip(graph_names, example[len(STRUCTURE_INPUTS) :]):
        # Every graph tensor has one variable dimension: the last for (2, E)
        # index pairs, the first otherwise.
        dim = 1 if (tensor.dim() == 2 and tensor.shape[0] == 2 and not tensor.is_floating_point()) else 0
        shapes.append({dim: torch.export.Dim(f"{name}_count")})
    return tuple(shapes)


def write_onnx(
    physical: PhysicalModel, graph_names: List[str], example: Tuple[Tensor, ...], metadata: Dict[str, Any], path: str
) -> str:
    """Export ``physical`` on the example inputs (structure inputs + graph tensors) to ``path``."""
    if not path.endswith(ONNX_SUFFIX):
        raise ValueError(f"ONNX artifacts end in '{ONNX_SUFFIX}', got '{path}'")
    output_names = [ENERGY, FORCES] + ([STRESS] if physical.forces_mode == FORCES_CONSERVATIVE else [])
    if physical.forces_mode == FORCES_DIRECT:
        module: nn.Module = _FlatInputs(physical, graph_names, output_names)
    else:
        module = _capture_backward(physical, graph_names, output_names, example)
    shapes = _dynamic_shapes(graph_names, example)
    # torch.export matches dynamic_shapes to the signature: varargs are one nested entry.
    if physical.forces_mode == FORCES_DIRECT:
        dynamic_shapes: Tuple[Any, ...] = shapes[: len(STRUCTURE_INPUTS)] + (shapes[len(STRUCTURE_INPUTS) :],)
    else:
        dynamic_shapes = (shapes,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            path,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=STRUCTURE_INPUTS + graph_names,
            output_names=output_names,
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    model = onnx.load(path)
    del model.metadata_props[:]
    for key, value in to_onnx_props(metadata).items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value
    onnx.save(model, path)
    return path
