"""Every model family x forces mode x format x dtype exports, passes its own verification and agrees with TorchScript.

Families: PaiNN and GemNet-OC, each with a direct-force and a gradient-force
checkpoint (``painn_tiny_grad`` is written by the tests: PaiNN without a
force head). Forces modes: the checkpoint's own and ``conservative``.
Formats: TorchScript, ONNX, AOTInductor; dtypes float32 and float64.

The whole product is 48 exports, about 40 minutes on 2 cores (AOTInductor
compiles for 1-2 minutes each); ``OCPDEPLOY_FULL_EXPORT_MATRIX=1`` runs all
of it. By default the suite runs ``CI_CELLS``: every family, forces mode,
format and dtype appears, every format with both forces modes, and most
cells are exports other tests make anyway (shared through the session's
``export_artifact`` cache).
"""

import itertools
import os

import pytest

from generated_structures import generated_structures
from ocpdeploy.exporter.probe import probe_suite
from ocpdeploy.exporter.write_aoti import compiler_available
from ocpdeploy.runtime import load_model
from test_differential import FULL_MATRIX_VARIABLE, assert_agree, reference_results

CHECKPOINTS = ("painn_tiny", "painn_tiny_grad", "gemnet_oc_tiny", "gemnet_oc_tiny_grad")
FORCES = (None, "conservative")  # None: the checkpoint's own mode
FORMATS = ("torchscript", "onnx", "aoti")
DTYPES = ("float32", "float64")
CI_CELLS = [
    ("painn_tiny", None, "onnx", "float32"),
    ("painn_tiny", None, "aoti", "float32"),
    ("painn_tiny", None, "onnx", "float64"),
    ("painn_tiny", "conservative", "onnx", "float64"),
    ("painn_tiny", "conservative", "aoti", "float64"),
    ("painn_tiny_grad", None, "torchscript", "float32"),
    ("painn_tiny_grad", None, "onnx", "float32"),
    ("painn_tiny_grad", "conservative", "onnx", "float32"),
    ("gemnet_oc_tiny", None, "onnx", "float32"),
    ("gemnet_oc_tiny", "conservative", "torchscript", "float32"),
    ("gemnet_oc_tiny", None, "aoti", "float32"),
    ("gemnet_oc_tiny", None, "onnx", "float64"),
    ("gemnet_oc_tiny_grad", None, "onnx", "float32"),
    ("gemnet_oc_tiny_grad", "conservative", "onnx", "float32"),
]
SEED = 23
GENERATED_COUNT = 12


def _cells():
    if os.environ.get(FULL_MATRIX_VARIABLE) == "1":
        return list(itertools.product(CHECKPOINTS, FORCES, FORMATS, DTYPES))
    return CI_CELLS


def _label(cell):
    checkpoint, forces, format, dtype = cell
    return f"{checkpoint}-{forces or 'own'}-{format}-{dtype}"


@pytest.mark.parametrize("cell", _cells(), ids=_label)
def test_export_verifies_and_agrees_with_torchscript(export_artifact, cell):
    checkpoint, forces, format, dtype = cell
    if format == "aoti" and not compiler_available():
        pytest.skip("AOTInductor needs a C++ compiler (g++/clang++)")
    # export_artifact runs export_checkpoint, which verifies on the probe suite and raises otherwise.
    model = load_model(export_artifact(checkpoint, format, forces=forces, dtype=dtype))
    assert model.metadata["dtype"] == dtype
    assert model.metadata["forces"] == (forces or ("direct" if checkpoint in ("painn_tiny", "gemnet_oc_tiny") else "gradient"))
    if format == "torchscript":
        return
    structures = probe_suite() + generated_structures(SEED, GENERATED_COUNT, int(model.metadata["max_atomic_number"]))
    # The TorchScript results are computed once per session (cells of two formats share them).
    expected = reference_results(export_artifact(checkpoint, "torchscript", forces=forces, dtype=dtype), structures)
    for (name, atoms), reference in zip(structures, expected):
        assert_agree(model.predict(atoms), reference, dtype, f"{_label(cell)} {name}")


def test_the_ci_cells_cover_every_axis():
    for axis, values in enumerate((CHECKPOINTS, FORCES, FORMATS[1:], DTYPES)):
        assert {cell[axis] for cell in CI_CELLS} >= set(values), values
    for format in FORMATS[1:]:
        assert {cell[1] for cell in CI_CELLS if cell[2] == format} == set(FORCES), format
    for checkpoint in CHECKPOINTS:
        assert {cell[1] for cell in CI_CELLS if cell[0] == checkpoint} == set(FORCES), checkpoint
