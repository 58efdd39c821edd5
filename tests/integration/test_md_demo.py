"""examples/md_demo.sh, md_host's NVE verdict and the OpenMP wait policy of the hosts and the runtime.

* The demo's default setup (its own smooth PaiNN checkpoint, fcc Cu, 0.5 fs)
  conserves energy in md_host and lmp_ocp, and the old setup (the
  ``painn_tiny`` test checkpoint on the Cu slab: cap-bound, steep random
  weights, 1 fs) is reported as not conserving it. The drift is recomputed
  here from the printed energies, independently of the hosts' own verdict.
* md_host's verdict follows ``--drift-tolerance``.
* The OpenMP wait policy is read back from libgomp itself
  (``OMP_DISPLAY_ENV=VERBOSE`` makes it print the spin count it uses when
  it is loaded): 0 for md_host, lmp_ocp and a Python process that imports
  ``ocpdeploy.runtime`` before torch when nothing is set; a user's setting
  is kept; torch imported first keeps libgomp's default.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

import cpp_helpers as helpers  # tests/integration is on sys.path (pytest rootdir-relative import)

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake g++)")

DEMO = helpers.REPO_ROOT / "examples" / "md_demo.sh"
DATA = helpers.REPO_ROOT / "tests" / "data"
CPP_SESSION_NEEDS = helpers.SessionNeeds()
DEMO_TIMEOUT_S = 900
HOST_TIMEOUT_S = 120
TOLERANCE = 1.0e-3  # eV/atom/ps: the demo's and md_host's default
# libgomp's spin counts (iterations a waiting thread spins before it sleeps):
# OMP_WAIT_POLICY=PASSIVE, unset, ACTIVE (GCC's libgomp manual, GOMP_SPINCOUNT).
SPIN_PASSIVE = 0
SPIN_DEFAULT = 300000
SPIN_ACTIVE = 30000000000
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@pytest.fixture(scope="module")
def hosts(request, tmp_path_factory) -> Dict[str, Optional[Path]]:
    return helpers.cached_build(request, tmp_path_factory)


def environment(**extra: str) -> Dict[str, str]:
    """The hosts' test environment without any wait-policy setting, plus ``extra``."""
    env = {key: value for key, value in helpers.host_environment().items() if key not in WAIT_VARIABLES}
    env.update(extra)
    return env


def run_demo(hosts, out: Path, *args: str, **settings: str) -> str:
    env = environment(OUT=str(out), BUILD=str(hosts["md_host"].parent), **settings)
    result = subprocess.run(["bash", str(DEMO), *args], capture_output=True, text=True, env=env,
                            timeout=DEMO_TIMEOUT_S)
    assert result.returncode == 0, f"md_demo.sh failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def md_host_totals(output: str) -> np.ndarray:
    """(time fs, E_tot eV) rows of md_host's energy table."""
    header = output.index("E_tot_eV")
    rows = []
    for line in output[header:].splitlines()[1:]:
        fields = line.split()
        if len(fields) != 7 or not fields[0].isdigit():
            break
        rows.append((float(fields[1]), float(fields[4])))
    return np.array(rows)


def lammps_totals(log: Path) -> np.ndarray:
    """(time ps, TotEng eV) rows of the thermo table of a LAMMPS log."""
    rows, columns = [], None
    for line in log.read_text().splitlines():
        fields = line.split()
        if fields[:1] == ["Step"]:
            columns = fields
        elif line.startswith("Loop time"):
            columns = None
        elif columns and len(fields) == len(columns):
            rows.append((float(fields[columns.index("Time")]), float(fields[columns.index("TotEng")])))
    return np.array(rows)


def slope_per_atom_per_ps(rows: np.ndarray, natoms: int, time_in_fs: bool) -> float:
    time_ps = rows[:, 0] / 1000.0 if time_in_fs else rows[:, 0]
    return float(np.polyfit(time_ps, rows[:, 1], 1)[0] / natoms)


def test_demo_default_conserves_energy(hosts, tmp_path):
    output = run_demo(hosts, tmp_path, STEPS="100")
    assert "does not bind" in output and "binds:" not in output
    assert "nve_verdict conserved" in output
    natoms = 32
    totals = md_host_totals(output)
    assert len(totals) >= 20
    # Independent of md_host's arithmetic: the printed total energy drifts by
    # less than the tolerance and strays by far less than k_B T per atom
    # (0.026 eV at 300 K).
    assert abs(slope_per_atom_per_ps(totals, natoms, time_in_fs=True)) < TOLERANCE
    assert np.abs(totals[:, 1] - totals[0, 1]).max() / natoms < 1.0e-4
    if hosts.get("lmp_ocp") is not None:
        assert "lmp_ocp nve_verdict conserved" in output
        rows = lammps_totals(tmp_path / "lammps.log")
        assert len(rows) == 11  # thermo every 10 steps, 100 steps
        assert abs(slope_per_atom_per_ps(rows, natoms, time_in_fs=False)) < TOLERANCE


def test_demo_reports_the_cap_bound_random_setup(hosts, tmp_path):
    """painn_tiny (cap 12, random weights with noise) on the slab: the cap binds, E_tot runs away, NOT conserved."""
    output = run_demo(hosts, tmp_path, str(DATA / "checkpoints" / "painn_tiny.pt"),
                      str(DATA / "structures" / "v1.extxyz"), STEPS="40", DT="1.0")
    assert "max_neighbors 12:" in output and "the cap binds" in output
    assert "nve_verdict NOT conserved" in output
    totals = md_host_totals(output)
    assert abs(slope_per_atom_per_ps(totals, 29, time_in_fs=True)) > 10 * TOLERANCE


@pytest.fixture(scope="module")
def standin_cu(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verdict")
    artifact = helpers.write_standin_artifact(folder / "standin64.pt", dtype="float64")
    structure = folder / "cu32.extxyz"
    write(structure, bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)))
    return artifact, structure


def run_md_host(hosts, artifact: Path, structure: Path, *args, env: Optional[Dict[str, str]] = None,
                check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(hosts["md_host"]), str(artifact), str(structure), *map(str, args)],
                            capture_output=True, text=True, env=env or environment(), timeout=HOST_TIMEOUT_S)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_verdict_follows_the_tolerance(hosts, standin_cu):
    """The same run judged against two tolerances on either side of its measured drift."""
    artifact, structure = standin_cu
    result = run_md_host(hosts, artifact, structure, "--steps", 40, "--threads", 1)
    drift = abs(helpers.read_tagged_value(result.stdout, "nve_drift_eV_per_atom_per_ps"))
    assert drift < TOLERANCE and "nve_verdict conserved" in result.stdout  # default tolerance
    assert drift > 0.0
    strict = run_md_host(hosts, artifact, structure, "--steps", 40, "--threads", 1, "--drift-tolerance", drift / 2)
    assert "nve_verdict NOT conserved" in strict.stdout
    bad = run_md_host(hosts, artifact, structure, "--drift-tolerance", 0, check=False)
    assert bad.returncode == 2 and "--drift-tolerance must be positive" in bad.stderr


def libgomp_spin_counts(stderr: str) -> List[int]:
    """GOMP_SPINCOUNT of every libgomp start-up report (OMP_DISPLAY_ENV=VERBOSE), in order."""
    return [int(value) for value in re.findall(r"GOMP_SPINCOUNT = '(\d+)'", stderr)]


@pytest.mark.parametrize("setting,spin,reported", [
    ({}, SPIN_PASSIVE, "OMP_WAIT_POLICY=PASSIVE"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, SPIN_ACTIVE, "OMP_WAIT_POLICY=ACTIVE"),
    ({"GOMP_SPINCOUNT": "1000"}, 1000, "GOMP_SPINCOUNT=1000"),
])
def test_md_host_wait_policy(hosts, standin_cu, setting, spin, reported):
    artifact, structure = standin_cu
    result = run_md_host(hosts, artifact, structure, "--steps", 1,
                         env=environment(OMP_DISPLAY_ENV="VERBOSE", **setting))
    counts = libgomp_spin_counts(result.stderr)
    # Nothing set: libgomp starts with its default, md_host executes itself
    # again with the policy, and the second start reads it.
    assert counts == ([SPIN_DEFAULT, spin] if not setting else [spin]), result.stderr
    assert f"openmp_wait: {reported}" in result.stdout


def test_lmp_ocp_wait_policy(hosts, tmp_path):
    if hosts.get("lmp_ocp") is None:
        pytest.skip("lmp_ocp is not built (apt-get install lammps liblammps-dev)")
    script = tmp_path / "in.empty"
    script.write_text("print done\n")
    result = subprocess.run([str(hosts["lmp_ocp"]), "-in", str(script), "-log", "none", "-nocite"],
                            capture_output=True, text=True, env=environment(OMP_DISPLAY_ENV="VERBOSE"),
                            timeout=HOST_TIMEOUT_S, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert libgomp_spin_counts(result.stderr + result.stdout) == [SPIN_DEFAULT, SPIN_PASSIVE]


PYTHON_ORDER = {
    "runtime_first": "import ocpdeploy.runtime as r; import torch",
    "torch_first": "import torch; import ocpdeploy.runtime as r",
}


@pytest.mark.parametrize("order,setting,spin,status", [
    ("runtime_first", {}, SPIN_PASSIVE, "SET_PASSIVE"),
    ("torch_first", {}, SPIN_DEFAULT, "TOO_LATE"),
    ("runtime_first", {"OMP_WAIT_POLICY": "ACTIVE"}, SPIN_ACTIVE, "USER_SETTING"),
])
def test_python_runtime_wait_policy(order, setting, spin, status):
    env = {key: value for key, value in os.environ.items() if key not in WAIT_VARIABLES}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **setting)
    code = (f"{PYTHON_ORDER[order]}; torch.ones(1)\n"
            f"from ocpdeploy.runtime import threads\n"
            f"print(threads.wait_policy_status() == threads.{status})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=HOST_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert libgomp_spin_counts(result.stderr) == [spin]
