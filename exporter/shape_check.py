"""Refuse exported programs whose sizes are not the contract's.

``torch.export`` bakes example sizes into a program when the traced code
makes it (a size used as a Python number, a branch on a size), and relates
two sizes that it finds must be equal. Either would make an artifact that is
right on the example and wrong, or failing, on other structures. The
contract (``runtime/contract.py``) says which input dimensions are dynamic
and which of them are the same size; these checks read the exported program
(its input placeholders and range constraints) and the written ONNX graph
(its input and output dimension names) and raise ``ShapeContractError``
with one line naming the input and dimension where they disagree.
"""

from typing import Dict, List, Sequence, Tuple

import onnx
import torch

from ocpdeploy.runtime.contract import ContractInput, Size


class ShapeContractError(ValueError):
    """An exported program or ONNX graph does not keep the declared dynamic sizes."""


def _user_input_values(program: torch.export.ExportedProgram) -> List[object]:
    user_inputs = set(program.graph_signature.user_inputs)
    return [node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder" and node.name in user_inputs]


def check_program_shapes(program: torch.export.ExportedProgram, contract: Sequence[ContractInput], what: str) -> None:
    """Every named size of ``contract`` is its own free symbol in ``program``, ranging from 0 up.

    Raises ``ShapeContractError`` naming the first input dimension that was
    specialised to a constant, merged with a size of another name, or
    narrowed so that 0 is excluded.
    """
    values = _user_input_values(program)
    if len(values) != len(contract):
        raise ShapeContractError(f"{what}: exported program takes {len(values)} inputs, the contract declares {len(contract)}")
    symbol_of: Dict[str, object] = {}
    name_of: Dict[object, Tuple[str, str, int]] = {}
    for entry, value in zip(contract, values):
        shape = tuple(getattr(value, "shape", ()))
        if len(shape) != len(entry.shape):
            raise ShapeContractError(f"{what}: input '{entry.name}' has rank {len(shape)} in the exported program, expected {len(entry.shape)}")
        for axis, (size, declared) in enumerate(zip(shape, entry.shape)):
            _check_dimension(what, entry.name, axis, size, declared, symbol_of, name_of)
    for expression, (declared, input_name, axis) in name_of.items():
        bounds = program.range_constraints.get(expression)
        if bounds is not None and int(bounds.lower) > 0:
            raise ShapeContractError(
                f"{what}: input '{input_name}' dimension {axis} ('{declared}') was narrowed to sizes >= {bounds.lower}; "
                "size 0 must stay allowed"
            )


def _check_dimension(
    what: str,
    input_name: str,
    axis: int,
    size: object,
    declared: Size,
    symbol_of: Dict[str, object],
    name_of: Dict[object, Tuple[str, str, int]],
) -> None:
    where = f"{what}: input '{input_name}' dimension {axis}"
    if isinstance(declared, int):
        if not (isinstance(size, int) and size == declared):
            raise ShapeContractError(f"{where} should be the fixed size {declared}, the exported program has {size}")
        return
    if isinstance(size, int):
        raise ShapeContractError(f"{where} ('{declared}') was specialised to the constant {size}; it must stay dynamic")
    expression = size.node.expr  # type: ignore[attr-defined]
    if not expression.is_symbol:
        raise ShapeContractError(f"{where} ('{declared}') became the expression {expression}; it must be a free size")
    if declared in symbol_of and symbol_of[declared] != expression:
        raise ShapeContractError(f"{where} ('{declared}') is a different size from the other '{declared}' dimensions")
    if expression in name_of and name_of[expression][0] != declared:
        other, other_input, other_axis = name_of[expression]
        raise ShapeContractError(
            f"{where} ('{declared}') was merged with '{other}' (input '{other_input}' dimension {other_axis}); "
            "the contract does not declare them equal"
        )
    symbol_of[declared] = expression
    name_of[expression] = (declared, input_name, axis)


def check_onnx_shapes(
    model: onnx.ModelProto, contract: Sequence[ContractInput], outputs: Sequence[Tuple[str, Tuple[Size, ...]]], what: str
) -> None:
    """ONNX inputs and outputs carry one ``dim_param`` per named size and the declared fixed sizes.

    Named sizes must map one-to-one onto dimension names: a fixed
    ``dim_value`` where the contract names a size, or one ``dim_param``
    for two contract names, is refused.
    """
    param_of: Dict[str, str] = {}
    name_of: Dict[str, str] = {}
    declared_values = [(entry.name, entry.shape) for entry in contract]
    graph_values = {value.name: value for value in list(model.graph.input) + list(model.graph.output)}
    for name, shape in list(declared_values) + list(outputs):
        if name not in graph_values:
            raise ShapeContractError(f"{what}: the ONNX graph has no input or output '{name}'")
        dims = graph_values[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ShapeContractError(f"{what}: ONNX value '{name}' has rank {len(dims)}, expected {len(shape)}")
        for axis, (dim, declared) in enumerate(zip(dims, shape)):
            where = f"{what}: ONNX value '{name}' dimension {axis}"
            if isinstance(declared, int):
                if dim.HasField("dim_value") and dim.dim_value != declared:
                    raise ShapeContractError(f"{where} should be {declared}, the graph has {dim.dim_value}")
                continue
            if not dim.HasField("dim_param"):
                fixed = dim.dim_value if dim.HasField("dim_value") else "unknown"
                raise ShapeContractError(f"{where} ('{declared}') is fixed to {fixed} in the graph; it must stay dynamic")
            param = dim.dim_param
            if param_of.setdefault(declared, param) != param:
                raise ShapeContractError(f"{where} ('{declared}') is named '{param}', other '{declared}' dimensions '{param_of[declared]}'")
            if name_of.setdefault(param, declared) != declared:
                raise ShapeContractError(
                    f"{where} ('{declared}') shares the dimension name '{param}' with '{name_of[param]}'; "
                    "the contract does not declare them equal"
                )
