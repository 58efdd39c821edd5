"""The size-contract checks refuse exported programs and ONNX graphs that lost a dynamic size."""

import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from ocpdeploy.exporter.capture import dynamic_shapes, example_inputs, example_sizes
from ocpdeploy.exporter.shape_check import ShapeContractError, check_onnx_shapes, check_program_shapes
from ocpdeploy.runtime.contract import ContractInput, model_contract, named_sizes

CONTRACT = [ContractInput("x", ("atoms", 3)), ContractInput("y", ("edges",))]


class Sums(nn.Module):
    def forward(self, x, y):
        return x.sum() + y.sum()


class Adds(nn.Module):
    """Needs x's rows and y's length to be equal: a relation the contract does not declare."""

    def forward(self, x, y):
        return x[:, 0] + y


def _export(module, sizes, shapes):
    example = (torch.ones(sizes[0], 3), torch.ones(sizes[1]))
    return torch.export.export(module, example, dynamic_shapes=shapes)


def test_a_program_that_keeps_the_contract_passes():
    check_program_shapes(_export(Sums(), (13, 17), dynamic_shapes(CONTRACT)), CONTRACT, "toy")


def test_a_specialised_dimension_is_refused():
    program = _export(Sums(), (13, 17), ({0: torch.export.Dim("atoms", min=0)}, None))
    with pytest.raises(ShapeContractError, match=r"toy: input 'y' dimension 0 \('edges'\) was specialised to the constant 17"):
        check_program_shapes(program, CONTRACT, "toy")


def test_two_sizes_merged_by_equal_example_values_are_refused():
    program = _export(Adds(), (13, 13), ({0: torch.export.Dim.AUTO}, {0: torch.export.Dim.AUTO}))
    with pytest.raises(ShapeContractError, match=r"input 'y' dimension 0 \('edges'\) was merged with 'atoms'"):
        check_program_shapes(program, CONTRACT, "toy")


def test_a_size_narrowed_away_from_zero_is_refused():
    shapes = ({0: torch.export.Dim("atoms", min=2)}, {0: torch.export.Dim("edges", min=0)})
    with pytest.raises(ShapeContractError, match=r"input 'x' dimension 0 \('atoms'\) was narrowed to sizes >= 2"):
        check_program_shapes(_export(Sums(), (13, 17), shapes), CONTRACT, "toy")


def _onnx(x_dims, y_dims):
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"]), helper.make_node("Identity", ["y"], ["out"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims), helper.make_tensor_value_info("y", TensorProto.FLOAT, y_dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, y_dims)],
    )
    return helper.make_model(graph)


def test_onnx_dimension_names_follow_the_contract():
    check_onnx_shapes(_onnx(["atoms", 3], ["edges"]), CONTRACT, [("out", ("edges",))], "toy.onnx")


@pytest.mark.parametrize(
    "x_dims, y_dims, message",
    [
        ([13, 3], ["edges"], r"ONNX value 'x' dimension 0 \('atoms'\) is fixed to 13 in the graph"),
        (["n", 3], ["n"], r"ONNX value 'y' dimension 0 \('edges'\) shares the dimension name 'n' with 'atoms'"),
        (["atoms", 4], ["edges"], r"ONNX value 'x' dimension 1 should be 3, the graph has 4"),
    ],
)
def test_onnx_graphs_that_lost_a_size_are_refused(x_dims, y_dims, message):
    with pytest.raises(ShapeContractError, match=message):
        check_onnx_shapes(_onnx(x_dims, y_dims), CONTRACT, [("out", ("edges",))], "toy.onnx")


@pytest.mark.parametrize("model_kind, names", [("painn", ["edge_index", "cell_offsets", "edge_slot", "edge_kmax"])])
def test_example_sizes_are_distinct_and_at_least_two(model_kind, names):
    contract = model_contract(model_kind, names)
    sizes = example_sizes(contract)
    assert sorted(sizes) == sorted(named_sizes(contract))
    assert len(set(sizes.values())) == len(sizes) and min(sizes.values()) >= 2
    example = example_inputs(contract, torch.float32, 10, torch.device("cpu"))
    for entry, tensor in zip(contract, example):
        expected = tuple(sizes[s] if isinstance(s, str) else s for s in entry.shape)
        assert tuple(tensor.shape) == expected, entry.name
        if entry.indexes is not None:
            assert 0 <= int(tensor.min()) and int(tensor.max()) < sizes[entry.indexes], entry.name


def test_every_gemnet_oc_input_is_declared():
    from ocpdeploy.runtime.graph_gemnet_oc import GemNetOCGraph

    graph = GemNetOCGraph(quad_interaction=True, atom_edge_interaction=True, edge_atom_interaction=True, atom_interaction=True)
    contract = model_contract("gemnet_oc", list(graph.input_names))
    assert [entry.name for entry in contract][4:] == list(graph.input_names)
    with pytest.raises(ValueError, match="graph inputs unknown_index of gemnet_oc have no declared shape"):
        model_contract("gemnet_oc", ["unknown_index"])
