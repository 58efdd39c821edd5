"""Write an ONNX artifact (``.onnx``): a ``StructureProgram`` with the dynamo exporter.

Inputs are the structures (``PROGRAM_CONTRACT``: positions, atomic_numbers,
cell, pbc, tags, natoms), outputs energy, forces [, stress], named in the
ONNX graph; the program builds the neighbour graph inside, so ONNX Runtime
alone runs it. ``atoms`` and ``structures`` are dynamic; every graph size is
data-dependent inside. Gradient and conservative forces export with their
backward pass captured (``capture.capture_backward``).

The identity Transposes onnxscript leaves are then removed
(``onnx_identity.py``), and every accumulating scatter is rewritten to
ScatterElements (``onnx_scatter.py``) so ONNX Runtime sums race-free with
any number of intra-op threads; the artifact records it as
``race_free_aggregation``. Reductions get non-negative axes
and contractions over a possibly empty dimension a zero guard
(``onnx_empty.py``: ONNX Runtime gets both wrong on empty tensors).
Before anything is written, the exported program and the ONNX graph are
checked against the size contract (``shape_check.py``).
"""

import logging
import os
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import onnx
import onnx_ir
import onnxscript
import torch
from torch import Tensor

from ocpdeploy.runtime.contract import OUTPUT_SHAPES, ContractInput
from ocpdeploy.runtime.keys import RACE_FREE_KEY
from ocpdeploy.runtime import sorting
from ocpdeploy.runtime.metadata import to_onnx_props

from .onnx_empty import make_safe_for_empty_tensors
from .onnx_unused import drop_unused_values
from .onnx_identity import drop_identity_transposes
from .onnx_scatter import count_racing_scatters, make_scatter_race_free
from .shape_check import ShapeContractError, check_onnx_shapes, check_program_shapes

ONNX_SUFFIX = ".onnx"
ONNX_OPSET = 20


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


def write_onnx(
    program: torch.nn.Module,
    example: Tuple[Tensor, ...],
    dynamic_shapes: Tuple[Any, ...],
    contract: List[ContractInput],
    outputs: List[str],
    metadata: Dict[str, Any],
    path: str,
) -> str:
    """Export ``program`` (inputs ``contract``, outputs ``outputs``) on ``example`` to ``path``.

    Raises ``ShapeContractError`` (and writes nothing) when the exported
    program or the ONNX graph does not keep the contract's dynamic sizes.
    """
    if not path.endswith(ONNX_SUFFIX):
        raise ValueError(f"ONNX artifacts end in '{ONNX_SUFFIX}', got '{path}'")
    _export(program, example, dynamic_shapes, contract, outputs, path)
    try:
        model = onnx.load(path)
        drop_identity_transposes(model)
        make_scatter_race_free(model)
        if count_racing_scatters(model):
            raise ValueError(f"{path}: the exported graph still has accumulating ScatterND nodes (not race-free)")
        make_safe_for_empty_tensors(model)
        drop_unused_values(model)
        check_onnx_shapes(model, contract, [(name, OUTPUT_SHAPES[name]) for name in outputs], path)
    except ValueError:
        os.remove(path)
        raise
    del model.metadata_props[:]
    for key, value in to_onnx_props({**metadata, RACE_FREE_KEY: True}).items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value
    onnx.save(model, path)
    return path


def _export(
    program: torch.nn.Module,
    example: Tuple[Tensor, ...],
    dynamic_shapes: Tuple[Any, ...],
    contract: List[ContractInput],
    outputs: List[str],
    path: str,
) -> None:
    dtype = example[0].dtype
    with warnings.catch_warnings(), _python_floats_as(dtype), _without_known_harmless_logs(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            with _group_expansion_by_marks():
                exported = torch.export.export(program, example, dynamic_shapes=dynamic_shapes)
        except Exception as error:  # noqa: BLE001 - torch.export raises many types; one line names the stage
            raise ShapeContractError(f"{path}: torch.export could not capture the program: {_first_line(error)}") from None
        check_program_shapes(exported, contract, path)
        onnx_program = torch.onnx.export(
            exported,
            dynamo=True,
            optimize=False,
            input_names=[entry.name for entry in contract],
            output_names=outputs,
            opset_version=ONNX_OPSET,
            verbose=False,
            custom_translation_table=_translations(dtype),
        )
    _fold_constants(onnx_program.model)
    onnx_program.save(path)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


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


# Log records the exporter emits on every export that say nothing about this
# model: (logger, start of the message). torchvision's operators are not
# used; onnxscript's empty attribute lists default to INTS, which is what
# they are. Every other record still reaches the user.
KNOWN_HARMLESS_LOGS = (
    ("torch.onnx._internal.exporter._registration", "torchvision is not installed"),
    ("onnx_ir._convenience", "Attribute type is ambiguous because it is an empty sequence"),
)


class _DropMessages(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


@contextmanager
def _without_known_harmless_logs() -> Iterator[None]:
    """Drop ``KNOWN_HARMLESS_LOGS`` while exporting; loggers are restored afterwards."""
    installed = [(logging.getLogger(name), _DropMessages(start)) for name, start in KNOWN_HARMLESS_LOGS]
    for logger, dropper in installed:
        logger.addFilter(dropper)
    try:
        yield
    finally:
        for logger, dropper in installed:
            logger.removeFilter(dropper)


@contextmanager
def _group_expansion_by_marks() -> Iterator[None]:
    """Graph construction expands groups without repeat_interleave while captured (``sorting.EXPAND_BY_MARKS``)."""
    sorting.EXPAND_BY_MARKS[0] = True
    try:
        yield
    finally:
        sorting.EXPAND_BY_MARKS[0] = False


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
