"""`pair_style ocp` on several MPI ranks: PaiNN by exact domain decomposition.

On every LAMMPS build (Debian lmp_ocp under Open MPI's mpirun, and the
plugin in the PyPI wheel's ``lmp`` under pip MPICH's mpiexec), for PaiNN
artifacts whose max-neighbour cap binds (direct and conservative), a plain
one on a triclinic two-element cell, and the session's AOTInductor packages
with domain programs (``--format aoti --domain``: direct float32,
conservative float64) on that cell:

* step 0 on 2 ranks == 1 rank with ``decomposition domain`` == 1 rank with
  the whole-system call == the Python runtime (energy and forces), and the
  per-atom energies (``compute pe/atom``) sum to the potential energy;
  conservative artifacts: the 2-rank F.r pressure equals the whole-system
  call's stress pressure;
* a conservative NVE run of 100 steps on 2 ranks follows the 1-rank
  trajectory (atoms migrate between ranks, neighbour lists are rebuilt);
* a package's runs also equal the TorchScript artifact of the same
  checkpoint, forces and dtype (the Python runtime on it);
* the setups the domain path refuses are LAMMPS errors: ``newton off``,
  PaiNN artifacts without the domain methods on 2 ranks, ``decomposition
  domain`` for GemNet-OC (GemNet-OC on 2 ranks: test_lammps.py,
  test_lammps_plugin.py).

Builds and exports are the session's (cpp_helpers.session_work). Skipped
per host when cmake, LAMMPS, Open MPI or the wheel is missing.
"""

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import cpp_helpers as helpers
import lammps_checks as checks
import lammps_common as common
import lammps_wheel

WHEEL = lammps_wheel.find_wheel()
RANKS = 2

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake g++)")
DEBIAN_MISSING = (not helpers.lammps_installed() or not common.OPENMPI_MPIRUN.exists())
HOSTS = [
    pytest.param("debian", marks=pytest.mark.skipif(
        DEBIAN_MISSING, reason="Debian LAMMPS or Open MPI is not installed (apt-get install lammps liblammps-dev)")),
    pytest.param("wheel", marks=pytest.mark.skipif(
        WHEEL is None, reason=f"the LAMMPS wheel is not installed ({lammps_wheel.INSTALL_HINT})")),
]

# case -> (artifact: ("capped", name, forces), ("exported", checkpoint, forces) or
# ("package", checkpoint, forces, dtype): the session's package with domain programs), structure)
CASES = {
    "capped_direct": (("capped", "bulk", None), "reordered_bulk"),
    "capped_conservative": (("capped", "slab", "conservative"), "shuffled_slab"),
    "tiny_conservative_triclinic": (("exported", "painn_tiny", "conservative"), "triclinic_cuni"),
    "package_direct_triclinic": (("package", "painn_tiny", None, "float32"), "triclinic_cuni"),
    "package_conservative_float64_triclinic": (("package", "painn_tiny", "conservative", "float64"), "triclinic_cuni"),
}
CPP_SESSION_NEEDS = helpers.SessionNeeds(
    plugin_headers=WHEEL.headers if WHEEL else None,
    exports=[("painn_tiny", "conservative"), ("gemnet_oc_tiny", None)],
    random=common.capped_needs(("bulk", None), ("slab", "conservative")))

# (label, ranks, pair_style keywords): the runs of one step-0 comparison.
DECOMPOSITIONS = [("whole", 1, ""), ("domain_1", 1, "decomposition domain"), ("domain_2", RANKS, "")]
# Per-atom energies summed by LAMMPS vs its pe: the same doubles added in another order.
PE_ATOM_RTOL = 1.0e-10
# F.r virial (domain path) vs -V stress (whole path): float32 round-off.
PRESSURE_RTOL = 1.0e-4
PRESSURE_ATOL_BAR = 1.0
# NVE: 2 ranks against 1 rank; the float32 round-off of step 0 (~1e-6 eV)
# grows along the trajectory but stays far below any physical change.
NVE_STEPS = 100
NVE_THERMO_EVERY = 10
NVE_TEMPERATURE_K = 100.0
NVE_ETOTAL_TOL_PER_ATOM = 2.0e-6  # measured 2.2e-7 (the random-weight slab heats from 100 K to ~900 K)
NVE_PE_TOL_PER_ATOM = 2.0e-6
# Neighbour skin of the NVE run (A): small, so lists are rebuilt and atoms
# migrate between ranks during the run.
NVE_SKIN = 0.1
NVE_MIN_BUILDS = 5
NVE_DRIFT_PER_ATOM = checks.NVE_DRIFT_PER_ATOM


def structure(name: str):
    if name == "reordered_bulk":
        return common.reordered_bulk()
    if name == "shuffled_slab":
        return common.shuffled_slab()
    return common.structure(name)


def artifact(request, tmp_path_factory, spec, export_artifact=None) -> Path:
    kind, name, forces = spec[:3]
    if kind == "capped":
        return common.capped_painn_artifact(request, tmp_path_factory, name, forces)
    if kind == "package":
        return Path(export_artifact(name, "aoti", forces, spec[3]))
    return helpers.exported_artifact(request, tmp_path_factory, name, forces)


def runner(request, tmp_path_factory, host: str, ranks: int) -> common.Runner:
    if host == "debian":
        lmp_ocp = helpers.cached_build(request, tmp_path_factory)["lmp_ocp"]
        if lmp_ocp is None:
            pytest.fail("LAMMPS is installed but lmp_ocp was not built (see cmake output)")
        return common.lmp_ocp_runner(lmp_ocp, ranks)
    return lammps_wheel.lmp_runner(WHEEL, ranks=ranks)


def header(request, tmp_path_factory, host: str) -> str:
    if host == "debian":
        return ""
    return f"plugin load {lammps_wheel.cached_plugin(request, tmp_path_factory, WHEEL)}"


def step0_script(data: Path, path: Path, symbols, boundary: str, dump: Path, extra: str, header_line: str,
                 per_atom: bool) -> str:
    """Step 0 with forces dumped; ``per_atom`` adds the sum of compute pe/atom as a thermo column."""
    run = "run 0"
    if per_atom:
        run = "\n".join([
            "compute pe_atom all pe/atom",
            "compute pe_atom_sum all reduce sum c_pe_atom",
            "thermo_style custom step pe ke etotal temp press c_pe_atom_sum",
            "thermo_modify format float %20.12g",
            "run 0",
        ])
    return common.lammps_input(data, path, symbols, boundary, dump=dump, header=header_line,
                               pair_style_extra=extra, run=run)


def run_decompositions(request, tmp_path_factory, host: str, case: str, export_artifact) -> dict:
    """label -> (energy, forces by atom ID, thermo row at step 0, output) for each of DECOMPOSITIONS."""
    spec, structure_name = CASES[case]
    path = artifact(request, tmp_path_factory, spec, export_artifact)
    atoms = structure(structure_name)
    header_line = header(request, tmp_path_factory, host)
    results = {}
    for label, ranks, extra in DECOMPOSITIONS:
        folder = tmp_path_factory.mktemp(f"mpi_{host}_{case}_{label}")
        data = folder / "data.lmp"
        symbols = helpers.write_lammps_data(data, atoms)
        dump = folder / "forces.dump"
        script = step0_script(data, path, symbols, helpers.lammps_boundary(atoms), dump, extra, header_line,
                              per_atom=label != "whole")
        _, output = runner(request, tmp_path_factory, host, ranks)(script, folder)
        columns = 6 if label == "whole" else 7
        rows = [row for row in common.thermo_rows(output, columns) if row[0] == 0]
        assert rows, output[-3000:]
        results[label] = (helpers.read_tagged_value(output, "OCP_ENERGY"), helpers.parse_lammps_forces(dump),
                          rows[-1], output)
    return results


@pytest.fixture(scope="module")
def decomposition_runs(request, tmp_path_factory, export_artifact):
    """The selected (host, case) step-0 comparisons, run concurrently."""
    cases = helpers.ConcurrentCases(request, "test_ranks_agree_at_step0", ("host", "case"),
                                    lambda hc: run_decompositions(request, tmp_path_factory, *hc, export_artifact))
    yield cases
    cases.close()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("host", HOSTS)
def test_ranks_agree_at_step0(decomposition_runs, request, tmp_path_factory, export_artifact, host, case):
    """2 ranks == 1 rank (domain) == 1 rank (whole system) == the Python runtime; pe/atom sums to pe.
    Packages: also == the TorchScript artifact of the same checkpoint, forces and dtype."""
    spec, structure_name = CASES[case]
    path = artifact(request, tmp_path_factory, spec, export_artifact)
    atoms = structure(structure_name)
    runs = decomposition_runs[(host, case)]
    if spec[0] == "capped":
        common.assert_order_matters(path, atoms)  # the cap binds: the IDs decide the edges
    reference = helpers.python_predict(path, atoms)
    references = [reference]
    if spec[0] == "package":
        references.append(helpers.python_predict(Path(export_artifact(spec[1], "torchscript", spec[2], spec[3])), atoms))
    whole = runs["whole"]
    assert "domain decomposition" not in whole[3]
    assert f"artifact format   {'aoti' if spec[0] == 'package' else 'torchscript'}" in whole[3]
    for label in ("domain_1", "domain_2"):
        energy, forces, row, output = runs[label]
        ranks = dict((l, r) for l, r, _ in DECOMPOSITIONS)[label]
        assert f"domain decomposition on {ranks} MPI rank(s)" in output
        for expected in references:
            common.assert_parity(energy, forces, expected, len(atoms), common.RUNTIME_FORCE_RTOL)
        common.assert_parity(energy, forces, {"energy": whole[0], "forces": whole[1]}, len(atoms))
        pe, pe_atom_sum = row[1], row[6]
        assert abs(pe_atom_sum - pe) <= PE_ATOM_RTOL * max(abs(pe), 1.0), (pe_atom_sum, pe)
    one, two = runs["domain_1"], runs["domain_2"]
    common.assert_parity(two[0], two[1], {"energy": one[0], "forces": one[1]}, len(atoms))
    if spec[2] == "conservative" and all(atoms.pbc):
        # Whole path: pressure from the artifact's stress; domain path: F.r over owned and ghost atoms.
        expected = whole[2][5]
        for label in ("domain_1", "domain_2"):
            pressure = runs[label][2][5]
            assert abs(pressure - expected) <= PRESSURE_RTOL * abs(expected) + PRESSURE_ATOL_BAR, (label, pressure, expected)


def nve_script(data: Path, path: Path, header_line: str) -> str:
    run = "\n".join([
        f"neighbor {NVE_SKIN} bin",
        "neigh_modify every 1 delay 0 check yes",
        f"velocity all create {NVE_TEMPERATURE_K} 4928459 mom yes rot no dist gaussian",
        "fix integrate all nve",
        "timestep 0.001",  # ps (units metal) = 1 fs
        f"thermo {NVE_THERMO_EVERY}",
        f"run {NVE_STEPS}",
    ])
    # Ranks side by side in the slab's plane: atoms cross between ranks and
    # through the periodic boundaries.
    header_line = "\n".join(filter(None, [header_line, "processors * * 1"]))
    return common.lammps_input(data, path, ["Cu"], "p p f", run=run, header=header_line)


@pytest.mark.parametrize("host", HOSTS)
def test_nve_on_two_ranks_follows_one_rank(request, tmp_path_factory, host):
    """Conservative cap-bound PaiNN slab: the 2-rank thermo trajectory is the 1-rank one, up to round-off growth."""
    path = common.capped_painn_artifact(request, tmp_path_factory, "slab", "conservative")
    atoms = common.shuffled_slab()
    header_line = header(request, tmp_path_factory, host)
    def trajectory(ranks: int):
        folder = tmp_path_factory.mktemp(f"nve_{host}_{ranks}")
        data = folder / "data.lmp"
        helpers.write_lammps_data(data, atoms)
        _, output = runner(request, tmp_path_factory, host, ranks)(nve_script(data, path, header_line), folder)
        return np.array(common.thermo_rows(output, 6)), output

    with ThreadPoolExecutor(max_workers=2) as pool:  # the two runs side by side
        (one, _), (two, output) = pool.map(trajectory, (1, RANKS))
    assert f"domain decomposition on {RANKS} MPI rank(s)" in output
    assert one.shape == two.shape == (NVE_STEPS // NVE_THERMO_EVERY + 1, 6), (one.shape, two.shape)
    natoms = len(atoms)
    np.testing.assert_array_equal(one[:, 0], two[:, 0])
    assert np.abs(two[:, 1] - one[:, 1]).max() / natoms <= NVE_PE_TOL_PER_ATOM
    assert np.abs(two[:, 3] - one[:, 3]).max() / natoms <= NVE_ETOTAL_TOL_PER_ATOM
    assert np.abs(two[:, 3] - two[0, 3]).max() / natoms <= NVE_DRIFT_PER_ATOM
    assert two[-1, 2] > 0.0  # kinetic energy
    builds = [line for line in output.splitlines() if line.startswith("Neighbor list builds")]
    assert builds and int(builds[-1].split("=")[1]) >= NVE_MIN_BUILDS, builds


# case -> (artifact, ranks, lammps_input options, expected message)
REFUSED = {
    "newton_off": ("painn", RANKS, dict(newton="off"), "requires 'newton on'"),
    "painn_without_domain_methods": ("painn_standin", RANKS, {}, "re-export it with the current export-model"),
    "gemnet_oc_decomposition_domain": ("gemnet_oc", 1, dict(pair_style_extra="decomposition domain"),
                                       "'decomposition domain' needs an artifact with domain-decomposition methods"),
    "decomposition_whole_on_two_ranks": ("painn", RANKS, dict(pair_style_extra="decomposition whole"),
                                         "runs on 1 MPI rank only"),
    "bad_decomposition": ("painn", 1, dict(pair_style_extra="decomposition split"),
                          "Illegal pair_style ocp decomposition 'split'"),
}


def run_refused(request, tmp_path_factory, case: str):
    name, ranks, options, _ = REFUSED[case]
    folder = tmp_path_factory.mktemp(f"refused_{case}")
    if name == "painn":
        path = helpers.exported_artifact(request, tmp_path_factory, "painn_tiny", "conservative")
    elif name == "gemnet_oc":
        path = helpers.exported_artifact(request, tmp_path_factory, "gemnet_oc_tiny")
    else:  # a PaiNN artifact as exported before the domain methods existed
        path = helpers.write_standin_artifact(folder / "standin.pt", metadata_update={"model_kind": "painn"})
    atoms = common.structure("bulk_cu")
    data = folder / "data.lmp"
    helpers.write_lammps_data(data, atoms)
    script = common.lammps_input(data, path, ["Cu"], "p p p", **options)
    return runner(request, tmp_path_factory, "debian", ranks)(script, folder, check=False)


@pytest.fixture(scope="module")
def refused_runs(request, tmp_path_factory):
    cases = helpers.ConcurrentCases(request, "test_refused_setup_is_a_lammps_error", "case",
                                    lambda case: run_refused(request, tmp_path_factory, case))
    yield cases
    cases.close()


@pytest.mark.skipif(DEBIAN_MISSING, reason="Debian LAMMPS or Open MPI is not installed")
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_setup_is_a_lammps_error(refused_runs, case):
    returncode, output = refused_runs[case]
    checks.assert_lammps_error(returncode, output, REFUSED[case][3])
    assert "OCP_ENERGY" not in output
