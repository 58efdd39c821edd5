"""Identity Transposes removed from exported ONNX graphs (exporter/onnx_identity.py).

Checked on a hand-built graph against numpy: the identity ``perm`` nodes go
(also chained ones and ones feeding several consumers), a real transpose and
one that is a graph output stay, and ONNX Runtime computes the same outputs
before and after.
"""

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

from ocpdeploy.exporter.onnx_identity import drop_identity_transposes

ROWS, COLUMNS = 5, 4


def _model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Transpose", ["x"], ["t0"], perm=[0, 1]),  # identity
        helper.make_node("Transpose", ["t0"], ["t1"], perm=[0, 1]),  # identity of an identity
        helper.make_node("Relu", ["t1"], ["r"]),
        helper.make_node("Add", ["t0", "r"], ["sum"]),  # a second consumer of t0
        helper.make_node("Transpose", ["sum"], ["swapped"], perm=[1, 0]),  # real transpose: kept
        helper.make_node("Transpose", ["sum"], ["kept_output"], perm=[0, 1]),  # graph output: kept
    ]
    graph = helper.make_graph(
        nodes,
        "identity_transposes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, COLUMNS])],
        [
            helper.make_tensor_value_info("swapped", TensorProto.FLOAT, [COLUMNS, ROWS]),
            helper.make_tensor_value_info("kept_output", TensorProto.FLOAT, [ROWS, COLUMNS]),
        ],
    )
    # IR version 10: what ONNX Runtime 1.2x-1.3x reads (onnx 1.19+ would stamp a newer one)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def _run(model: onnx.ModelProto, x: np.ndarray):
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_identity_transposes_are_removed_and_outputs_unchanged():
    x = np.random.default_rng(0).normal(size=(ROWS, COLUMNS)).astype(np.float32)
    model = _model()
    removed = drop_identity_transposes(model)
    onnx.checker.check_model(model)
    assert removed == 2
    transposes = [node for node in model.graph.node if node.op_type == "Transpose"]
    assert sorted(node.output[0] for node in transposes) == ["kept_output", "swapped"]
    expected = x + np.maximum(x, 0)
    swapped, kept = _run(model, x)
    np.testing.assert_array_equal(swapped, expected.T)
    np.testing.assert_array_equal(kept, expected)


def test_graph_without_identity_transposes_is_untouched():
    model = _model()
    drop_identity_transposes(model)
    before = model.SerializeToString()
    assert drop_identity_transposes(model) == 0
    assert model.SerializeToString() == before
