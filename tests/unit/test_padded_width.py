"""The padded group width inside exported programs: never 1, and one size symbol.

A width that is a sum of data-dependent sizes (K + extra) keeps the compiler
from matching (N*K') with (N, K'), and AOTInductor then copies whole padded
tables before reducing them (PaiNN h512 on 10k atoms went above 20 GB), so
the width must reach the model as a single symbol.
"""

import sympy
import torch
from torch import Tensor, nn

from ocpdeploy.exporter.program import _never_one
from ocpdeploy.runtime.sorting import nonzero_1d


class WidenedWidth(nn.Module):
    """Group width K from a mask's count, widened; returns (K',) zeros and a (N, K') reshape of (N*K',)."""

    def forward(self, members: Tensor, rows: Tensor) -> tuple:
        width = _never_one(torch.zeros_like(nonzero_1d(members)))
        table = torch.zeros(rows.shape[0] * width.shape[0])
        return width, table.reshape(rows.shape[0], width.shape[0]).sum(dim=1)


def test_width_one_becomes_two_and_other_widths_stay():
    module = WidenedWidth()
    rows = torch.zeros(5)
    for count, expected in ((0, 0), (1, 2), (2, 2), (7, 7)):
        members = torch.arange(9) < count
        width, sums = module(members, rows)
        assert width.shape == (expected,) and torch.all(width == 0)
        assert sums.shape == (5,)


def test_width_is_a_single_size_symbol_in_an_exported_program():
    members = torch.tensor([True, False, True, True])
    rows = torch.zeros(5)
    exported = torch.export.export(WidenedWidth(), (members, rows), dynamic_shapes=({0: torch.export.Dim("entries")}, {0: torch.export.Dim("rows")}))
    output = next(node for node in exported.graph.nodes if node.op == "output")
    width_value = output.args[0][0].meta["val"]
    expression = width_value.shape[0].node.expr
    assert isinstance(expression, sympy.Symbol), f"padded width is {expression}, not one size symbol"
    for count in (0, 1, 3, 4):
        members = torch.arange(6) < count
        width, _ = exported.module()(members, torch.zeros(3))
        assert width.shape[0] == (2 if count == 1 else count)
