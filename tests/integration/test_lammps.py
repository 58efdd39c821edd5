"""lmp_ocp: Debian LAMMPS (liblammps) + LibTorch with the run-time registered
`pair_style ocp`, using LAMMPS's full neighbour list and ghost atoms.

Checks step-0 energy / forces against the Python side (orthogonal, triclinic,
slab with a non-periodic direction, two elements, newton on and off; the
stand-in artifact exercises forward_candidates, i.e. the LAMMPS neighbour
list, and the exported ones forward), an ordinary NVE run, and clean LAMMPS
errors for bad setups. Skipped only when cmake or LAMMPS is not installed.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.io import read

import cpp_helpers as helpers  # tests/integration is on sys.path (pytest rootdir-relative import)

pytestmark = [
    pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake g++)"),
    pytest.mark.skipif(not helpers.lammps_installed(),
                       reason="LAMMPS is not installed (apt-get install lammps liblammps-dev)"),
]

DATA = helpers.REPO_ROOT / "tests" / "data"
# Same tolerances as test_md_host (float32): the LAMMPS path hands the
# artifact a differently ordered edge list, so only round-off may differ.
ENERGY_RTOL = 1.0e-5
ENERGY_ATOL_PER_ATOM = 1.0e-6
FORCE_RTOL = 1.0e-5
RUNTIME_FORCE_RTOL = 5.0e-5
HOST_TIMEOUT_S = 120
# LAMMPS neighbour skin (A) for the tests.
SKIN = 1.0


@pytest.fixture(scope="module")
def lmp_ocp(tmp_path_factory) -> Path:
    hosts = helpers.cached_build(tmp_path_factory)
    if hosts["lmp_ocp"] is None:
        pytest.fail("LAMMPS is installed but lmp_ocp was not built (see cmake output)")
    return hosts["lmp_ocp"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("lammps_artifacts")
    return {
        "standin": helpers.write_standin_artifact(folder / "standin.pt"),
        "standin_forward_only": helpers.write_standin_artifact(folder / "standin_fwd.pt", with_candidates=False),
        "light_elements": helpers.write_standin_artifact(folder / "light.pt", max_z=20),
    }


def lammps_input(data: Path, artifact: Path, symbols, boundary: str, newton: str = "on", run: str = "run 0",
                 units: str = "metal", pair_style_extra: str = "", pair_coeff: str = None, atom_map: bool = True,
                 dump: Path = None) -> str:
    lines = [
        f"units {units}",
        "atom_style atomic",
        "atom_modify map array" if atom_map else "",
        f"boundary {boundary}",
        f"newton {newton}",
        "box tilt large",
        f"read_data {data}",
        f"pair_style ocp {artifact} {pair_style_extra}",
        pair_coeff if pair_coeff is not None else "pair_coeff * * " + " ".join(symbols),
        f"neighbor {SKIN} bin",
        "variable e equal pe",
        "thermo_style custom step pe ke etotal temp press",
        "thermo_modify format float %20.12g",
    ]
    if dump is not None:
        lines += [f"dump forces all custom 1 {dump} id type fx fy fz", "dump_modify forces format float %20.12g sort id"]
    lines += [run, 'print "OCP_ENERGY ${e}"']
    return "\n".join(line for line in lines if line) + "\n"


def run_lammps(lmp_ocp: Path, script: str, folder: Path, check: bool = True) -> subprocess.CompletedProcess:
    path = folder / "in.test"
    path.write_text(script)
    result = subprocess.run([str(lmp_ocp), "-in", str(path), "-log", "none", "-nocite"], capture_output=True,
                            text=True, timeout=HOST_TIMEOUT_S, cwd=folder, env=helpers.host_environment())
    if check and result.returncode != 0:
        raise AssertionError(f"lmp_ocp failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return result


def step0(lmp_ocp, artifact, atoms, folder: Path, newton: str = "on"):
    """Energy and forces at step 0 in LAMMPS; ``atoms`` must be in LAMMPS form."""
    data = folder / "data.lmp"
    symbols = helpers.write_lammps_data(data, atoms)  # type labels El or El:TAG
    dump = folder / "forces.dump"
    result = run_lammps(lmp_ocp, lammps_input(data, artifact, symbols, helpers.lammps_boundary(atoms), newton,
                                              dump=dump), folder)
    return helpers.read_tagged_value(result.stdout, "OCP_ENERGY"), helpers.parse_lammps_forces(dump), result


def assert_parity(energy, forces, reference, natoms, force_rtol=FORCE_RTOL):
    energy_tol = ENERGY_RTOL * max(abs(reference["energy"]), 1.0) + ENERGY_ATOL_PER_ATOM * natoms
    assert abs(energy - reference["energy"]) <= energy_tol, (energy, reference["energy"], energy_tol)
    force_tol = force_rtol * max(float(np.abs(reference["forces"]).max()), 1.0)
    np.testing.assert_allclose(forces, reference["forces"], rtol=0, atol=force_tol)


def structure(name: str):
    """Test structures, already rotated / reduced to LAMMPS form."""
    if name == "bulk_cu":  # orthogonal, 108 atoms
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    elif name == "triclinic_cuni":  # primitive fcc cell: strongly triclinic, two elements
        atoms = bulk("Cu", "fcc", a=3.58).repeat((4, 4, 4))
        atoms.symbols[::3] = "Ni"
    elif name == "slab_cu":  # pbc T T F, vacuum along z
        atoms = fcc111("Cu", size=(3, 3, 4), vacuum=6.0, orthogonal=False)
        atoms.pbc = (True, True, False)
    elif name == "small_box":  # box edge (3.6 A) shorter than the cutoff (5 A): multiple ghost images
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    else:
        atoms = read(DATA / "structures" / f"{name}.extxyz")
    atoms.rattle(0.04, seed=11)
    return helpers.lammps_cell(atoms)


@pytest.mark.parametrize("newton", ["on", "off"])
@pytest.mark.parametrize("name", ["bulk_cu", "triclinic_cuni", "slab_cu", "small_box"])
def test_step0_parity_standin(lmp_ocp, artifacts, tmp_path, name, newton):
    """forward_candidates fed from LAMMPS's full list + ghosts == artifact's own graph."""
    atoms = structure(name)
    energy, forces, result = step0(lmp_ocp, artifacts["standin"], atoms, tmp_path, newton)
    assert "forward_candidates yes" in result.stdout
    assert f"newton_pair {newton}" in result.stdout
    assert_parity(energy, forces, helpers.jit_predict(artifacts["standin"], atoms), len(atoms))
    assert_parity(energy, forces, helpers.python_predict(artifacts["standin"], atoms), len(atoms), RUNTIME_FORCE_RTOL)


def test_step0_parity_forward_fallback(lmp_ocp, artifacts, tmp_path):
    """Artifacts without forward_candidates are called through forward()."""
    atoms = structure("triclinic_cuni")
    energy, forces, result = step0(lmp_ocp, artifacts["standin_forward_only"], atoms, tmp_path)
    assert "forward_candidates no" in result.stdout
    assert_parity(energy, forces, helpers.jit_predict(artifacts["standin_forward_only"], atoms), len(atoms))


def test_pressure_from_stress(lmp_ocp, artifacts, tmp_path):
    """LAMMPS pressure (bar) at T = 0 equals -trace(stress)/3 of the artifact (virial = -V stress)."""
    atoms = structure("bulk_cu")
    _, _, result = step0(lmp_ocp, artifacts["standin"], atoms, tmp_path)
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] == ["0"]]
    pressure_bar = float(rows[-1][5])
    stress = helpers.jit_predict(artifacts["standin"], atoms)["stress"]
    ev_per_a3_to_bar = 1.602176634e6  # 1 eV/A^3 = 160.2176634 GPa = 1.602176634e6 bar
    expected = -np.trace(stress) / 3.0 * ev_per_a3_to_bar
    assert abs(pressure_bar - expected) <= 1e-4 * max(abs(expected), 1.0), (pressure_bar, expected)


EXPORTED_CASES = [("painn_tiny", None, "v1"), ("painn_tiny", "conservative", "v2"), ("gemnet_oc_tiny", None, "v1")]


@pytest.mark.parametrize("model,forces_mode,name", EXPORTED_CASES)
def test_step0_parity_exported(lmp_ocp, tmp_path_factory, tmp_path, model, forces_mode, name):
    artifact = helpers.exported_artifact(tmp_path_factory, model, forces_mode)
    atoms = structure(name)
    energy, forces, _ = step0(lmp_ocp, artifact, atoms, tmp_path)
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
    result = run_lammps(lmp_ocp, lammps_input(data, artifacts["standin"], labels, "p p p", run=run), tmp_path)
    rows = [line.split() for line in result.stdout.splitlines()
            if len(line.split()) == 6 and line.split()[0].isdigit()]
    totals = np.array([float(row[3]) for row in rows])
    assert len(totals) == 11
    assert np.abs(totals - totals[0]).max() / len(atoms) < 5.0e-4
    assert float(rows[-1][2]) > 0.0  # kinetic energy
    builds = [line for line in result.stdout.splitlines() if line.startswith("Neighbor list builds")]
    assert builds and int(builds[-1].split("=")[1]) >= 5, builds


BAD_SETUPS = {
    "units_real": (dict(units="real"), "requires 'units metal'"),
    "missing_pair_coeff": (dict(pair_coeff=""), "All pair coeffs are not set"),
    "wrong_pair_coeff_count": (dict(pair_coeff="pair_coeff * * Cu Ni"), "one element symbol per atom type"),
    "unknown_element": (dict(pair_coeff="pair_coeff * * Qq"), "unknown element 'Qq'"),
    "bad_tag": (dict(pair_coeff="pair_coeff * * Cu:x"), "bad tag in 'Cu:x'"),
    "element_mismatch": (dict(artifact="light_elements"), "element mismatch"),
    "cutoff_mismatch": (dict(pair_style_extra="cutoff 6.0"), "cutoff mismatch"),
    "no_atom_map": (dict(atom_map=False), "atom_modify map array"),
    "bad_keyword": (dict(pair_style_extra="colour blue"), "Illegal pair_style ocp keyword"),
    "missing_artifact": (dict(artifact="missing"), "cannot open artifact"),
    "not_torchscript": (dict(artifact="junk"), "not a loadable TorchScript"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETUPS))
def test_bad_setup_is_a_lammps_error(lmp_ocp, artifacts, tmp_path, case):
    options, message = BAD_SETUPS[case]
    options = dict(options)
    name = options.pop("artifact", "standin")
    if name == "missing":
        artifact = tmp_path / "missing.pt"
    elif name == "junk":
        artifact = tmp_path / "junk.pt"
        artifact.write_text("not a zip")
    else:
        artifact = artifacts[name]
    atoms = structure("small_box")
    data = tmp_path / "data.lmp"
    helpers.write_lammps_data(data, atoms)
    result = run_lammps(lmp_ocp, lammps_input(data, artifact, ["Cu"], "p p p", **options), tmp_path, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "ERROR" in output and message in output, output[-2000:]
    assert "Segmentation" not in output and "terminate called" not in output
