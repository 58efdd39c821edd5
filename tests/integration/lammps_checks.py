"""Checks run on every LAMMPS build (Debian lmp_ocp, the plugin in the PyPI
wheel's ``lmp`` and Python module), written against a runner (see
lammps_common): atom-ID order, re-sorts during NVE, bad setups, several ranks.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import cpp_helpers as helpers
import lammps_common as common

# NVE re-sort run: steps before sorting is switched on, steps after, sort
# interval; 1 fs steps at a low temperature keep the slab's capped graph
# fixed (see lammps_common.CAPPED_MODELS).
UNSORTED_STEPS = 10
SORTED_STEPS = 30
SORT_EVERY = 5
NVE_TEMPERATURE_K = 100.0
# Sorted and never-sorted runs feed the artifact the same atoms in the same
# order, so they agree to float32 round-off of the (identical) inputs; a
# re-sort seen by the model moves the slab's energy by ~1e-2 eV.
RESORT_ETOTAL_TOL_PER_ATOM = 1.0e-6
# Energy conservation over the run, as in test_nve_run (float32, 1 fs).
NVE_DRIFT_PER_ATOM = 5.0e-4


def check_atom_id_order(runner: common.Runner, artifact: Path, folder: Path, header: str = "") -> None:
    """Step 0 equals the Python runtime on the atoms in file order, on a cell LAMMPS reorders."""
    atoms = common.reordered_bulk()
    data = folder / "data.lmp"
    symbols = helpers.write_lammps_data(data, atoms)
    forces_dump, order_dump = folder / "forces.dump", folder / "order.dump"
    script = common.lammps_input(data, artifact, symbols, "p p p", dump=forces_dump, header=header)
    # Unsorted dump: atoms in LAMMPS's storage order.
    script = script.replace("run 0", f"dump order all custom 1 {order_dump} id\nrun 0")
    with ThreadPoolExecutor(max_workers=1) as pool:  # the Python side while LAMMPS runs
        run = pool.submit(runner, script, folder)
        common.assert_order_matters(artifact, atoms)
        reference = helpers.python_predict(artifact, atoms)
        _, output = run.result()
    ids = common.local_order_ids(order_dump)
    assert ids != sorted(ids), "LAMMPS kept the file order; the test would not test the atom order"
    energy = helpers.read_tagged_value(output, "OCP_ENERGY")
    common.assert_parity(energy, helpers.parse_lammps_forces(forces_dump), reference, len(atoms),
                         common.RUNTIME_FORCE_RTOL)


def _nve_script(data: Path, artifact: Path, resort: bool, header: str) -> str:
    run = [
        "velocity all create {0} 4928459 mom yes rot no dist gaussian".format(NVE_TEMPERATURE_K),
        "fix integrate all nve",
        "timestep 0.001",  # ps (units metal) = 1 fs
        "thermo 1",
        f"run {UNSORTED_STEPS}",
    ]
    if resort:
        run.append(f"atom_modify sort {SORT_EVERY} 0.0")  # 0.0: LAMMPS's default bin size
    run.append(f"run {SORTED_STEPS}")
    return common.lammps_input(data, artifact, ["Cu"], "p p f", run="\n".join(run), header=header,
                               atom_modify="sort 0 0.0")


def check_nve_resorts(runner: common.Runner, artifact: Path, folder: Path, header: str = "") -> None:
    """NVE: switching on `atom_modify sort 5` mid-run changes nothing the model sees.

    The first run never sorts (storage order = file order); then sorting
    starts (at the second run's setup and every 5 steps). Total energies must
    equal, step by step, a run that never sorts, and be conserved.
    """
    atoms = common.shuffled_slab()
    data = folder / "data.lmp"
    helpers.write_lammps_data(data, atoms)

    def run(resort: bool):
        run_folder = folder / ("sorted" if resort else "never_sorted")
        run_folder.mkdir()
        _, output = runner(_nve_script(data, artifact, resort, header), run_folder)
        rows = common.thermo_rows(output, 6)
        return {int(row[0]): row for row in rows}  # the run boundary repeats a step

    with ThreadPoolExecutor(max_workers=2) as pool:  # two independent runs side by side, the Python side meanwhile
        runs = pool.map(run, (True, False))
        common.assert_order_matters(artifact, atoms)
        reference = helpers.python_predict(artifact, atoms)
        results = dict(zip((True, False), runs))
    sorted_run, plain_run = results[True], results[False]
    assert sorted(sorted_run) == list(range(UNSORTED_STEPS + SORTED_STEPS + 1))
    natoms = len(atoms)
    totals = np.array([sorted_run[step][3] for step in sorted(sorted_run)])
    reference_totals = np.array([plain_run[step][3] for step in sorted(sorted_run)])
    assert np.abs(totals - reference_totals).max() / natoms <= RESORT_ETOTAL_TOL_PER_ATOM
    assert np.abs(totals - totals[0]).max() / natoms <= NVE_DRIFT_PER_ATOM
    energy_tol = common.ENERGY_RTOL * abs(reference["energy"]) + common.ENERGY_ATOL_PER_ATOM * natoms
    assert abs(sorted_run[0][1] - reference["energy"]) <= energy_tol, (sorted_run[0][1], reference["energy"])


# case -> (lammps_input options, expected message); "artifact" picks one of
# the fixtures' artifacts or a missing / junk file.
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
    "not_torchscript": (dict(artifact="junk"), "is not an ocp-deploy artifact: not a zip"),
}
# Signs of a crash instead of a LAMMPS error.
CRASH_MARKERS = ("Segmentation", "terminate called", "core dumped", "Traceback")


def assert_lammps_error(returncode: int, output: str, message: str) -> None:
    """A LAMMPS `ERROR:` line containing ``message``, a failed exit, and no crash."""
    assert returncode != 0
    error_lines = [line for line in output.splitlines() if line.startswith("ERROR:") and message in line]
    assert error_lines, output[-3000:]
    assert not any(marker in output for marker in CRASH_MARKERS), output[-3000:]


def run_bad_setup(runner: common.Runner, artifacts: dict, folder: Path, case: str, header: str = ""):
    """(returncode, output) of the input with bad setup ``case``."""
    options, _ = BAD_SETUPS[case]
    options = dict(options)
    name = options.pop("artifact", "standin")
    if name == "missing":
        artifact = folder / "missing.pt"
    elif name == "junk":
        artifact = folder / "junk.pt"
        artifact.write_text("not a zip")
    else:
        artifact = artifacts[name]
    atoms = common.structure("small_box")
    data = folder / "data.lmp"
    helpers.write_lammps_data(data, atoms)
    return runner(common.lammps_input(data, artifact, ["Cu"], "p p p", header=header, **options), folder, check=False)


def assert_bad_setup(case: str, returncode: int, output: str) -> None:
    """The run of bad setup ``case`` ended in its LAMMPS error."""
    assert_lammps_error(returncode, output, BAD_SETUPS[case][1])


def check_bad_setup(runner: common.Runner, artifacts: dict, folder: Path, case: str, header: str = "") -> None:
    assert_bad_setup(case, *run_bad_setup(runner, artifacts, folder, case, header))


# model kind -> words the several-ranks error must contain (PaiNN artifacts
# without the domain methods; current PaiNN artifacts run on several ranks).
MULTI_RANK_REASONS = {
    "painn": "re-export it with the current export-model",
    "gemnet_oc": "GemNet-OC's messages live on edges",
}


def run_multi_rank(runner: common.Runner, artifact: Path, folder: Path, header: str = ""):
    """(returncode, output) of a step-0 input under a several-ranks ``runner``."""
    atoms = common.structure("bulk_cu")
    data = folder / "data.lmp"
    helpers.write_lammps_data(data, atoms)
    return runner(common.lammps_input(data, artifact, ["Cu"], "p p p", header=header), folder, check=False)


def assert_multi_rank_error(kind: str, returncode: int, output: str) -> None:
    """More than one MPI rank: a LAMMPS error naming the reason, never a number."""
    assert_lammps_error(returncode, output, "runs on 1 MPI rank only")
    assert MULTI_RANK_REASONS[kind] in output
    assert "OCP_ENERGY" not in output


def check_multi_rank_error(runner: common.Runner, artifact: Path, kind: str, folder: Path, header: str = "") -> None:
    """More than one MPI rank: a LAMMPS error naming the reason, never a number."""
    assert_multi_rank_error(kind, *run_multi_rank(runner, artifact, folder, header))
