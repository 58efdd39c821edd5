"""Running the C++ hosts of cpp_demo (md_host, LAMMPS ``pair_style ocp``) on exported artifacts.

What the LAMMPS examples, the benchmarks and the tests share: building
cpp_demo with CMake against the installed torch wheel's LibTorch, the
environment the hosts run in, LAMMPS ``atom_style atomic`` data files from
ASE ``Atoms`` (cell rotated to LAMMPS's lower-triangular form) and reading
LAMMPS output back. numpy and ASE only (torch is imported only to find
LibTorch for a build).
"""

import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

# Open MPI's launcher: Debian's LAMMPS (lmp_ocp) is built with it; a pip
# MPICH launcher may come first on PATH.
OPENMPI_MPIRUN = Path("/usr/bin/mpirun.openmpi")
# Host programs a cpp_demo build directory may hold.
HOST_PROGRAMS = ("md_host", "lmp_ocp")
# Characters of a failed command's output kept in the error.
OUTPUT_TAIL = 4000


def configure_command(source: Path, build_dir: Path, *options: str) -> List[str]:
    """CMake configure command of cpp_demo (``source``) in ``build_dir``, LibTorch from the torch wheel."""
    import torch  # only for LibTorch's CMake prefix

    return ["cmake", "-S", str(source), "-B", str(build_dir), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            "-DCMAKE_BUILD_TYPE=Release", *options]


def run_checked(command: List[str], what: str) -> None:
    """Run ``command``; RuntimeError with the output's tail when it fails."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(command[:2])}):\n{result.stdout[-OUTPUT_TAIL:]}\n"
                           f"{result.stderr[-OUTPUT_TAIL:]}")


def host_paths(build_dir: Path) -> Dict[str, Optional[Path]]:
    """md_host / lmp_ocp in a cpp_demo build directory (None when not built)."""
    return {name: (build_dir / name if (build_dir / name).exists() else None) for name in HOST_PROGRAMS}


def build_hosts(source: Path, build_dir: Path, jobs: int = 2) -> Dict[str, Optional[Path]]:
    """Configure and build cpp_demo (``source``) in ``build_dir``; paths of md_host / lmp_ocp (None if not built)."""
    run_checked(configure_command(source, build_dir), "cpp_demo configure")
    run_checked(["cmake", "--build", str(build_dir), f"-j{jobs}"], "cpp_demo build")
    return host_paths(build_dir)


def host_environment() -> Dict[str, str]:
    """Environment for the hosts: one-thread OpenMP, Open MPI allowed as root (containers)."""
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    # Open MPI singletons (lmp_ocp without mpirun) start no runtime daemon.
    env.setdefault("OMPI_MCA_ess_singleton_isolated", "1")
    return env


# ---------------------------------------------------------------------------
# LAMMPS data files.
# ---------------------------------------------------------------------------
# Cell entries below this (A) are round-off of the rotation: set to zero.
ROTATION_ROUNDOFF = 1e-12
# Wrapping tolerance (fractional) for positions on a cell face.
WRAP_EPS = 1e-9


def lammps_cell(atoms):
    """A copy of ``atoms`` rotated so the cell is LAMMPS's lower-triangular form.

    Rows a = (xprd, 0, 0), b = (xy, yprd, 0), c = (xz, yz, zprd); tilts are
    reduced into [-L/2, L/2] (same lattice) and positions wrapped along
    periodic directions.
    """
    rotated = atoms.copy()
    cell = np.asarray(atoms.get_cell())
    q, r = np.linalg.qr(cell.T)  # cell.T = q r  ->  cell = r.T q.T
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q = q * signs  # flip columns so the diagonal of r is positive
    lower = cell @ q  # (cell rotated) = r.T * signs: lower triangular
    lower[np.abs(lower) < ROTATION_ROUNDOFF] = 0.0
    rotated.set_cell(lower, scale_atoms=False)
    rotated.set_positions(atoms.get_positions() @ q)
    a, b, c = lower.copy()
    pbc = atoms.get_pbc()
    # Tilt reduction (LAMMPS refuses |xy| > xprd / 2 etc.).
    if pbc[1] and pbc[0]:
        b = b - np.round(b[0] / a[0]) * a
    if pbc[2] and pbc[1]:
        c = c - np.round(c[1] / b[1]) * b
    if pbc[2] and pbc[0]:
        c = c - np.round(c[0] / a[0]) * a
    rotated.set_cell(np.array([a, b, c]), scale_atoms=False)
    rotated.wrap(eps=WRAP_EPS)
    return rotated


def lammps_labels(atoms) -> List[str]:
    """Per-atom type labels: ``El`` or, when the structure has non-zero OCP tags, ``El:TAG``.

    ``pair_coeff * * LABEL1 LABEL2 ...`` of pair style ocp accepts both forms.
    """
    symbols = atoms.get_chemical_symbols()
    tags = atoms.get_tags() if atoms.has("tags") else np.zeros(len(atoms), dtype=int)
    if not np.any(tags):
        return symbols
    return [f"{symbol}:{int(tag)}" for symbol, tag in zip(symbols, tags)]


def write_lammps_data(path: Path, atoms, types: Optional[List[str]] = None) -> List[str]:
    """LAMMPS ``atom_style atomic`` data file; returns the type labels (type k+1 = labels[k]).

    ``atoms`` must already be in LAMMPS form (see ``lammps_cell``); atom ID
    k+1 is ASE index k. Types are the distinct ``lammps_labels`` (sorted)
    unless ``types`` is given.
    """
    from ase.data import atomic_masses, atomic_numbers

    labels = lammps_labels(atoms)
    types = list(types) if types is not None else sorted(set(labels))
    cell = np.asarray(atoms.get_cell())
    xprd, yprd, zprd = float(cell[0, 0]), float(cell[1, 1]), float(cell[2, 2])
    xy, xz, yz = float(cell[1, 0]), float(cell[2, 0]), float(cell[2, 1])
    lines = [
        "LAMMPS data file (ocp-deploy ocpdeploy.exporter.lammps_host)",
        "",
        f"{len(atoms)} atoms",
        f"{len(types)} atom types",
        "",
        f"0.0 {xprd!r} xlo xhi",
        f"0.0 {yprd!r} ylo yhi",
        f"0.0 {zprd!r} zlo zhi",
    ]
    if xy != 0.0 or xz != 0.0 or yz != 0.0:
        lines.append(f"{xy!r} {xz!r} {yz!r} xy xz yz")
    lines += ["", "Masses", ""]
    for k, label in enumerate(types, start=1):
        symbol = label.split(":")[0]
        lines.append(f"{k} {float(atomic_masses[atomic_numbers[symbol]])!r}  # {label}")
    lines += ["", "Atoms # atomic", ""]
    type_of = {label: k for k, label in enumerate(types, start=1)}
    for index, (label, position) in enumerate(zip(labels, atoms.get_positions()), start=1):
        x, y, z = (float(v) for v in position)
        lines.append(f"{index} {type_of[label]} {x!r} {y!r} {z!r}")
    Path(path).write_text("\n".join(lines) + "\n")
    return types


def lammps_boundary(atoms) -> str:
    """LAMMPS ``boundary`` arguments of ``atoms``'s pbc (``p`` periodic, ``f`` fixed)."""
    return " ".join("p" if periodic else "f" for periodic in atoms.get_pbc())


# ---------------------------------------------------------------------------
# LAMMPS output.
# ---------------------------------------------------------------------------
def parse_lammps_forces(dump: Path) -> np.ndarray:
    """Forces (N, 3) sorted by atom id from a ``dump custom ... id fx fy fz`` file (first frame)."""
    lines = Path(dump).read_text().splitlines()
    count = int(lines[lines.index("ITEM: NUMBER OF ATOMS") + 1])
    start = next(k for k, line in enumerate(lines) if line.startswith("ITEM: ATOMS")) + 1
    columns = lines[start - 1].split()[2:]
    rows = np.array([[float(v) for v in line.split()] for line in lines[start:start + count]])
    ids = rows[:, columns.index("id")].astype(int)
    forces = rows[:, [columns.index("fx"), columns.index("fy"), columns.index("fz")]]
    return forces[np.argsort(ids)]


def read_tagged_value(text: str, tag: str) -> float:
    """Value printed as ``TAG value`` in host output (last occurrence)."""
    values = [line.split()[1] for line in text.splitlines() if line.startswith(tag + " ")]
    if not values:
        raise ValueError(f"no '{tag}' line in output:\n{text[-3000:]}")
    return float(values[-1])


def thermo_rows(output: str, columns: int) -> List[List[float]]:
    """Numeric thermo rows (first column the step) with ``columns`` entries."""
    rows = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == columns and fields[0].isdigit():
            rows.append([float(value) for value in fields])
    return rows
