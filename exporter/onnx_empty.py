"""Make an exported ONNX graph right on empty tensors.

Empty tensors are ordinary here: a structure without edges, triplets or
quadruplets has zero rows in those tensors, and a group width (``*_kmax``)
of 0 makes the padded aggregations contract over an empty dimension.
ONNX Runtime 1.31 (CPU provider, also in the onnxruntime-gpu wheel) gets
two such cases wrong, and this module rewrites the graph around both; 1.32
computes both right, and the rewritten graph stays right there
(``tests/unit/test_onnx_empty.py`` shows each fault where the installed
ONNX Runtime has it, and checks the rewrite on every release).

Negative reduction axes
-----------------------
ONNX Runtime mishandles reductions over negative axes when the input is
empty: ``ReduceSum(x (0, 3), axes=[-1])`` returns ``x`` unchanged,
shape (0, 3) instead of (0,), and the same holds for every ``Reduce*`` op
and for ``ArgMax`` / ``ArgMin`` with a negative ``axis``
(``tests/unit/test_onnx_empty.py``).
The wrong rank then travels down the graph, and a later node fails (a
``Sub`` that cannot broadcast, a ``ScatterND`` whose updates do not fit, a
``Shape`` whose planned buffer has another length) or, worse, broadcasts to a
wrong result. The exporter writes ``dim=-1`` as PyTorch code does. The
same nodes with the axes counted from the front give the right shapes.

``make_axes_non_negative(model)`` rewrites, in place, each such axis to
``axis + rank`` of the node's input, taken from ONNX shape inference. Axes
held in a shared constant get a fresh initializer per node. A negative axis
whose input rank is unknown, or whose axes are not a constant, makes the
export fail with ``ValueError`` rather than ship a graph that breaks on
empty inputs.

Empty contractions
------------------
``MatMul(a (..., M, 0), b (..., 0, N))`` should be zeros (..., M, N); ONNX
Runtime returns the output buffer without writing it, so the result is
whatever the memory arena held (seen: 1e33 energies, NaN). PyTorch sums
the empty products to zero. ``zero_empty_contractions(model)`` follows
every ``MatMul`` whose contracted size is not a known positive constant
with ``Where(K == 0, 0, product)``: one elementwise pass over the product.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Reductions whose axes are the second input (opset >= 18; ReduceSum since 13).
REDUCE_OPS = (
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)
# Ops with a single ``axis`` attribute that show the same fault.
AXIS_ATTRIBUTE_OPS = ("ArgMax", "ArgMin")
AXIS = "axis"
AXES = "axes"


def _shapes(model: onnx.ModelProto) -> Dict[str, Sequence[onnx.TensorShapeProto.Dimension]]:
    """Dimensions of every value whose shape ONNX shape inference knows."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes: Dict[str, Sequence[onnx.TensorShapeProto.Dimension]] = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = list(tensor_type.shape.dim)
    return shapes


def _ranks(model: onnx.ModelProto, shapes: Dict[str, Sequence[onnx.TensorShapeProto.Dimension]]) -> Dict[str, int]:
    """Rank of every value of ``shapes`` (``_shapes(model)``) and of every initializer."""
    ranks = {name: len(dims) for name, dims in shapes.items()}
    for initializer in model.graph.initializer:
        ranks[initializer.name] = len(initializer.dims)
    return ranks


def _constant_values(graph: onnx.GraphProto) -> Dict[str, np.ndarray]:
    """Values of initializers and ``Constant`` nodes (tensor-valued ones), by output name."""
    values = {initializer.name: numpy_helper.to_array(initializer) for initializer in graph.initializer}
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.t.data_type:
                values[node.output[0]] = numpy_helper.to_array(attribute.t)
            elif attribute.name == "value_ints":
                values[node.output[0]] = np.asarray(list(attribute.ints), dtype=np.int64)
            elif attribute.name == "value_int":
                values[node.output[0]] = np.asarray(attribute.i, dtype=np.int64)
    return values


def _rank_of(node: onnx.NodeProto, ranks: Dict[str, int]) -> int:
    rank: Optional[int] = ranks.get(node.input[0])
    if rank is None:
        raise ValueError(
            f"ONNX node {node.name or node.op_type} reduces over a negative axis of '{node.input[0]}', "
            "whose rank shape inference cannot tell; cannot make it safe for empty inputs"
        )
    return rank


def make_axes_non_negative(model: onnx.ModelProto, shapes: Optional[Dict[str, Sequence[onnx.TensorShapeProto.Dimension]]] = None) -> int:
    """Rewrite negative reduction axes of ``model`` (in place); returns how many nodes changed."""
    graph = model.graph
    ranks = _ranks(model, _shapes(model) if shapes is None else shapes)
    constants = _constant_values(graph)
    added: List[onnx.TensorProto] = []
    changed = 0
    for index, node in enumerate(graph.node):
        if node.op_type in REDUCE_OPS and len(node.input) > 1 and node.input[1]:
            values = constants.get(node.input[1])
            if values is None:
                raise ValueError(
                    f"ONNX node {node.name or node.op_type} takes its axes from a computed tensor "
                    f"'{node.input[1]}'; only constant axes can be checked for the empty-input fault"
                )
            if not (values < 0).any():
                continue
            rank = _rank_of(node, ranks)
            name = f"{node.output[0]}_axes_non_negative"
            added.append(numpy_helper.from_array(np.where(values < 0, values + rank, values).astype(np.int64), name))
            node.input[1] = name
            changed += 1
        elif node.op_type in REDUCE_OPS:
            for attribute in node.attribute:  # pre-opset-18 form: axes as an attribute
                if attribute.name == AXES and any(axis < 0 for axis in attribute.ints):
                    rank = _rank_of(node, ranks)
                    fixed = [axis + rank if axis < 0 else axis for axis in attribute.ints]
                    del attribute.ints[:]
                    attribute.ints.extend(fixed)
                    changed += 1
        elif node.op_type in AXIS_ATTRIBUTE_OPS:
            for attribute in node.attribute:
                if attribute.name == AXIS and attribute.i < 0:
                    attribute.i += _rank_of(node, ranks)
                    changed += 1
    graph.initializer.extend(added)
    return changed


MATMUL = "MatMul"


def _static_size(dims: Sequence[onnx.TensorShapeProto.Dimension], axis: int) -> int:
    """The dimension's fixed size, or 0 when it is symbolic or unknown."""
    if not dims or -axis > len(dims):
        return 0
    dim = dims[axis]
    return dim.dim_value if dim.HasField("dim_value") else 0


def zero_empty_contractions(model: onnx.ModelProto, shapes: Optional[Dict[str, Sequence[onnx.TensorShapeProto.Dimension]]] = None) -> int:
    """Guard every ``MatMul`` whose contracted size may be 0 (in place); returns how many."""
    graph = model.graph
    shapes = _shapes(model) if shapes is None else shapes
    nodes: List[onnx.NodeProto] = []
    zero = numpy_helper.from_array(np.zeros((), dtype=np.int64), "empty_contraction_zero")
    axis = numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "empty_contraction_last_axis")
    guarded = 0
    for node in graph.node:
        if node.op_type != MATMUL or _static_size(shapes.get(node.input[0], []), -1) > 0:
            nodes.append(node)
            continue
        product = f"{node.output[0]}_unguarded"
        result = node.output[0]
        node.output[0] = product
        prefix = f"{result}_empty_contraction"
        nodes.extend(
            [
                node,
                helper.make_node("Shape", [node.input[0]], [f"{prefix}_shape"], start=-1),
                helper.make_node("Squeeze", [f"{prefix}_shape", axis.name], [f"{prefix}_size"]),
                helper.make_node("Equal", [f"{prefix}_size", zero.name], [f"{prefix}_is_empty"]),
                helper.make_node("CastLike", [zero.name, product], [f"{prefix}_zero"]),
                helper.make_node("Where", [f"{prefix}_is_empty", f"{prefix}_zero", product], [result]),
            ]
        )
        guarded += 1
    if guarded:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend([zero, axis])
    return guarded


def make_safe_for_empty_tensors(model: onnx.ModelProto) -> None:
    """Both rewrites of this module, in place; initializers no node reads any more are dropped."""
    # One shape inference serves both: rewriting axes changes no value's shape.
    shapes = _shapes(model)
    make_axes_non_negative(model, shapes)
    zero_empty_contractions(model, shapes)
    _drop_unused_initializers(model.graph)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove initializers no node reads any more (the replaced negative axes)."""
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    kept = [initializer for initializer in graph.initializer if initializer.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


__all__ = ["make_axes_non_negative", "make_safe_for_empty_tensors", "zero_empty_contractions"]
