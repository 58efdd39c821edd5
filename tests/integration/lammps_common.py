"""What the LAMMPS tests share: input files, step-0 parity, structures, and
small PaiNN artifacts whose max-neighbour cap binds (atom-order dependent).

A *runner* is ``runner(script_text, folder, check=True) -> (returncode,
output)``: lmp_ocp (Debian), the wheel's ``lmp`` with the plugin, or the
wheel's Python module; the tests are written once against it.
"""

import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from ase.build import bulk, fcc111
from ase.io import read

import cpp_helpers as helpers
from ocpdeploy.exporter.lammps_host import OPENMPI_MPIRUN, thermo_rows  # noqa: F401  (used by the test modules)

DATA = helpers.REPO_ROOT / "tests" / "data"
# float32 parity: the LAMMPS path hands the artifact a differently ordered
# edge list, so only round-off may differ.
ENERGY_RTOL = 1.0e-5
ENERGY_ATOL_PER_ATOM = 1.0e-6
FORCE_RTOL = 1.0e-5
RUNTIME_FORCE_RTOL = 5.0e-5
HOST_TIMEOUT_S = 120
# LAMMPS neighbour skin (A) for the tests.
SKIN = 1.0

Runner = Callable[..., Tuple[int, str]]


def lmp_ocp_runner(lmp_ocp: Path, ranks: int = 1) -> Runner:
    """Runner for Debian's lmp_ocp, under Open MPI's mpirun when ``ranks`` > 1."""
    def run(script: str, folder: Path, check: bool = True):
        path = folder / "in.test"
        path.write_text(script)
        command = [str(lmp_ocp), "-in", str(path), "-log", "none", "-nocite"]
        if ranks > 1:
            command = [str(OPENMPI_MPIRUN), "-np", str(ranks), "--oversubscribe"] + command
        result = subprocess.run(command, capture_output=True, text=True, timeout=HOST_TIMEOUT_S, cwd=folder,
                                env=helpers.host_environment())
        output = result.stdout + result.stderr
        if check and result.returncode != 0:
            raise AssertionError(f"lmp_ocp failed ({result.returncode}):\n{output[-6000:]}")
        return result.returncode, output
    return run

# Small PaiNN models whose max-neighbour cap binds, so the result depends on
# the atom order (fairchem keeps the source < target direction of capped
# pairs). "bulk": cutoff 8 A / 20 neighbours on fcc Cu cuts inside the third
# shell. "slab": 12 neighbours on a Cu(111) slab: a surface atom's 12 nearest
# (9 first-shell + 3 second-shell atoms of the next layer) are separated from
# the rest by the shell gaps, so the asymmetric (surface -> subsurface) pairs
# are stable under thermal motion and an NVE run stays smooth.
PAINN_SMALL = {"hidden_channels": 16, "num_layers": 2, "num_rbf": 16, "regress_forces": True,
               "direct_forces": True, "use_pbc": True, "otf_graph": True}
CAPPED_MODELS = {
    "bulk": dict(PAINN_SMALL, cutoff=8.0, max_neighbors=20),
    "slab": dict(PAINN_SMALL, cutoff=6.0, max_neighbors=12),
}
RANDOM_SEED = 0



def capped_random(name: str) -> tuple:
    """(model, attributes, seed) of the random-weight checkpoint behind ``capped_painn_artifact``."""
    return ("painn", CAPPED_MODELS[name], RANDOM_SEED)


def capped_painn_artifact(request, tmp_path_factory, name: str, forces: Optional[str] = None) -> Path:
    """A random-weight PaiNN of ``CAPPED_MODELS[name]`` exported to TorchScript (once per session)."""
    work = helpers.session_work(request, tmp_path_factory)
    return work.artifact(f"capped_{name}", forces, capped_random(name))


def capped_needs(*keys) -> Dict:
    """``SessionNeeds.random`` entries for the (name, forces) keys of ``capped_painn_artifact``."""
    return {(f"capped_{name}", forces): capped_random(name) for name, forces in keys}


def lammps_input(data: Path, artifact: Path, symbols, boundary: str, newton: str = "on", run: str = "run 0",
                 units: str = "metal", pair_style_extra: str = "", pair_coeff: str = None, atom_map: bool = True,
                 dump: Path = None, header: str = "", atom_modify: str = "") -> str:
    """An ``atom_style atomic`` input evaluating ``artifact``; prints ``OCP_ENERGY <pe>`` at the end.

    ``header`` goes first (e.g. ``plugin load ...``); ``atom_modify`` adds
    keywords to the ``atom_modify map array`` line (e.g. ``sort 5 0.0``).
    """
    lines = [
        header,
        f"units {units}",
        "atom_style atomic",
        f"atom_modify map array {atom_modify}" if atom_map else "",
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


def step0(runner: Runner, artifact: Path, atoms, folder: Path, newton: str = "on", header: str = ""):
    """(energy, forces sorted by atom ID, output) at step 0; ``atoms`` in LAMMPS form, IDs = their order."""
    data = folder / "data.lmp"
    symbols = helpers.write_lammps_data(data, atoms)  # type labels El or El:TAG
    dump = folder / "forces.dump"
    _, output = runner(lammps_input(data, artifact, symbols, helpers.lammps_boundary(atoms), newton, dump=dump,
                                    header=header), folder)
    return helpers.read_tagged_value(output, "OCP_ENERGY"), helpers.parse_lammps_forces(dump), output


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


# The case: a rattled 108-atom Cu cell, which LAMMPS's spatial sort
# reorders at setup.
REORDERED_RATTLE = 0.05
REORDERED_SEED = 1
# Slab for the NVE re-sort test: IDs shuffled so that LAMMPS's spatial order
# is far from the ID order.
SLAB_RATTLE = 0.01
SLAB_SEED = 3
SHUFFLE_SEED = 7


def reordered_bulk():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    atoms.rattle(REORDERED_RATTLE, seed=REORDERED_SEED)
    return helpers.lammps_cell(atoms)


def shuffled_slab():
    atoms = fcc111("Cu", size=(4, 4, 4), vacuum=6.0, orthogonal=True)
    atoms.pbc = (True, True, False)
    atoms.set_tags(0)  # one atom type; PaiNN ignores OCP tags
    atoms.rattle(SLAB_RATTLE, seed=SLAB_SEED)
    atoms = helpers.lammps_cell(atoms)
    return atoms[np.random.default_rng(SHUFFLE_SEED).permutation(len(atoms))]


def assert_order_matters(artifact: Path, atoms) -> None:
    """The model's energy changes when the atoms are reversed: the cap binds, so order is tested."""
    forward = helpers.python_predict(artifact, atoms)["energy"]
    reverse = helpers.python_predict(artifact, atoms[::-1])["energy"]
    assert abs(forward - reverse) > 100 * ENERGY_RTOL * abs(forward), (forward, reverse)


def local_order_ids(dump: Path) -> List[int]:
    """Atom IDs in LAMMPS's local (storage) order, from an unsorted ``dump ... id`` (first frame)."""
    lines = Path(dump).read_text().splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("ITEM: ATOMS")) + 1
    count = int(lines[lines.index("ITEM: NUMBER OF ATOMS") + 1])
    return [int(line.split()[0]) for line in lines[start:start + count]]
