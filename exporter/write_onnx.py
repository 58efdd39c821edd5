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

The identity Transposes onnxscript leaves are then removed
(``onnx_identity.py``), and every accumulating scatter is rewritten to
ScatterElements (``onnx_scatter.py``) so ONNX Runtime sums race-free with
any number of intra-op threads; the artifact records it as
``race_free_aggregation``.
"""

import copy
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import onnx
import onnx_ir
import onnxscript
import torch
import torch.fx.experimental._config
from torch import Tensor, nn

from ocpdeploy.runtime.keys import RACE_FREE_KEY, ATOMIC_NUMBERS, BATCH, CELL, ENERGY, FORCES, FORCES_CONSERVATIVE, FORCES_DIRECT, POSITIONS, STRESS
from ocpdeploy.runtime.metadata import to_onnx_props

from .deployed import PhysicalModel
from .onnx_identity import drop_identity_transposes
from .onnx_scatter import count_racing_scatters, make_scatter_race_free

ONNX_SUFFIX = ".onnx"
ONNX_OPSET = 20
STRUCTURE_INPUTS = [POSITIONS, CELL, ATOMIC_NUMBERS, BATCH]


# ONNX element types (TensorProto.DataType) of the dtypes scalar_tensor meets here.
_NUMPY_OF_ONNX_TYPE = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.BOOL: np.bool_,
}


def _scalar_tensor(s: float, dtype: int = onnx.TensorProto.FLOAT, layout: str = "", device: str = "", pin_memory: bool = False):
    """aten.scalar_tensor as an ONNX constant made directly in ``dtype``.

    onnxscript's own translation builds a float32 constant and casts it, so
    float64 graphs got float32-rounded constants (1/6, 1/0.6, ...): about
    1e-6 relative error.
    """
    return _OPSET.Constant(value=onnx_ir.tensor(np.array(s, dtype=_NUMPY_OF_ONNX_TYPE[dtype])))


def _layer_norm_from_primitives(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5):  # type: ignore[no-untyped-def]
    """aten.native_layer_norm from ReduceMean/Sub/Mul/Sqrt (float64 graphs).

    ONNX ``LayerNormalization`` returns its mean and inverse standard
    deviation in float32 (``stash_type``), which the captured backward of a
    float64 model then mixes with float64 tensors; this form keeps every
    output in the input's dtype. Returns (normalized, mean, rstd), the
    statistics with the normalized axes kept as size 1.
    """
    axes = _OPSET.Constant(value=onnx_ir.tensor(np.arange(-len(normalized_shape), 0, dtype=np.int64)))
    mean = _OPSET.ReduceMean(input, axes, keepdims=1)
    centred = _OPSET.Sub(input, mean)
    variance = _OPSET.ReduceMean(_OPSET.Mul(centred, centred), axes, keepdims=1)
    epsilon = _OPSET.CastLike(_OPSET.Constant(value=onnx_ir.tensor(np.array(eps, dtype=np.float64))), input)
    rstd = _OPSET.Reciprocal(_OPSET.Sqrt(_OPSET.Add(variance, epsilon)))
    normalized = _OPSET.Mul(centred, rstd)
    if weight is not None:
        normalized = _OPSET.Mul(normalized, weight)
    if bias is not None:
        normalized = _OPSET.Add(normalized, bias)
    return normalized, mean, rstd


_OPSET = onnxscript.values.Opset("", ONNX_OPSET)
_SCALAR_TENSOR = onnxscript.values.TracedOnnxFunction(_OPSET, _scalar_tensor)
_LAYER_NORM_FLOAT64 = onnxscript.values.TracedOnnxFunction(_OPSET, _layer_norm_from_primitives)


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
    _export(physical, graph_names, example, path)
    model = onnx.load(path)
    drop_identity_transposes(model)
    make_scatter_race_free(model)
    if count_racing_scatters(model):
        raise ValueError(f"{path}: the exported graph still has accumulating ScatterND nodes (not race-free)")
    del model.metadata_props[:]
    for key, value in to_onnx_props({**metadata, RACE_FREE_KEY: True}).items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value
    onnx.save(model, path)
    return path


def _unchunked(physical: PhysicalModel) -> PhysicalModel:
    """A copy whose layers make one pass over all edges: an ONNX graph has no data-dependent loops."""
    physical = copy.deepcopy(physical)
    for module in physical.modules():
        if hasattr(module, "edge_chunk_elements"):
            module.edge_chunk_elements = 0
    return physical


def _export(physical: PhysicalModel, graph_names: List[str], example: Tuple[Tensor, ...], path: str) -> None:
    physical = _unchunked(physical)
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
    with warnings.catch_warnings(), _python_floats_as(example[0].dtype):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            optimize=False,
            dynamic_shapes=dynamic_shapes,
            input_names=STRUCTURE_INPUTS + graph_names,
            output_names=output_names,
            opset_version=ONNX_OPSET,
            verbose=False,
            custom_translation_table=_translations(example[0].dtype),
        )
    _fold_constants(program.model)
    program.save(path)


def _translations(dtype: torch.dtype) -> Dict[Any, Any]:
    """Our ATen -> ONNX translations that replace onnxscript's for this dtype."""
    table: Dict[Any, Any] = {torch.ops.aten.scalar_tensor.default: _SCALAR_TENSOR}
    if dtype == torch.float64:
        table[torch.ops.aten.native_layer_norm.default] = _LAYER_NORM_FLOAT64
    return table


def _fold_constants(model: "onnx_ir.Model") -> None:
    """Constant folding and dead-node removal only.

    Not onnxscript's default optimizer: its no-op rules match constants with
    an absolute tolerance of 1e-8, so ``x + 1e-8`` (PaiNN's norm epsilon)
    became ``x`` and the sqrt gradient at zero blew up (onnxscript 0.7.2,
    ``rewriter/_pattern_ir.py``). ONNX Runtime applies its own graph
    optimisations when it loads the model.
    """
    from onnxscript.optimizer import _constant_folding

    passes = onnx_ir.passes.PassManager(
        [
            _constant_folding.FoldConstantsPass(
                shape_inference=True,
                input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
            ),
            onnx_ir.passes.common.RemoveUnusedNodesPass(),
        ]
    )
    passes(model)


@contextmanager
def _python_floats_as(dtype: torch.dtype) -> Iterator[None]:
    """Make the exporter's Python-float constants ``dtype`` (float64 models).

    The exporter turns a Python float argument whose ONNX type is not yet
    bound (``x + 1e-8``, ``x * (1 / 6)``) into a float32 constant and casts
    it, so a float64 graph carried float32-rounded constants (~1e-8
    relative). This patches the exporter's dtype choice for such constants
    while a float64 model is exported; float32 exports are unchanged.
    """
    from torch.onnx._internal.exporter import _building

    original = _building._determine_input_dtype
    if dtype != torch.float64:
        yield
        return

    def determine(param, arg, type_binding):  # type: ignore[no-untyped-def]
        chosen = original(param, arg, type_binding)
        unbound = param.type_constraint not in type_binding and len(param.type_constraint.allowed_types) != 1
        is_float = isinstance(arg, float) or (isinstance(arg, (tuple, list)) and any(isinstance(v, float) for v in arg))
        if unbound and is_float and chosen == onnx_ir.DataType.FLOAT:
            return onnx_ir.DataType.DOUBLE
        return chosen

    _building._determine_input_dtype = determine
    try:
        yield
    finally:
        _building._determine_input_dtype = original
