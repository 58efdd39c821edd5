"""Make every accumulating scatter of an exported ONNX graph race-free.

The dynamo exporter lowers ``index_add_`` / ``index_put_(accumulate=True)``
(and the backward of indexing, inside make_fx-captured graphs) to
``ScatterND(data, indices, updates, reduction="add")`` with ``indices`` of
shape (..., 1). ONNX Runtime's CPU kernel splits the updates over intra-op
threads and adds into ``data`` without ordering: with more than one thread,
unsorted indices give wrong sums and sorted ones differ run to run in the
last bits (export-pitfalls.md; ``tests/unit/test_onnx_scatter.py`` measures
it). ``ScatterElements(reduction="add")`` runs its updates in index order on
one thread: same sums, same bits on every run.

``make_scatter_race_free(model)`` rewrites, in place, each
``ScatterND(data[D0, D1..Dk], indices[M0..Mj, 1], updates[M0..Mj, D1..Dk])``
with reduction ``add`` into::

    flat_updates = Reshape(updates, [-1, D1..Dk])          # (M, D1..Dk)
    flat_indices = Reshape(indices, [-1, 1, .., 1])        # (M, 1..1)
    expanded     = Expand(flat_indices, Shape(flat_updates))
    out          = ScatterElements(data, expanded, flat_updates, axis=0, reduction="add")

Any other accumulating ScatterND (indices addressing more than one leading
dimension, or a rank the shape inference cannot give) makes the export fail
with ``ValueError`` rather than ship a graph that races.
"""

from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

SCATTER_ND = "ScatterND"
SCATTER_ELEMENTS = "ScatterElements"
REDUCTION = "reduction"
NO_REDUCTION = "none"
# Only reductions whose result could depend on the order of concurrent updates
# are rewritten; "none" with unique indices (what index_put without
# accumulate produces here) has no such race.
ORDER_SENSITIVE_REDUCTIONS = ("add", "mul", "max", "min")


def _shapes(model: onnx.ModelProto) -> Dict[str, List[Optional[int]]]:
    """Name -> dims (None where symbolic) of every tensor whose rank shape inference knows."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes: Dict[str, List[Optional[int]]] = {}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        if info.type.tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
    for initializer in graph.initializer:
        shapes[initializer.name] = list(initializer.dims)
    return shapes


def _reduction(node: onnx.NodeProto) -> str:
    for attribute in node.attribute:
        if attribute.name == REDUCTION:
            return attribute.s.decode()
    return NO_REDUCTION


def make_scatter_race_free(model: onnx.ModelProto) -> int:
    """Rewrite accumulating ScatterND nodes of ``model`` (in place); returns how many."""
    shapes = _shapes(model)
    new_nodes: List[onnx.NodeProto] = []
    initializers: List[onnx.TensorProto] = []
    rewritten = 0
    for node in model.graph.node:
        reduction = _reduction(node)
        if node.op_type != SCATTER_ND or reduction not in ORDER_SENSITIVE_REDUCTIONS:
            new_nodes.append(node)
            continue
        data, indices, updates = node.input
        data_shape = shapes.get(data, shapes.get(node.output[0]))
        indices_shape = shapes.get(indices)
        if data_shape is None or not indices_shape or indices_shape[-1] != 1:
            raise ValueError(
                f"cannot make ONNX node '{node.name}' race-free: ScatterND({reduction}) with indices "
                f"'{indices}' that do not address exactly one leading dimension of known rank"
            )
        prefix = f"{node.output[0]}_race_free"
        trailing_shape = f"{prefix}_trailing_shape"
        minus_one = f"{prefix}_minus_one"
        index_shape = f"{prefix}_index_shape"
        flat_shape = f"{prefix}_flat_shape"
        flat_updates = f"{prefix}_updates"
        flat_indices = f"{prefix}_indices"
        updates_shape = f"{prefix}_updates_shape"
        expanded = f"{prefix}_expanded"
        initializers.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), minus_one))
        initializers.append(numpy_helper.from_array(np.array([-1] + [1] * (len(data_shape) - 1), dtype=np.int64), index_shape))
        new_nodes.extend(
            [
                helper.make_node("Shape", [data], [trailing_shape], start=1),
                helper.make_node("Concat", [minus_one, trailing_shape], [flat_shape], axis=0),
                helper.make_node("Reshape", [updates, flat_shape], [flat_updates]),
                helper.make_node("Reshape", [indices, index_shape], [flat_indices]),
                helper.make_node("Shape", [flat_updates], [updates_shape]),
                helper.make_node("Expand", [flat_indices, updates_shape], [expanded]),
                helper.make_node(
                    SCATTER_ELEMENTS, [data, expanded, flat_updates], list(node.output), name=node.name, axis=0, reduction=reduction
                ),
            ]
        )
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(initializers)
    return rewritten


def count_racing_scatters(model: onnx.ModelProto) -> int:
    """Accumulating ScatterND nodes left in ``model`` (0 after ``make_scatter_race_free``)."""
    return sum(1 for node in model.graph.node if node.op_type == SCATTER_ND and _reduction(node) in ORDER_SENSITIVE_REDUCTIONS)
