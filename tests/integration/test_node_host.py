"""examples/node_host: a Node.js program (onnxruntime-node) runs an ONNX
artifact on structures given as JSON and prints energy and forces equal to
the TorchScript artifact's ``forward_batch`` on the same inputs.

Node.js and the locked npm dependencies are installed by
examples/node_host/install.sh when they are missing; the tests skip only when
that installation cannot reach the network or has no way to install Node.js.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import read

from conftest import STRUCTURES

HOST = Path(__file__).resolve().parents[2] / "examples" / "node_host"
PROGRAM = HOST / "run_onnx.mjs"
NODE_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 900

# |dE| <= 1e-5 |E| + 1e-4 eV; max|dF| <= 1e-4 max|F| + 1e-4 eV/A (stress:
# the same form in eV/A^3).
ENERGY_RELATIVE, ENERGY_ABSOLUTE = 1.0e-5, 1.0e-4
FORCES_RELATIVE, FORCES_ABSOLUTE = 1.0e-4, 1.0e-4

# install.sh failures that mean "cannot install here" (no network, no root
# for apt-get, no package manager) rather than a broken install script or
# lock file.
UNAVAILABLE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|network|proxy|"
    r"Temporary failure resolving|Could not resolve|Failed to fetch|Unable to locate package|"
    r"needs root or password-less sudo|there is no apt-get",
    re.IGNORECASE,
)

MODELS = ["painn_tiny", "gemnet_oc_tiny"]


def _installed():
    node = shutil.which("node")
    return node is not None and (HOST / "node_modules" / "onnxruntime-node" / "package.json").is_file()


@pytest.fixture(scope="module")
def node_host():
    """The node executable, with examples/node_host/node_modules installed (by install.sh when missing)."""
    if not _installed():
        try:
            result = subprocess.run(["bash", str(HOST / "install.sh")], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.skip(f"examples/node_host/install.sh did not finish in {INSTALL_TIMEOUT_S} s (no network?)")
        output = f"{result.stdout}\n{result.stderr}"
        if result.returncode != 0:
            lines = [line for line in output.splitlines() if line.strip()]
            last = lines[-1] if lines else "no output"
            if UNAVAILABLE.search(output):
                pytest.skip(f"Node.js host dependencies cannot be installed here (examples/node_host/install.sh: {last})")
            pytest.fail(f"examples/node_host/install.sh failed ({result.returncode}):\n{output[-4000:]}")
        assert _installed(), f"install.sh succeeded but node or node_modules/onnxruntime-node is missing:\n{output[-2000:]}"
    return shutil.which("node")


def run_node(node, model, structure_path, check=True):
    result = subprocess.run([node, str(PROGRAM), str(model), str(structure_path)], capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    if check and result.returncode != 0:
        raise AssertionError(f"run_onnx.mjs failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


# --- structures ---------------------------------------------------------------


def _as_json(atoms, with_cell=True):
    structure = {"positions": atoms.positions.tolist(), "atomic_numbers": atoms.numbers.tolist()}
    if with_cell:
        structure.update(cell=atoms.cell.array.tolist(), pbc=[bool(p) for p in atoms.pbc], tags=atoms.get_tags().tolist())
    return structure


def _extxyz(name):
    return read(STRUCTURES / f"{name}.extxyz")


def _free_molecule():
    """Ethanol with no cell, pbc or tags keys: the program's defaults (zero cell, no pbc, tags 0)."""
    return molecule("CH3CH2OH")


# name -> (JSON document, list of ASE structures it describes)
def _cases():
    bulk = _extxyz("v2")  # Ag fcc, 32 atoms, pbc TTT
    triclinic = _extxyz("v4")  # strained CaF2 primitive cell, pbc TTT
    slab = _extxyz("v1")  # Cu(111) + CO, tags 0/1/2, pbc TTF
    boxed = _extxyz("v3")  # NH3 in a 12 A box, pbc FFF
    free = _free_molecule()
    assert set(slab.get_tags()) == {0, 1, 2} and slab.pbc.tolist() == [True, True, False]
    assert not boxed.pbc.any() and bulk.pbc.all()
    return {
        "bulk": (_as_json(bulk), [bulk]),
        "triclinic": (_as_json(triclinic), [triclinic]),
        "slab": (_as_json(slab), [slab]),
        "boxed_molecule": (_as_json(boxed), [boxed]),
        "free_molecule": (_as_json(free, with_cell=False), [free]),
        "batch": ({"structures": [_as_json(slab), _as_json(triclinic)]}, [slab, triclinic]),
    }


CASES = list(_cases())


def torchscript_reference(path, structures, dtype):
    """Energies, forces (and stress) of ``structures`` as one batch through the TorchScript artifact's forward_batch."""
    float_type = getattr(torch, dtype)
    module = torch.jit.load(path)
    positions = torch.tensor(np.concatenate([s.positions for s in structures]), dtype=float_type)
    numbers = torch.tensor(np.concatenate([s.numbers for s in structures]), dtype=torch.long)
    cell = torch.tensor(np.stack([s.cell.array for s in structures]), dtype=float_type)
    pbc = torch.tensor(np.stack([s.pbc for s in structures]), dtype=torch.bool)
    tags = torch.tensor(np.concatenate([s.get_tags() for s in structures]), dtype=torch.long)
    natoms = torch.tensor([len(s) for s in structures], dtype=torch.long)
    out = module.forward_batch(positions, numbers, cell, pbc, tags, natoms)
    return {key: value.detach().double().numpy() for key, value in out.items()}


def _compare(printed, structures, reference, what):
    """printed: per-structure dicts from the program; reference: batched arrays. Returns (max |dE|, max |dF|, max |dS|)."""
    assert len(printed) == len(structures)
    worst = [0.0, 0.0, 0.0]
    start = 0
    for index, (result, structure) in enumerate(zip(printed, structures)):
        where = f"{what} structure {index}"
        expected_keys = {"energy", "forces"} | ({"stress"} if "stress" in reference else set())
        assert set(result) == expected_keys, f"{where}: keys {sorted(result)}"
        n = len(structure)
        energy = float(reference["energy"][index])
        forces = reference["forces"][start : start + n]
        start += n
        got_forces = np.asarray(result["forces"], dtype=np.float64)
        assert got_forces.shape == (n, 3), f"{where}: forces shape {got_forces.shape}"
        energy_error = abs(result["energy"] - energy)
        assert energy_error <= ENERGY_RELATIVE * abs(energy) + ENERGY_ABSOLUTE, f"{where}: |dE| = {energy_error} (E = {energy})"
        forces_error = float(np.abs(got_forces - forces).max())
        bound = FORCES_RELATIVE * float(np.abs(forces).max()) + FORCES_ABSOLUTE
        assert forces_error <= bound, f"{where}: max|dF| = {forces_error} > {bound}"
        worst[0] = max(worst[0], energy_error)
        worst[1] = max(worst[1], forces_error)
        if "stress" in reference:
            stress = reference["stress"][index]
            if not np.isfinite(stress).all():  # not periodic in all three directions: NaN, printed as null
                assert result["stress"] is None, f"{where}: stress {result['stress']} where the reference has NaN"
                continue
            got_stress = np.asarray(result["stress"], dtype=np.float64)
            assert got_stress.shape == (3, 3)
            stress_error = float(np.abs(got_stress - stress).max())
            assert stress_error <= FORCES_RELATIVE * float(np.abs(stress).max()) + FORCES_ABSOLUTE, f"{where}: max|dS| = {stress_error}"
            worst[2] = max(worst[2], stress_error)
    assert start == len(reference["forces"])
    return tuple(worst)


def _printed_structures(document, batch):
    if batch:
        assert set(document) == {"structures"}
        return document["structures"]
    return [document]


@pytest.mark.parametrize("checkpoint", MODELS)
def test_node_host_matches_torchscript(node_host, export_artifact, tmp_path, checkpoint):
    onnx_path = export_artifact(checkpoint, "onnx")
    torchscript_path = export_artifact(checkpoint, "torchscript")
    differences = {}
    for name, (document, structures) in _cases().items():
        structure_path = tmp_path / f"{name}.json"
        structure_path.write_text(json.dumps(document))
        printed = json.loads(run_node(node_host, onnx_path, structure_path).stdout)
        reference = torchscript_reference(torchscript_path, structures, "float32")
        differences[name] = _compare(_printed_structures(printed, "structures" in document), structures, reference, f"{checkpoint} {name}")
    print(f"{checkpoint}: max |dE|, max|dF| per case: " + ", ".join(f"{k} {v[0]:.2e} {v[1]:.2e}" for k, v in differences.items()))


def test_node_host_float64_conservative_with_stress(node_host, export_artifact, tmp_path):
    """A float64 artifact (dtype read from metadata_props: Float64Array inputs) with conservative forces and stress."""
    onnx_path = export_artifact("painn_tiny", "onnx", forces="conservative", dtype="float64")
    torchscript_path = export_artifact("painn_tiny", "torchscript", forces="conservative", dtype="float64")
    cases = _cases()
    # A slab (pbc TTF: stress NaN, printed as null) and a periodic cell.
    document = {"structures": [cases["slab"][0], cases["triclinic"][0]]}
    structures = cases["slab"][1] + cases["triclinic"][1]
    structure_path = tmp_path / "batch.json"
    structure_path.write_text(json.dumps(document))
    printed = json.loads(run_node(node_host, onnx_path, structure_path).stdout)
    reference = torchscript_reference(torchscript_path, structures, "float64")
    assert printed["structures"][0]["stress"] is None and printed["structures"][1]["stress"] is not None
    worst = _compare(_printed_structures(printed, True), structures, reference, "painn_tiny float64 conservative")
    # float64 end to end: far inside the float32 bounds.
    assert worst[0] <= 1e-8 and worst[1] <= 1e-8 and worst[2] <= 1e-8, worst
    print(f"painn_tiny float64 conservative: max |dE| {worst[0]:.2e}, max|dF| {worst[1]:.2e}, max|dS| {worst[2]:.2e}")


def test_node_host_batch_equals_single_runs(node_host, export_artifact, tmp_path):
    """natoms splits a batch: each structure's result equals its own run's."""
    onnx_path = export_artifact("painn_tiny", "onnx")
    cases = _cases()
    single = {}
    for name in ("slab", "triclinic"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(cases[name][0]))
        single[name] = json.loads(run_node(node_host, onnx_path, path).stdout)
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(cases["batch"][0]))
    batch = json.loads(run_node(node_host, onnx_path, path).stdout)["structures"]
    for result, name in zip(batch, ("slab", "triclinic")):
        assert abs(result["energy"] - single[name]["energy"]) <= ENERGY_RELATIVE * abs(single[name]["energy"]) + ENERGY_ABSOLUTE
        np.testing.assert_allclose(result["forces"], single[name]["forces"], rtol=0, atol=FORCES_ABSOLUTE)


BAD_STRUCTURES = {
    "positions_not_nx3": ({"positions": [[0.0, 0.0, 0.0], [1.0, 1.0]], "atomic_numbers": [8, 1]}, r"positions row 1 must be 3 finite numbers"),
    "numbers_length": ({"positions": [[0.0, 0.0, 0.0]], "atomic_numbers": [8, 1]}, r"atomic_numbers must be a list of 1 integers"),
    "element_out_of_range": ({"positions": [[0.0, 0.0, 0.0]], "atomic_numbers": [0]}, r"atomic_numbers\[0\] = 0 is outside the model's range"),
    "cell_not_3x3": ({"positions": [[0.0, 0.0, 0.0]], "atomic_numbers": [8], "cell": [[5.0, 0, 0], [0, 5.0, 0]], "pbc": [True] * 3}, r"cell must be a 3 x 3 array"),
    "periodic_without_cell": ({"positions": [[0.0, 0.0, 0.0]], "atomic_numbers": [8], "pbc": [True, True, True]}, r"cell is singular \(volume 0 A\^3\) but pbc is set"),
    "tags_length": ({"positions": [[0.0, 0.0, 0.0]], "atomic_numbers": [8], "tags": [0, 1]}, r"tags must be a list of 1 integers"),
    "misspelt_key": ({"structures": [{"positon": [[0.0, 0.0, 0.0]], "atomic_numbers": [8]}]}, r"structures\[0\]: unknown key \"positon\""),
    "not_json": ("{positions: ", r"is not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_STRUCTURES))
def test_node_host_rejects_bad_structure_in_one_line(node_host, export_artifact, tmp_path, case):
    document, message = BAD_STRUCTURES[case]
    path = tmp_path / f"{case}.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    result = run_node(node_host, export_artifact("painn_tiny", "onnx"), path, check=False)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_onnx: error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]


def test_node_host_missing_files_and_wrong_model(node_host, export_artifact, tmp_path):
    structure = tmp_path / "ok.json"
    structure.write_text(json.dumps({"positions": [[0.0, 0.0, 0.0]], "atomic_numbers": [8]}))
    onnx_path = export_artifact("painn_tiny", "onnx")
    checks = [
        ((tmp_path / "absent.onnx", structure), r"model file not found: .*absent\.onnx"),
        ((onnx_path, tmp_path / "absent.json"), r"structure file not found: .*absent\.json"),
        ((export_artifact("painn_tiny", "torchscript"), structure), r"is not an (ONNX model|ocp-deploy ONNX artifact)"),
    ]
    for (model, path), message in checks:
        result = run_node(node_host, model, path, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and re.search(message, lines[0]), result.stderr
