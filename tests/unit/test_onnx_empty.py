"""ONNX Runtime's faults on empty tensors, and the rewrites that avoid them (``exporter/onnx_empty.py``).

The faults were found on ONNX Runtime 1.31 (CPU provider; the onnxruntime-gpu
wheel of that release still has them); 1.32 reduces and contracts empty inputs
correctly. Each fault test runs the unrewritten graph on the installed release
and skips, naming the release, when it computes the right answer. The rewrite
tests run on every release: the rewritten graph must be right on empty and
non-empty inputs alike.
"""

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper

from ocpdeploy.exporter.onnx_empty import make_axes_non_negative, make_safe_for_empty_tensors, zero_empty_contractions

OPSET = 20


def _model(nodes, inputs, initializers=()):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    return model


def _run(model, feeds):
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _reduction(op, axes):
    axes_tensor = helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)
    return _model([helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)], [("x", ["n", 3, 4])], [axes_tensor])


def _fault_absent(what):
    pytest.skip(f"ONNX Runtime {onnxruntime.__version__} {what} correctly without the rewrite")


REDUCTIONS = ["ReduceSum", "ReduceL2", "ReduceMax", "ReduceMean"]


@pytest.mark.parametrize("op", REDUCTIONS)
def test_negative_reduction_axes_fault_on_empty_inputs(op):
    shape = _run(_reduction(op, [-1]), {"x": np.zeros((0, 3, 4), np.float32)}).shape
    if shape == (0, 3):
        _fault_absent(f"reduces an empty input over axis -1 with {op}")
    assert shape == (0, 3, 4)  # the fault: nothing reduced


@pytest.mark.parametrize("op", REDUCTIONS)
def test_non_negative_reduction_axes_on_empty_inputs(op):
    empty = np.zeros((0, 3, 4), np.float32)
    model = _reduction(op, [-1])
    assert make_axes_non_negative(model) == 1
    assert _run(model, {"x": empty}).shape == (0, 3)
    full = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    assert _run(model, {"x": full}).shape == (5, 3)


def _argmax_model():
    return _model(
        [helper.make_node("ArgMax", ["x"], ["i"], axis=-1, keepdims=0), helper.make_node("Cast", ["i"], ["y"], to=1)],
        [("x", ["n", 3, 4])],
    )


def test_argmax_negative_axis_fault_on_empty_input():
    shape = _run(_argmax_model(), {"x": np.zeros((0, 3, 4), np.float32)}).shape
    if shape == (0, 3):
        _fault_absent("takes ArgMax of an empty input over axis -1")
    assert shape == (0, 3, 4)


def test_argmax_non_negative_axis_on_empty_input():
    model = _argmax_model()
    assert make_axes_non_negative(model) == 1
    assert _run(model, {"x": np.zeros((0, 3, 4), np.float32)}).shape == (0, 3)
    full = np.random.default_rng(1).normal(size=(5, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(model, {"x": full}), full.argmax(axis=-1).astype(np.float32))


def _empty_contraction_model():
    """y = (a @ b^T)^2 with a (E, 7, K), b (E, 8, K): ONNX Runtime fuses the Transpose into the product."""
    nodes = [
        helper.make_node("Transpose", ["b"], ["b_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["a", "b_t"], ["p"]),
        helper.make_node("Mul", ["p", "p"], ["y"]),
    ]
    return _model(nodes, [("a", ["e", 7, "k"]), ("b", ["e", 8, "k"])])


def _session(model):
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _contract(session, k):
    """One call with contracted size ``k`` (the same session: its arena keeps earlier buffers)."""
    rng = np.random.default_rng(k)
    a = rng.normal(size=(4, 7, k)).astype(np.float32)
    b = rng.normal(size=(4, 8, k)).astype(np.float32)
    return session.run(None, {"a": a, "b": b})[0], (a @ b.transpose(0, 2, 1)) ** 2


def test_empty_contraction_fault_without_the_guard():
    session = _session(_empty_contraction_model())
    _contract(session, 5)
    got, expected = _contract(session, 0)
    assert np.abs(expected).max() == 0.0
    if np.abs(got).max() == 0.0:
        _fault_absent("contracts a fused Transpose+MatMul over an empty dimension")
    assert np.abs(got).max() > 0.0  # the fault: the previous call's product comes back


def test_empty_contraction_is_zero_after_the_rewrite():
    model = _empty_contraction_model()
    assert zero_empty_contractions(model) == 1
    session = _session(model)
    for k in (5, 0, 3, 0):
        got, expected = _contract(session, k)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_matmul_with_a_fixed_contraction_is_left_alone():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], np.ones(6).tolist())
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", ["n", 3])], [weight])
    assert zero_empty_contractions(model) == 0


def test_negative_axes_need_a_known_rank():
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [-1])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(ValueError, match="reduces over a negative axis of 'x', whose rank shape inference cannot tell"):
        make_safe_for_empty_tensors(model)


def test_replaced_axes_constants_are_dropped():
    model = _reduction("ReduceSum", [-1])
    make_safe_for_empty_tensors(model)
    names = [initializer.name for initializer in model.graph.initializer]
    assert "axes" not in names and len(names) == 1
    assert _run(model, {"x": np.ones((2, 3, 4), np.float32)}).shape == (2, 3)
