"""The graph construction of a self-contained program on its own, as an ONNX model or an AOTInductor package.

ONNX and AOTInductor artifacts build their neighbour graph inside the
program (``program.py``), out of reach of a timer. To price that part with
the same engine, ``GraphProgram`` wraps the artifact's graph module
(``runtime.graphs.build_graph(metadata["model_kind"], metadata["graph"])``)
in a program with the artifact's inputs (``PROGRAM_CONTRACT``: positions,
atomic_numbers, cell, pbc, tags, natoms; ``atomic_numbers`` is not read)
whose outputs are the graph tensors, as a tuple in ``graph.input_names``
order. It is exported the way the artifacts are:

* ONNX (``write_graph_onnx``): ``torch.export.export``, then
  ``torch.onnx.export`` of the exported program with the artifact
  exporter's translations and constant folding (``write_onnx._export``),
  then the same graph rewrites (identity transposes dropped, accumulating
  scatters made race-free, guards for empty tensors, unread values
  dropped), so ONNX Runtime runs the graph nodes an artifact runs.
* AOTInductor (``write_graph_aoti``): ``write_aoti.write_aoti`` itself, so
  the compiler settings (``INDUCTOR_CONFIGS``) and the deterministic
  compile are the artifact's.

Benchmarks (``benchmarks/compare.py``, ``export-model bench``) run these
next to the artifact; nothing here is part of an artifact.
"""

from typing import Any, Dict, List, Tuple

import onnx
import torch
from torch import Tensor, nn

from ocpdeploy.runtime.contract import PROGRAM_CONTRACT
from ocpdeploy.runtime.graphs import build_graph

from .onnx_empty import make_safe_for_empty_tensors
from .onnx_identity import drop_identity_transposes
from .onnx_scatter import make_scatter_race_free
from .onnx_unused import drop_unused_values
from .program import program_dynamic_shapes, program_example
from .write_aoti import write_aoti
from .write_onnx import ONNX_SUFFIX, _export

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# The example's atomic numbers are not read by the graph; any valid range does.
EXAMPLE_MAX_ATOMIC_NUMBER = 8


class GraphProgram(nn.Module):
    """Structures in (``PROGRAM_CONTRACT``), the graph module's tensors out (a tuple in ``input_names`` order)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph_builder = graph  # the name StructureProgram gives it
        self.output_names: List[str] = list(graph.input_names)

    def forward(
        self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, tags: Tensor, natoms: Tensor
    ) -> Tuple[Tensor, ...]:
        graph = self.graph_builder(positions, cell, pbc, natoms, tags)
        return tuple(graph[name] for name in self.output_names)


def graph_program(metadata: Dict[str, Any]) -> Tuple[GraphProgram, Tuple[Tensor, ...], Tuple[Dict[int, Any], ...]]:
    """(program, example, dynamic_shapes) of the graph of an artifact described by ``metadata`` (CPU)."""
    program = GraphProgram(build_graph(metadata["model_kind"], metadata["graph"])).eval()
    example = program_example(DTYPES[metadata["dtype"]], EXAMPLE_MAX_ATOMIC_NUMBER, torch.device("cpu"))
    return program, example, program_dynamic_shapes()


def write_graph_onnx(metadata: Dict[str, Any], path: str) -> List[str]:
    """The graph-only program of ``metadata``'s artifact as ONNX at ``path``; returns its output names."""
    if not path.endswith(ONNX_SUFFIX):
        raise ValueError(f"ONNX models end in '{ONNX_SUFFIX}', got '{path}'")
    program, example, dynamic_shapes = graph_program(metadata)
    _export(program, example, dynamic_shapes, PROGRAM_CONTRACT, program.output_names, path)
    model = onnx.load(path)
    drop_identity_transposes(model)
    make_scatter_race_free(model)
    make_safe_for_empty_tensors(model)
    drop_unused_values(model)
    onnx.save(model, path)
    return program.output_names


def write_graph_aoti(metadata: Dict[str, Any], path: str) -> List[str]:
    """The graph-only program of ``metadata``'s artifact as a CPU AOTInductor package at ``path``; returns its output names."""
    program, example, dynamic_shapes = graph_program(metadata)
    write_aoti(program, example, dynamic_shapes, PROGRAM_CONTRACT, {}, path)
    return program.output_names

