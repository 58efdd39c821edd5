"""md_host (cpp_demo): builds with CMake against the torch wheel's LibTorch,
matches the Python side at step 0, conserves energy with a conservative
artifact as velocity Verlet should, and refuses bad input cleanly.

The build happens once per session (``OCP_DEPLOY_CPP_BUILD_DIR`` reuses a
build directory across sessions). Skipped only when cmake is not installed.
"""

import math
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

import cpp_helpers as helpers  # tests/integration is on sys.path (pytest rootdir-relative import)

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake g++)")

DATA = helpers.REPO_ROOT / "tests" / "data"
# Parity with the Python side for float32 artifacts: relative 1e-5 on the
# energy (floor 1 eV) plus 1e-6 eV per atom for summation-order round-off,
# and 1e-5 of the largest force component (floor 1 eV/A) on forces. That is
# against the same entry point (``forward`` called from Python). Against
# ``ocpdeploy.runtime`` (which calls the batched ``forward_batch``: another
# float32 summation order, measured up to 2.7e-5 relative on GemNet-OC
# forces) the force tolerance is RUNTIME_FORCE_RTOL.
ENERGY_RTOL = 1.0e-5
ENERGY_ATOL_PER_ATOM = 1.0e-6
FORCE_RTOL = 1.0e-5
RUNTIME_FORCE_RTOL = 5.0e-5
HOST_TIMEOUT_S = 120


def run_host(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=HOST_TIMEOUT_S,
                            env=helpers.host_environment())
    if check and result.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def assert_parity(energy: float, forces: np.ndarray, reference: dict, natoms: int,
                  force_rtol: float = FORCE_RTOL) -> None:
    energy_tol = ENERGY_RTOL * max(abs(reference["energy"]), 1.0) + ENERGY_ATOL_PER_ATOM * natoms
    assert abs(energy - reference["energy"]) <= energy_tol, (energy, reference["energy"], energy_tol)
    force_tol = force_rtol * max(float(np.abs(reference["forces"]).max()), 1.0)
    np.testing.assert_allclose(forces, reference["forces"], rtol=0, atol=force_tol)


@pytest.fixture(scope="module")
def md_host(cpp_build) -> Path:
    return cpp_build["md_host"]


@pytest.fixture(scope="module")
def cpp_build(request, tmp_path_factory):
    return helpers.cached_build(request, tmp_path_factory)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("md_host_artifacts")
    return {
        "standin": helpers.write_standin_artifact(folder / "standin.pt"),
        "standin_float64": helpers.write_standin_artifact(folder / "standin64.pt", dtype="float64"),
        "direct": helpers.write_standin_artifact(folder / "direct.pt", forces="direct"),
        "version2": helpers.write_standin_artifact(folder / "v2.pt", metadata_update={"format_version": 2}),
        "foreign": helpers.write_standin_artifact(folder / "foreign.pt", metadata_update={"format": "other"}),
        "no_metadata": helpers.write_standin_artifact(folder / "nometa.pt", metadata=False),
        "light_elements": helpers.write_standin_artifact(folder / "light.pt", max_z=20),
    }


def bulk_copper(tmp_path: Path, repeat=(3, 3, 3)) -> Path:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=7)
    atoms.set_tags(np.arange(len(atoms)) % 3)
    path = tmp_path / "cu.extxyz"
    write(path, atoms)
    return path


def step0(md_host: Path, artifact: Path, structure: Path, tmp_path: Path, *extra):
    trajectory = tmp_path / "traj.extxyz"
    result = run_host(md_host, artifact, structure, "--steps", 0, "--trajectory", trajectory, "--threads", 1, *extra)
    frame = read(trajectory, index=0)
    printed = helpers.read_tagged_value(result.stdout, "step0_energy_eV")
    assert math.isclose(printed, frame.get_potential_energy(), rel_tol=1e-12, abs_tol=1e-12)
    return frame.get_potential_energy(), frame.get_forces(), result


def standin_structure(name: str, tmp_path: Path) -> Path:
    if name in ("v1", "v3"):
        return DATA / "structures" / f"{name}.extxyz"
    if name == "bulk":
        return bulk_copper(tmp_path)
    if name == "small_box":  # cubic cell edge 3.61 A < cutoff 5 A: several images per direction
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    elif name == "triclinic_unwrapped":  # primitive fcc cell, positions far outside the cell
        atoms = bulk("Cu", "fcc", a=3.58).repeat((3, 3, 3))
        atoms.symbols[::4] = "Ni"
        atoms.positions += np.array([20.0, -13.0, 7.5])
    atoms.rattle(0.05, seed=5)
    path = tmp_path / f"{name}.extxyz"
    write(path, atoms)
    return path


@pytest.fixture(scope="module")
def standin_step0(request, md_host, artifacts, tmp_path_factory):
    """(structure file, step-0 energy, forces, result) for the selected structures, concurrently."""
    def run(structure):
        folder = tmp_path_factory.mktemp(f"standin_{structure}")
        path = standin_structure(structure, folder)
        return (path, *step0(md_host, artifacts["standin"], path, folder))

    cases = helpers.ConcurrentCases(request, "test_step0_parity_standin", "structure", run)
    yield cases
    cases.close()


@pytest.mark.parametrize("structure", ["bulk", "v1", "v3", "small_box", "triclinic_unwrapped"])
def test_step0_parity_standin(standin_step0, artifacts, structure):
    """md_host's forward() call (the artifact builds its graph) against the same entry point from Python."""
    path, energy, forces, result = standin_step0[structure]
    atoms = read(path)
    assert "format            ocp-deploy v1" in result.stdout  # metadata printed
    assert "artifact_format: torchscript" in result.stdout
    assert_parity(energy, forces, helpers.jit_predict(artifacts["standin"], atoms), len(atoms))
    assert_parity(energy, forces, helpers.python_predict(artifacts["standin"], atoms), len(atoms), RUNTIME_FORCE_RTOL)


# Real artifacts (export-model on the test checkpoints); forces None = the
# checkpoint's own mode (direct for these).
EXPORTED_CASES = [
    ("painn_tiny", None, "v1"),
    ("painn_tiny", None, "v2"),
    ("painn_tiny", "conservative", "v1"),
    ("gemnet_oc_tiny", None, "v1"),
    ("gemnet_oc_tiny", "conservative", "v2"),
]
# Built and exported in the background from the session's start (cpp_helpers.session_work).
CPP_SESSION_NEEDS = helpers.SessionNeeds(exports=[(model, forces) for model, forces, _ in EXPORTED_CASES])


@pytest.fixture(scope="module")
def exported_step0(request, md_host, tmp_path_factory):
    """md_host's step 0 for the selected exported cases, run concurrently (each waits for its export)."""
    def run(case):
        model, forces_mode, structure = case
        artifact = helpers.exported_artifact(request, tmp_path_factory, model, forces_mode)
        path = DATA / "structures" / f"{structure}.extxyz"
        return step0(md_host, artifact, path, tmp_path_factory.mktemp(f"exported_{model}"))

    cases = helpers.ConcurrentCases(request, "test_step0_parity_exported", ("model", "forces_mode", "structure"), run)
    yield cases
    cases.close()


@pytest.mark.parametrize("model,forces_mode,structure", EXPORTED_CASES)
def test_step0_parity_exported(exported_step0, request, tmp_path_factory, model, forces_mode, structure):
    artifact = helpers.exported_artifact(request, tmp_path_factory, model, forces_mode)
    atoms = read(DATA / "structures" / f"{structure}.extxyz")
    energy, forces, _ = exported_step0[(model, forces_mode, structure)]
    assert_parity(energy, forces, helpers.jit_predict(artifact, atoms), len(atoms))
    assert_parity(energy, forces, helpers.python_predict(artifact, atoms), len(atoms), RUNTIME_FORCE_RTOL)


def test_nve_energy_conservation(md_host, artifacts, tmp_path):
    """Velocity Verlet with a conservative (float64) model.

    Velocity Verlet is symplectic: it exactly conserves a shadow Hamiltonian
    H~ = H + dt^2 H2 + O(dt^4), so E_tot = H fluctuates with an amplitude
    proportional to dt^2 and shows no secular drift. Bound: for a harmonic
    mode of angular frequency w, H - H~ = (w dt / 2)^2 * (potential energy of
    the mode) <= (w dt)^2 / 4 * E_mode. Summing over modes with w <= w_max and
    equipartition (the run starts from the perfect lattice with all energy
    kinetic, 3/2 k_B T0 per atom), the deviation per atom is at most
    (w_max dt)^2 / 4 * 3/2 k_B T0, times 2 for the peak-to-peak excursion and
    2 as a margin for anharmonicity. w_max is measured from the model's
    finite-difference Hessian. We also check the dt^2 scaling (halving dt
    must cut the deviation ~4x) and that the linear drift stays inside the
    same bound over the run.
    """
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))  # 32 atoms
    structure = tmp_path / "cu32.extxyz"
    write(structure, atoms)
    temperature_k = 300.0
    boltzmann_ev = 8.617333262e-5
    run_fs = 300.0
    deviations = {}

    def run(dt):
        return run_host(md_host, artifacts["standin_float64"], structure, "--steps", int(run_fs / dt), "--dt", dt,
                        "--temperature", temperature_k, "--threads", 1, "--seed", 3)

    with ThreadPoolExecutor(max_workers=2) as pool:  # the two runs side by side, the Hessian meanwhile
        runs = pool.map(run, (1.0, 2.0))
        w_max = helpers.max_angular_frequency(artifacts["standin_float64"], atoms)  # 1/fs
        results = dict(zip((1.0, 2.0), runs))
    for dt, result in results.items():
        deviation = helpers.read_tagged_value(result.stdout, "nve_max_deviation_eV_per_atom")
        drift = helpers.read_tagged_value(result.stdout, "nve_drift_eV_per_atom_per_ps")
        bound = 2.0 * 2.0 * (w_max * dt) ** 2 / 4.0 * 1.5 * boltzmann_ev * temperature_k
        assert deviation < bound, (dt, deviation, bound)
        assert abs(drift) * run_fs / 1000.0 < bound, (dt, drift, bound)
        deviations[dt] = deviation
    ratio = deviations[2.0] / deviations[1.0]
    assert 2.5 < ratio < 6.0, f"energy error does not scale as dt^2: ratio {ratio}"


def test_direct_forces_warn(md_host, artifacts, tmp_path):
    result = run_host(md_host, artifacts["direct"], bulk_copper(tmp_path, (2, 2, 2)), "--steps", 2)
    assert "not -dE/dx" in result.stderr


def test_berendsen_thermostat_runs(md_host, artifacts, tmp_path):
    result = run_host(md_host, artifacts["standin"], bulk_copper(tmp_path, (2, 2, 2)), "--steps", 5,
                      "--thermostat", "berendsen", "--tau", 50, "--temperature", 500)
    assert "ns_per_day" in result.stdout
    assert "n/a (thermostat on" in result.stdout


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_INPUTS = {
    "missing_artifact": (lambda a, d: (d / "missing.pt", "STRUCT"), "cannot open artifact"),
    "not_torchscript": (lambda a, d: (write_text(d / "junk.pt", "not a zip"), "STRUCT"), "is not an ocp-deploy artifact: not a zip"),
    "format_version": (lambda a, d: (a["version2"], "STRUCT"), "format_version is 2"),
    "foreign_format": (lambda a, d: (a["foreign"], "STRUCT"), "expected \"ocp-deploy\""),
    "no_metadata": (lambda a, d: (a["no_metadata"], "STRUCT"), "no metadata.json"),
    "element_range": (lambda a, d: (a["light_elements"], "STRUCT"), "outside the model's range"),
    "missing_structure": (lambda a, d: (a["standin"], d / "missing.xyz"), "cannot open structure"),
    "truncated_xyz": (lambda a, d: (a["standin"], write_text(d / "t.xyz", "3\nLattice=\"5 0 0 0 5 0 0 0 5\"\nCu 0 0 0\n")),
                      "file ends after 1 of 3 atoms"),
    "wrong_columns": (lambda a, d: (a["standin"], write_text(d / "c.xyz", "1\n\nCu 0 0\n")), "expected 4 columns"),
    "bad_number": (lambda a, d: (a["standin"], write_text(d / "n.xyz", "1\n\nCu 0 x 0\n")), "'x' is not a number"),
    "unknown_element": (lambda a, d: (a["standin"], write_text(d / "e.xyz", "1\n\nQq 0 0 0\n")), "unknown element"),
    "bad_lattice": (lambda a, d: (a["standin"], write_text(d / "l.xyz", "1\nLattice=\"1 2 3\"\nCu 0 0 0\n")),
                    "Lattice needs 9 numbers"),
}


@pytest.fixture(scope="module")
def bad_input_runs(request, md_host, artifacts, tmp_path_factory):
    """md_host's result for the selected bad inputs, run concurrently."""
    def run(case):
        folder = tmp_path_factory.mktemp(f"bad_{case}")
        artifact, structure = BAD_INPUTS[case][0](artifacts, folder)
        if structure == "STRUCT":
            structure = bulk_copper(folder, (1, 1, 1))
        return run_host(md_host, artifact, structure, "--steps", 1, check=False)

    cases = helpers.ConcurrentCases(request, "test_bad_input_exits_cleanly", "case", run)
    yield cases
    cases.close()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_cleanly(bad_input_runs, case):
    message = BAD_INPUTS[case][1]
    result = bad_input_runs[case]
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert message in result.stderr
    assert result.stderr.startswith("md_host: error:")
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no backtrace


@pytest.fixture(scope="module")
def bad_command_line_runs(request, md_host, artifacts, tmp_path_factory):
    """md_host's result for the selected bad command lines, run concurrently."""
    def run(args):
        structure = bulk_copper(tmp_path_factory.mktemp("bad_command_line"), (1, 1, 1))
        return run_host(md_host, artifacts["standin"], structure, *args, check=False)

    cases = helpers.ConcurrentCases(request, "test_bad_command_line", "args", run)
    yield cases
    cases.close()


@pytest.mark.parametrize("args,message", [
    (["--steps", "x"], "--steps expects a number"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
    (["--dt", "-1"], "--dt must be positive"),
    (["--bogus", "1"], "unknown option --bogus"),
    (["--neighbors", "host"], "unknown option --neighbors"),
])
def test_bad_command_line(bad_command_line_runs, args, message):
    result = bad_command_line_runs[tuple(args)]
    assert result.returncode == 2
    assert message in result.stderr


def test_cuda_device_clear_error_without_gpu(md_host, artifacts, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = run_host(md_host, artifacts["standin"], bulk_copper(tmp_path, (1, 1, 1)), "--device", "cuda", check=False)
    assert result.returncode == 1
    assert "CUDA is not available" in result.stderr
