"""Race-free aggregation in exported ONNX graphs (exporter/onnx_scatter.py).

ONNX Runtime's CPU ScatterND with add reduction races with more than one
intra-op thread on unsorted indices; the exporter rewrites every accumulating
ScatterND to ScatterElements. Checked against torch's own index_add_ with
many unsorted, colliding indices, on 2 threads, bit-identical run to run.
"""

import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from ocpdeploy.exporter.onnx_scatter import count_racing_scatters, make_scatter_race_free

NUM_TARGETS = 64
NUM_UPDATES = 200_000
CHANNELS = 16


class _Aggregate(nn.Module):
    """sum over edges into targets: (E, C) values, (E,) target -> (N, C)."""

    def forward(self, values: torch.Tensor, target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(like.shape[0], values.shape[1], dtype=values.dtype)
        return out.index_add(0, target, values)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(NUM_UPDATES, CHANNELS)).astype(np.float32)
    target = rng.integers(0, NUM_TARGETS, size=NUM_UPDATES).astype(np.int64)  # unsorted, many collisions
    like = np.zeros((NUM_TARGETS, 3), dtype=np.float32)
    return values, target, like


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    values, target, like = _inputs()
    path = tmp_path_factory.mktemp("scatter") / "aggregate.onnx"
    with warnings.catch_warnings():  # the exporter's own deprecation chatter
        warnings.simplefilter("ignore")
        _export(values, target, like, path)
    return onnx.load(str(path))


def _export(values, target, like, path):
    edges, nodes = torch.export.Dim("edges"), torch.export.Dim("nodes")
    torch.onnx.export(
        _Aggregate().eval(),
        (torch.from_numpy(values[:100]), torch.from_numpy(target[:100] % 10), torch.from_numpy(like[:10])),
        str(path),
        dynamo=True,
        dynamic_shapes=({0: edges}, {0: edges}, {0: nodes}),
        input_names=["values", "target", "like"],
    )


def _session(model, threads):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_exporter_emits_accumulating_scatternd(exported):
    """The premise: the dynamo exporter lowers index_add to ScatterND(add)."""
    assert count_racing_scatters(exported) >= 1


def test_rewritten_graph_is_exact_and_bit_identical_with_two_threads(exported):
    model = onnx.ModelProto()
    model.CopyFrom(exported)
    assert make_scatter_race_free(model) >= 1
    assert count_racing_scatters(model) == 0
    onnx.checker.check_model(model)
    values, target, like = _inputs(1)
    expected = torch.zeros(NUM_TARGETS, CHANNELS, dtype=torch.float64).index_add_(0, torch.from_numpy(target), torch.from_numpy(values).double())
    session = _session(model, threads=2)
    feeds = {"values": values, "target": target, "like": like}
    first = session.run(None, feeds)[0]
    np.testing.assert_allclose(first, expected.numpy(), rtol=0, atol=1e-3)
    for _ in range(5):
        assert np.array_equal(session.run(None, feeds)[0], first)


def test_unsupported_scatter_is_refused():
    """A ScatterND(add) addressing two leading dimensions cannot be rewritten: refused, never shipped."""
    data = onnx.helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT, [4, 4])
    indices = onnx.helper.make_tensor_value_info("indices", onnx.TensorProto.INT64, [5, 2])
    updates = onnx.helper.make_tensor_value_info("updates", onnx.TensorProto.FLOAT, [5])
    out = onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [4, 4])
    node = onnx.helper.make_node("ScatterND", ["data", "indices", "updates"], ["out"], name="scatter", reduction="add")
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", [data, indices, updates], [out]))
    with pytest.raises(ValueError, match="cannot make ONNX node 'scatter' race-free"):
        make_scatter_race_free(model)
