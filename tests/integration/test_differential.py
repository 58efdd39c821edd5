"""ONNX and AOTInductor artifacts agree with the TorchScript artifact of the same checkpoint, structure by structure.

The TorchScript artifacts are checked against fairchem-core 1.10.0 itself
(``test_artifacts.py``, ``test_generated_reference.py``); here the other two
formats are compared with them on seeded random structures that cover every
code path (``generated_structures.py``: random boxes, 1- and 2-atom
triclinic cells, slabs, molecules, lone atoms, fragments; pbc TTT / TTF /
FFF; tags 0 / 1 / 2 / mixed), one at a time and in mixed batches of
``BATCH_SIZE``. An export that specialised to its example, or breaks on an
empty index set, fails here. Each family is exported once per session
(``export_artifact`` caches), shared with the other integration tests; the
TorchScript results each family's artifacts are compared with are computed
once per session (``reference_results``), structure by structure, and serve
both tests and both formats.
"""

import hashlib
import os
from typing import Dict, List, Tuple

import numpy as np
import pytest

from generated_structures import generated_structures
from ocpdeploy.exporter.write_aoti import compiler_available
from ocpdeploy.runtime import load_model

# family: (checkpoint, forces mode (None: the checkpoint's own), dtype)
FAMILIES: Dict[str, Tuple[str, object, str]] = {
    "painn": ("painn_tiny", None, "float32"),
    "gemnet_oc_all_interactions": ("gemnet_oc_tiny", None, "float32"),
    "gemnet_oc_gradient": ("gemnet_oc_tiny_grad", None, "float32"),
    "painn_conservative": ("painn_tiny", "conservative", "float64"),
    "gemnet_oc_conservative": ("gemnet_oc_tiny_grad", "conservative", "float32"),
}
FORMATS = ("onnx", "aoti")
# AOTInductor compiles for 1-2 minutes per family on 2 cores: by default the
# suite compiles the families below (direct forces of both models, and the
# captured backward through conservative PaiNN); OCPDEPLOY_FULL_EXPORT_MATRIX=1
# compiles every family.
AOTI_FAMILIES = ("painn", "gemnet_oc_all_interactions", "painn_conservative")
FULL_MATRIX_VARIABLE = "OCPDEPLOY_FULL_EXPORT_MATRIX"
SEED = 17
STRUCTURE_COUNT = 30
BATCH_SIZE = 4
# (relative to |E| / max|F| / max|stress| of the TorchScript result, absolute)
# per dtype. float32: two float32 programs that sum in different orders, on
# random-weight models (poorly conditioned: ~1e-4 eV per rounding).
ENERGY_BOUNDS = {"float32": (2.0e-5, 2.0e-3), "float64": (1.0e-9, 1.0e-9)}
FORCES_BOUNDS = {"float32": (2.0e-4, 2.0e-3), "float64": (1.0e-8, 1.0e-9)}
STRESS_BOUNDS = {"float32": (1.0e-3, 1.0e-5), "float64": (1.0e-8, 1.0e-10)}


def _cases():
    full = os.environ.get(FULL_MATRIX_VARIABLE) == "1"
    return [(f, fmt) for f in FAMILIES for fmt in FORMATS if fmt != "aoti" or full or f in AOTI_FAMILIES]


def _artifact(export_artifact, family: str, format: str):
    checkpoint, forces, dtype = FAMILIES[family]
    if format == "aoti" and not compiler_available():
        pytest.skip("AOTInductor needs a C++ compiler (g++/clang++)")
    return load_model(export_artifact(checkpoint, format, forces=forces, dtype=dtype))


def _structures(model) -> List:
    return generated_structures(SEED, STRUCTURE_COUNT, int(model.metadata["max_atomic_number"]))


# (TorchScript artifact path, structures' fingerprint) -> [result per structure]
_REFERENCE_RESULTS: Dict[Tuple[str, str], List[Dict]] = {}


def _fingerprint(structures: List) -> str:
    digest = hashlib.sha256()
    for name, atoms in structures:
        digest.update(name.encode())
        for array in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, atoms.get_tags()):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def reference_results(reference_path: str, structures: List) -> List[Dict]:
    """The TorchScript artifact's ``predict`` on each of ``structures`` (named pairs), once per session per artifact and structures."""
    key = (reference_path, _fingerprint(structures))
    if key not in _REFERENCE_RESULTS:
        reference = load_model(reference_path)
        _REFERENCE_RESULTS[key] = [reference.predict(atoms) for _, atoms in structures]
    return _REFERENCE_RESULTS[key]


def _reference_path(export_artifact, family: str) -> str:
    checkpoint, forces, dtype = FAMILIES[family]
    return export_artifact(checkpoint, "torchscript", forces=forces, dtype=dtype)


# Largest differences seen per (family or matrix cell, format): written as
# JSON to the path in OCPDEPLOY_DIFFERENTIAL_REPORT at the end of the module.
REPORT_VARIABLE = "OCPDEPLOY_DIFFERENTIAL_REPORT"
WORST: Dict[str, Dict[str, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get(REPORT_VARIABLE)
    if path:
        import json

        with open(path, "w") as handle:
            json.dump(WORST, handle, indent=1, sort_keys=True)


def _record(what: str, energy_error: float, forces_error: float) -> None:
    key = " ".join(what.split()[:2])
    worst = WORST.setdefault(key, {"energy": 0.0, "forces": 0.0, "structures": 0})
    worst["energy"] = max(worst["energy"], energy_error)
    worst["forces"] = max(worst["forces"], forces_error)
    worst["structures"] += 1


def assert_agree(got: Dict, expected: Dict, dtype: str, what: str) -> Tuple[float, float]:
    """Energy, forces and (when both have it) stress within the bounds of ``dtype``; returns (|dE|, max|dF|)."""
    relative, absolute = ENERGY_BOUNDS[dtype]
    energy_error = abs(got["energy"] - expected["energy"])
    assert energy_error <= relative * abs(expected["energy"]) + absolute, f"{what}: |dE| {energy_error:.3g} eV"
    relative, absolute = FORCES_BOUNDS[dtype]
    forces_error = float(np.abs(got["forces"] - expected["forces"]).max(initial=0.0))
    bound = relative * float(np.abs(expected["forces"]).max(initial=0.0)) + absolute
    assert forces_error <= bound, f"{what}: max|dF| {forces_error:.3g} eV/A > {bound:.3g}"
    assert ("stress" in got) == ("stress" in expected), f"{what}: stress present in one format only"
    if "stress" in expected:
        relative, absolute = STRESS_BOUNDS[dtype]
        stress_error = float(np.abs(got["stress"] - expected["stress"]).max())
        bound = relative * float(np.abs(expected["stress"]).max()) + absolute
        assert stress_error <= bound, f"{what}: max|dstress| {stress_error:.3g} eV/A^3 > {bound:.3g}"
    _record(what, energy_error, forces_error)
    return energy_error, forces_error


@pytest.mark.parametrize("family, format", _cases())
def test_agrees_with_torchscript_one_by_one(export_artifact, family, format):
    dtype = FAMILIES[family][2]
    model = _artifact(export_artifact, family, format)
    structures = _structures(model)
    expected = reference_results(_reference_path(export_artifact, family), structures)
    for (name, atoms), reference in zip(structures, expected):
        assert_agree(model.predict(atoms), reference, dtype, f"{family} {format} {name}")


@pytest.mark.parametrize("family, format", _cases())
def test_agrees_with_torchscript_in_mixed_batches(export_artifact, family, format):
    dtype = FAMILIES[family][2]
    model = _artifact(export_artifact, family, format)
    structures = _structures(model)
    expected = reference_results(_reference_path(export_artifact, family), structures)
    # Interleave the classes differently from generation order, so that each
    # batch mixes periodic and isolated structures of different sizes.
    order = np.random.default_rng(SEED).permutation(len(structures))
    atoms_list = [structures[i][1] for i in order]
    results = model.predict_many(atoms_list, batch_size=BATCH_SIZE)
    for index, got in zip(order, results):
        assert_agree(got, expected[index], dtype, f"{family} {format} batched {structures[index][0]}")
