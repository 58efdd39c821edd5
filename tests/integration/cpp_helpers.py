"""Helpers for the C++ host tests (md_host, lmp_ocp) and examples.

* ``write_standin_artifact``: a TorchScript artifact that follows the
  ocp-deploy contract exactly (``forward``, ``forward_batch``,
  ``metadata.json``) but evaluates a smooth Morse pair potential with a cosine
  cutoff. Forces and stress come from ``torch.autograd.grad`` inside
  ``forward``, so with ``forces="conservative"`` it is a genuinely
  conservative model - the right one for energy-drift tests - and it lets the
  hosts be developed and tested without the real exporter.
* ``session_work``: the hosts (``cpp_demo`` with CMake + LibTorch from the
  torch wheel; ``lmp_ocp`` when LAMMPS is installed), the wheel's plugin and
  the exported artifacts, built / exported once per session in the
  background while the tests run.
* ``python_predict``: the Python-side reference (``ocpdeploy.runtime`` when it
  exists, else the artifact called through ``torch.jit.load``).
* ``write_lammps_data`` / ``lammps_cell`` and the hosts' build and
  environment: from ``ocpdeploy.exporter.lammps_host``, which the examples
  and benchmarks use too.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ocpdeploy.exporter import lammps_host
from ocpdeploy.exporter.lammps_host import (  # noqa: F401  (re-exported for the test modules)
    host_environment,
    lammps_boundary,
    lammps_cell,
    lammps_labels,
    parse_lammps_forces,
    read_tagged_value,
    write_lammps_data,
)
from ocpdeploy.runtime.radius_graph import radius_graph_pbc

REPO_ROOT = Path(__file__).resolve().parents[2]
CPP_SOURCE = REPO_ROOT / "cpp_demo"

FORMAT_NAME = "ocp-deploy"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"

# Morse parameters of the stand-in (copper-like: well depth eV, width 1/A,
# equilibrium distance A) and its cutoff (A).
MORSE_DEPTH = 0.3429
MORSE_ALPHA = 1.3588
MORSE_R0 = 2.866
STANDIN_CUTOFF = 5.0
# Per-element scale of the well depth, 1 + ELEMENT_DEPTH_SLOPE * Z, and per
# element reference energy ELEMENT_REFERENCE_ENERGY * Z (eV): makes the
# element mapping of the hosts matter for the result.
ELEMENT_DEPTH_SLOPE = 0.002
ELEMENT_REFERENCE_ENERGY = -0.01
STANDIN_MAX_Z = 100
# amu * (A/fs)^2 in eV (CODATA 2018): 1.66053906660e-27 kg * 1e10 m^2/s^2 / 1.602176634e-19 J.
MASS_VELOCITY_SQUARED_TO_EV = 1.66053906660e-27 * 1.0e10 / 1.602176634e-19
# Pairs closer than this (squared, A^2) are an atom and itself.
SELF_DISTANCE_SQ = 1.0e-4


class _StandInPotential(torch.nn.Module):
    """Morse pair potential behind the ocp-deploy artifact interface."""

    def __init__(self, dtype: torch.dtype, cutoff: float, min_z: int, max_z: int, conservative: bool):
        super().__init__()
        self.conservative = conservative
        self.cutoff = cutoff
        self.min_z = min_z
        self.max_z = max_z
        self.float_dtype = dtype
        self.depth = MORSE_DEPTH
        self.alpha = MORSE_ALPHA
        self.r0 = MORSE_R0
        self.self_distance_sq = SELF_DISTANCE_SQ
        numbers = torch.arange(STANDIN_MAX_Z + 1, dtype=dtype)
        self.register_buffer("depth_scale", 1.0 + ELEMENT_DEPTH_SLOPE * numbers)
        self.register_buffer("reference_energy", ELEMENT_REFERENCE_ENERGY * numbers)

    def _validate(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, tags: Tensor):
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise ValueError("positions must have shape (N, 3)")
        n = positions.shape[0]
        if atomic_numbers.dim() != 1 or atomic_numbers.shape[0] != n:
            raise ValueError("atomic_numbers must have shape (N,)")
        if tags.dim() != 1 or tags.shape[0] != n:
            raise ValueError("tags must have shape (N,)")
        if cell.dim() != 2 or cell.shape[0] != 3 or cell.shape[1] != 3:
            raise ValueError("cell must have shape (3, 3)")
        if pbc.dim() != 1 or pbc.shape[0] != 3:
            raise ValueError("pbc must have shape (3,)")
        if n > 0:
            if int(atomic_numbers.min()) < self.min_z or int(atomic_numbers.max()) > self.max_z:
                raise ValueError("atomic number outside the model's range")

    def _pair_energy(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                     edge_index: Tensor, cell_offsets: Tensor) -> Tensor:
        neighbour = edge_index[0]
        centre = edge_index[1]
        vectors = positions[neighbour] - positions[centre] + cell_offsets.to(positions.dtype) @ cell
        distance = torch.sqrt((vectors * vectors).sum(dim=1))
        switch = 0.5 * (torch.cos(math.pi * distance / self.cutoff) + 1.0)
        depth = self.depth * torch.sqrt(
            self.depth_scale[atomic_numbers[neighbour]] * self.depth_scale[atomic_numbers[centre]]
        )
        decay = torch.exp(-self.alpha * (distance - self.r0))
        pair = depth * (decay * decay - 2.0 * decay) * switch
        # Full (directed) edge list: every pair appears twice.
        return 0.5 * pair.sum() + self.reference_energy[atomic_numbers].sum()

    def _keep_within_cutoff(self, positions: Tensor, cell: Tensor, edge_index: Tensor,
                            cell_offsets: Tensor) -> Tuple[Tensor, Tensor]:
        with torch.no_grad():
            vectors = (positions[edge_index[0]] - positions[edge_index[1]]
                       + cell_offsets.to(positions.dtype) @ cell)
            distance_sq = (vectors * vectors).sum(dim=1)
            keep = (distance_sq <= self.cutoff * self.cutoff) & (distance_sq > self.self_distance_sq)
        return edge_index[:, keep], cell_offsets[keep]

    def _evaluate(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor,
                  edge_index: Tensor, cell_offsets: Tensor) -> Dict[str, Tensor]:
        positions = positions.to(self.float_dtype).detach()
        cell = cell.to(self.float_dtype).detach()
        with_stress = bool(pbc.all())
        strain = torch.zeros((3, 3), dtype=positions.dtype, device=positions.device)
        positions.requires_grad_(True)
        strain.requires_grad_(True)
        symmetric = 0.5 * (strain + strain.transpose(0, 1))
        strained_positions = positions + positions @ symmetric
        strained_cell = cell + cell @ symmetric
        energy = self._pair_energy(strained_positions, atomic_numbers, strained_cell, edge_index, cell_offsets)
        gradients = torch.autograd.grad([energy], [positions, strain])
        position_gradient = gradients[0]
        strain_gradient = gradients[1]
        out: Dict[str, Tensor] = {}
        out["energy"] = energy.detach()
        if position_gradient is None:
            out["forces"] = torch.zeros_like(positions)
        else:
            out["forces"] = -position_gradient.detach()
        if with_stress and self.conservative and strain_gradient is not None:
            volume = torch.abs(torch.linalg.det(cell))
            out["stress"] = strain_gradient.detach() / volume
        return out

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor,
                tags: Tensor) -> Dict[str, Tensor]:
        self._validate(positions, atomic_numbers, cell, pbc, tags)
        positions = positions.to(self.float_dtype)
        cell = cell.to(self.float_dtype)
        edge_index, cell_offsets = radius_graph_pbc(positions.detach(), cell, pbc, self.cutoff, 0)
        return self._evaluate(positions, atomic_numbers, cell, pbc, edge_index, cell_offsets)

    @torch.jit.export
    def forward_batch(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, tags: Tensor,
                      natoms: Tensor) -> Dict[str, Tensor]:
        """The batched entry point ``ocpdeploy.runtime`` calls: cell (B,3,3), pbc (B,3), natoms (B,)."""
        energies: List[Tensor] = []
        forces: List[Tensor] = []
        stresses: List[Tensor] = []
        first = 0
        for b in range(natoms.shape[0]):
            n = int(natoms[b])
            out = self.forward(positions[first:first + n], atomic_numbers[first:first + n], cell[b], pbc[b],
                               tags[first:first + n])
            energies.append(out["energy"])
            forces.append(out["forces"])
            if "stress" in out:
                stresses.append(out["stress"])
            else:
                stresses.append(torch.zeros((3, 3), dtype=self.float_dtype, device=positions.device))
            first += n
        result: Dict[str, Tensor] = {"energy": torch.stack(energies), "forces": torch.cat(forces, dim=0)}
        if self.conservative:
            result["stress"] = torch.stack(stresses)
        return result


def standin_metadata(*, dtype: str = "float32", forces: str = "conservative", cutoff: float = STANDIN_CUTOFF,
                     min_z: int = 1, max_z: int = STANDIN_MAX_Z) -> Dict[str, object]:
    outputs = ["energy", "forces"] + (["stress"] if forces == "conservative" else [])
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "artifact": "torchscript",
        "model_kind": "standin_morse",
        "graph": {"cutoff": cutoff, "max_neighbors": 0},
        "cutoff": cutoff,
        "max_neighbors": 0,  # no cap
        "forces": forces,
        "outputs": outputs,
        "dtype": dtype,
        "min_atomic_number": min_z,
        "max_atomic_number": max_z,
        "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"},
        "normalizers": {"baked_in": True},
        "inputs": ["positions", "atomic_numbers", "cell", "pbc", "tags"],
        "edge_convention": ("edge_index[0]=source j, edge_index[1]=target i; vector = positions[j] - positions[i]"
                            " + cell_offsets @ cell (cell rows are lattice vectors)"),
        "exporter_version": "tests.integration.cpp_helpers",
        "torch_version": torch.__version__,
        "checkpoint_sha256": "0" * 64,
    }


def write_standin_artifact(path: Path, *, dtype: str = "float32", forces: str = "conservative",
                           cutoff: float = STANDIN_CUTOFF, min_z: int = 1, max_z: int = STANDIN_MAX_Z,
                           metadata_update: Optional[dict] = None, metadata: bool = True) -> Path:
    """Script and save the stand-in; ``metadata_update`` overrides metadata keys."""
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    module = _StandInPotential(torch_dtype, cutoff, min_z, max_z, forces == "conservative")
    meta = standin_metadata(dtype=dtype, forces=forces, cutoff=cutoff, min_z=min_z, max_z=max_z)
    meta.update(metadata_update or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script in torch >= 2.10
        scripted = torch.jit.script(module)
        extra = {METADATA_FILE: json.dumps(meta)} if metadata else {}
        torch.jit.save(scripted, str(path), _extra_files=extra)
    return Path(path)


# ---------------------------------------------------------------------------
# Python reference.
# ---------------------------------------------------------------------------
def jit_predict(path: Path, atoms) -> Dict[str, np.ndarray]:
    """The artifact's ``forward`` (the entry point the C++ hosts call) from Python."""
    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    dtype = {"float32": torch.float32, "float64": torch.float64}[meta["dtype"]]
    tags = atoms.get_tags() if atoms.has("tags") else np.zeros(len(atoms), dtype=np.int64)
    out = module(
        torch.tensor(atoms.get_positions(), dtype=dtype),
        torch.tensor(atoms.get_atomic_numbers(), dtype=torch.long),
        torch.tensor(np.asarray(atoms.get_cell()), dtype=dtype),
        torch.tensor(atoms.get_pbc(), dtype=torch.bool),
        torch.tensor(tags, dtype=torch.long),
    )
    result = {"energy": float(out["energy"]), "forces": out["forces"].detach().double().numpy()}
    if "stress" in out:
        result["stress"] = out["stress"].detach().double().numpy()
    return result


def python_predict(path: Path, atoms) -> Dict[str, np.ndarray]:
    """Energy (eV) and forces (eV/A) from the Python side.

    Uses ``ocpdeploy.runtime.load_model`` when the runtime provides it (the
    real parity target), else the artifact through ``torch.jit.load``.
    """
    try:
        from ocpdeploy.runtime import load_model  # type: ignore[attr-defined]
    except ImportError:
        return jit_predict(path, atoms)
    prediction = load_model(str(path)).predict(atoms)
    return {"energy": float(prediction["energy"]), "forces": np.asarray(prediction["forces"], dtype=np.float64)}


def exporter_available() -> bool:
    """True when ``export-model`` (the real exporter) is installed."""
    if shutil.which("export-model") is None:
        return False
    try:
        import ocpdeploy.exporter.cli  # noqa: F401
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------------
# Builds and exports, once per session and in the background.
#
# The C++ tests need the hosts (md_host, lmp_ocp), the wheel's plugin and a
# few exported artifacts. ``session_work`` starts all of them when the first
# of those tests' fixtures runs: the builds in a thread (CMake; the plugin's
# build directory links the hosts' ocp_deploy_core, OCP_DEPLOY_CORE_FROM,
# so LibTorch's translation unit is compiled once), the exports in one
# Python process next to it (``ocpdeploy.exporter.export.export_checkpoint``
# with its verification, niced below the compiler). Each test waits only for
# what it uses. Test modules declare what they use as ``CPP_SESSION_NEEDS``
# (a ``SessionNeeds``); what a selected test module declares is started.
# ---------------------------------------------------------------------------
# Set to reuse one build directory across test sessions (incremental builds).
BUILD_DIR_ENV = "OCP_DEPLOY_CPP_BUILD_DIR"
PLUGIN_BUILD_DIR_ENV = "OCP_DEPLOY_PLUGIN_BUILD_DIR"
PLUGIN_NAME = "ocpplugin.so"
# Longest wait for a background build or export (s).
BACKGROUND_TIMEOUT_S = 1200
# Niceness of the export process: the compiler (on the critical path) first.
EXPORT_NICENESS = 19

ExportKey = Tuple[str, Optional[str]]


class SessionNeeds:
    """What a test module uses from the session work.

    ``exports``: (checkpoint name in tests/data/checkpoints, forces or None);
    ``random``: (name, forces or None) -> (model, model attributes, seed) of a
    random-weight checkpoint written and exported; ``plugin_headers``: LAMMPS
    include directory to build the plugin for.
    """

    def __init__(self, hosts: bool = True, exports=(), random: Optional[Dict[ExportKey, tuple]] = None,
                 plugin_headers: Optional[Path] = None):
        self.hosts = hosts
        self.exports = list(exports)
        self.random = dict(random or {})
        self.plugin_headers = plugin_headers


_checked = lammps_host.run_checked


def configure_command(build_dir: Path, *options: str) -> List[str]:
    return lammps_host.configure_command(CPP_SOURCE, build_dir, *options)


def plugin_options(headers: Path, core_from: Optional[Path]) -> List[str]:
    """CMake options of the plugin build directory (the LAMMPS headers' MPI; optionally another directory's core)."""
    options = [f"-DOCP_DEPLOY_LAMMPS_PLUGIN_HEADERS={headers}", "-DOCP_DEPLOY_BUILD_MD_HOST=OFF",
               f"-DOCP_DEPLOY_CORE_FROM={core_from or ''}"]
    return options


def build_hosts(build_dir: Path, jobs: int = 2) -> Dict[str, Optional[Path]]:
    """Configure and build cpp_demo in ``build_dir``; paths of md_host / lmp_ocp (None if not built)."""
    return lammps_host.build_hosts(CPP_SOURCE, build_dir, jobs)


_host_paths = lammps_host.host_paths


def build_plugin(build_dir: Path, headers: Path, core_from: Optional[Path] = None, jobs: int = 2) -> Path:
    """Configure cpp_demo for the plugin only and build ocpplugin.so (``core_from``: a built hosts directory)."""
    _checked(configure_command(build_dir, *plugin_options(headers, core_from)), "plugin configure")
    _checked(["cmake", "--build", str(build_dir), f"-j{jobs}"], "plugin build")
    return build_dir / PLUGIN_NAME


_EXPORT_SCRIPT = r"""
import json, os, sys, traceback
from pathlib import Path
os.nice(int(sys.argv[2]))
import torch
torch.set_num_threads(1)
from ocpdeploy.exporter.export import export_checkpoint
from ocpdeploy.exporter.random_checkpoint import write_random_checkpoint
for job in json.loads(Path(sys.argv[1]).read_text()):
    out = Path(job["out"])
    partial = out.parent / "partial" / out.name
    partial.parent.mkdir(exist_ok=True)
    try:
        if job["random"]:
            model, attributes, seed = job["random"]
            write_random_checkpoint(model, attributes, job["checkpoint"], seed=seed)
        export_checkpoint(job["checkpoint"], str(partial), forces=job["forces"])
        os.replace(partial, out)
    except Exception:
        Path(str(out) + ".error").write_text(traceback.format_exc())
"""


class ExportFailed(RuntimeError):
    pass


class SessionWork:
    """The builds and exports of one session (see ``session_work``)."""

    def __init__(self, base: Path):
        self.base = base
        host_dir = os.environ.get(BUILD_DIR_ENV)
        self.host_dir = Path(host_dir) if host_dir else base / "cpp_demo_build"
        plugin_dir = os.environ.get(PLUGIN_BUILD_DIR_ENV)
        self.plugin_dir = Path(plugin_dir) if plugin_dir else base / "ocpplugin_build"
        self.export_dir = base / "exported"
        self.export_dir.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._builder: Optional[threading.Thread] = None
        self._hosts: Optional[Dict[str, Optional[Path]]] = None
        self._plugin: Optional[Path] = None
        self._errors: Dict[str, BaseException] = {}
        self._plugin_headers: Optional[Path] = None
        self._jobs: Dict[ExportKey, dict] = {}
        self._exporter: Optional[subprocess.Popen] = None

    # -- starting ---------------------------------------------------------
    def start(self, needs: List[SessionNeeds]) -> None:
        headers = next((n.plugin_headers for n in needs if n.plugin_headers is not None), None)
        if any(n.hosts for n in needs) or headers is not None:
            self._start_builds(headers)
        jobs = []
        for n in needs:
            for name, forces in n.exports:
                jobs.append(self._job(name, forces, None))
            for (name, forces), random in n.random.items():
                jobs.append(self._job(name, forces, random))
        self._start_exports([job for job in jobs if job is not None])

    def _start_builds(self, headers: Optional[Path]) -> None:
        if self._builder is not None:
            return
        self._plugin_headers = headers
        self._builder = threading.Thread(target=self._build, name="cpp_demo builds", daemon=True)
        self._builder.start()

    def _build(self) -> None:
        """Hosts, then the plugin on the hosts' core (its configure runs during the hosts' build)."""
        headers = self._plugin_headers
        plugin_configure = None
        try:
            _checked(configure_command(self.host_dir), "cpp_demo configure")
            if headers is not None:
                plugin_configure = subprocess.Popen(
                    configure_command(self.plugin_dir, *plugin_options(headers, self.host_dir)),
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            _checked(["cmake", "--build", str(self.host_dir), "-j2"], "cpp_demo build")
            self._hosts = _host_paths(self.host_dir)
        except BaseException as error:  # reported to the tests that use the hosts
            self._errors["hosts"] = error
        if headers is None:
            return
        try:
            if plugin_configure is not None:
                output, _ = plugin_configure.communicate()
                if plugin_configure.returncode != 0:
                    raise RuntimeError(f"plugin configure failed:\n{output[-4000:]}")
            if "hosts" in self._errors:  # no core to share: the plugin's directory builds its own
                self._plugin = build_plugin(self.plugin_dir, headers)
            else:
                _checked(["cmake", "--build", str(self.plugin_dir), "-j2"], "plugin build")
                self._plugin = self.plugin_dir / PLUGIN_NAME
        except BaseException as error:
            self._errors["plugin"] = error

    def _job(self, name: str, forces: Optional[str], random: Optional[tuple]) -> Optional[dict]:
        key = (name, forces)
        if key in self._jobs:
            return None
        if random is None:
            checkpoint = REPO_ROOT / "tests" / "data" / "checkpoints" / f"{name}.pt"
        else:
            checkpoint = self.export_dir / f"random_{name}.ckpt"
        job = {"checkpoint": str(checkpoint), "forces": forces, "random": random,
               "out": str(self.export_dir / f"{name}_{forces or 'default'}.pt")}
        self._jobs[key] = job
        return job

    def _start_exports(self, jobs: List[dict]) -> None:
        if not jobs:
            return
        if self._exporter is not None and self._exporter.poll() is None:
            # One export process at a time; later jobs run in the foreground when asked for.
            for job in jobs:
                job["foreground"] = True
            return
        index = len(list(self.export_dir.glob("jobs_*.json")))
        job_file = self.export_dir / f"jobs_{index}.json"
        job_file.write_text(json.dumps([{key: job[key] for key in ("checkpoint", "forces", "random", "out")}
                                        for job in jobs]))
        self._export_log = self.export_dir / f"export_{index}.log"
        with open(self._export_log, "w") as log:
            self._exporter = subprocess.Popen(
                [sys.executable, "-c", _EXPORT_SCRIPT, str(job_file), str(EXPORT_NICENESS)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    # -- waiting ----------------------------------------------------------
    def hosts(self) -> Dict[str, Optional[Path]]:
        with self._lock:
            if self._builder is None:
                self._start_builds(None)
        self._builder.join(BACKGROUND_TIMEOUT_S)
        if "hosts" in self._errors:
            raise RuntimeError(f"cpp_demo build: {self._errors['hosts']}")
        if self._hosts is None:
            raise RuntimeError("cpp_demo build did not finish in time")
        return self._hosts

    def plugin(self, headers: Path) -> Path:
        with self._lock:
            if self._builder is None:
                self._start_builds(headers)
        self._builder.join(BACKGROUND_TIMEOUT_S)
        if self._plugin is None and "plugin" not in self._errors:
            # The builds started without the plugin: build it now on the hosts' core.
            core = None if "hosts" in self._errors else self.host_dir
            try:
                self._plugin = build_plugin(self.plugin_dir, headers, core)
            except BaseException as error:
                self._errors["plugin"] = error
        if "plugin" in self._errors:
            raise RuntimeError(f"plugin build: {self._errors['plugin']}")
        return self._plugin

    def artifact(self, name: str, forces: Optional[str] = None, random: Optional[tuple] = None) -> Path:
        """The exported artifact of checkpoint ``name`` (random weights when ``random`` is given)."""
        with self._lock:
            job = self._jobs.get((name, forces))
            if job is None:  # not declared: exported here
                job = self._job(name, forces, random)
                job["foreground"] = True
            job.setdefault("lock", threading.Lock())
        out = Path(job["out"])
        error = Path(job["out"] + ".error")
        if job.get("foreground") or self._exporter is None:
            with job.setdefault("lock", threading.Lock()):  # one export per artifact, whoever asks first
                if not out.exists():
                    self._export_now(job)
        deadline = time.monotonic() + BACKGROUND_TIMEOUT_S
        while not out.exists():
            if error.exists():
                raise ExportFailed(error.read_text()[-4000:])
            if self._exporter.poll() is not None and not out.exists() and not error.exists():
                log = self._export_log.read_text()[-4000:] if self._export_log.exists() else ""
                raise ExportFailed(f"export process exited ({self._exporter.returncode}) before {out.name}:\n{log}")
            if time.monotonic() > deadline:
                raise ExportFailed(f"{out.name}: export did not finish in {BACKGROUND_TIMEOUT_S} s")
            time.sleep(0.05)
        return out

    @staticmethod
    def _export_now(job: dict) -> None:
        from ocpdeploy.exporter.export import export_checkpoint as export
        from ocpdeploy.exporter.random_checkpoint import write_random_checkpoint

        try:
            if job["random"] and not Path(job["checkpoint"]).exists():
                model, attributes, seed = job["random"]
                write_random_checkpoint(model, attributes, job["checkpoint"], seed=seed)
            export(job["checkpoint"], job["out"], forces=job["forces"])
        except Exception as error:
            raise ExportFailed(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        """End of session: stop the export process if it still runs, let the builds finish."""
        if self._exporter is not None and self._exporter.poll() is None:
            self._exporter.terminate()
            self._exporter.wait(30)
        if self._builder is not None:
            self._builder.join(BACKGROUND_TIMEOUT_S)


_SESSION: Dict[str, SessionWork] = {}


def session_work(request, tmp_path_factory) -> SessionWork:
    """The session's ``SessionWork``; the first call starts what the selected test modules declare."""
    if "work" not in _SESSION:
        work = SessionWork(tmp_path_factory.getbasetemp())
        _SESSION["work"] = work
        request.config.add_cleanup(work.close)
        modules = {getattr(item, "module", None) for item in request.session.items}
        modules = sorted((m for m in modules if hasattr(m, "CPP_SESSION_NEEDS")), key=lambda m: m.__name__)
        needs = [module.CPP_SESSION_NEEDS for module in modules]  # in the order the modules run
        work.start(needs)
    return _SESSION["work"]


def cached_build(request, tmp_path_factory) -> Dict[str, Optional[Path]]:
    """md_host / lmp_ocp (None when not built), built once per session (shared by test_md_host and test_lammps)."""
    return session_work(request, tmp_path_factory).hosts()


def exported_artifact(request, tmp_path_factory, name: str, forces: Optional[str] = None) -> Path:
    """``tests/data/checkpoints/NAME.pt`` exported to TorchScript (``forces``: the mode or None), once per session.

    Skips when the exporter is not installed or does not support the model
    kind yet; any other export failure fails the test.
    """
    import pytest

    if not exporter_available():
        pytest.skip("export-model is not installed yet")
    try:
        return session_work(request, tmp_path_factory).artifact(name, forces)
    except ExportFailed as error:
        if "unknown model" in str(error):
            pytest.skip(f"the exporter does not support {name} yet: {str(error).strip()[-300:]}")
        pytest.fail(f"export failed for {name}: {error}")


# ---------------------------------------------------------------------------
# Independent host runs of a parametrized test, several at a time.
# ---------------------------------------------------------------------------
# Host processes at once: each spends part of its time starting up (LibTorch,
# MPI) rather than computing.
CONCURRENT_RUNS = min(8, max(2, (os.cpu_count() or 1) + 1))


class ConcurrentCases:
    """``function(case)`` for the selected cases of one parametrized test, run concurrently on first use.

    ``params`` names the test's parameters that make up a case (a tuple
    when several). Each test then takes its own case's result (or the
    exception its run raised) and makes its own assertions, so every case
    still passes or fails on its own; only the host processes overlap.
    """

    def __init__(self, request, test_name: str, params, function):
        self._function = function
        self._params = params
        self._cases = []
        for item in request.session.items:
            if (getattr(item, "originalname", None) == test_name and getattr(item, "module", None) is request.module
                    and hasattr(item, "callspec")):
                case = self._case(item.callspec.params)
                if case not in self._cases:
                    self._cases.append(case)
        self._executor = None
        self._futures = {}

    def _case(self, values):
        def hashable(value):
            return tuple(value) if isinstance(value, list) else value

        if isinstance(self._params, str):
            return hashable(values[self._params])
        return tuple(hashable(values[name]) for name in self._params)

    def __getitem__(self, case):
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=CONCURRENT_RUNS, thread_name_prefix="host runs")
            self._futures = {c: self._executor.submit(self._function, c) for c in self._cases}
        if case not in self._futures:
            return self._function(case)
        return self._futures[case].result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def max_angular_frequency(path: Path, atoms, step: float = 1.0e-3, iterations: int = 20) -> float:
    """Largest vibrational angular frequency (1/fs) of ``atoms`` under the artifact.

    Power iteration on the mass-weighted Hessian D = M^-1/2 H M^-1/2, with the
    Hessian-vector products from central differences of the forces,
    H v = -(F(x + h v) - F(x - h v)) / (2 h). D (eV/A^2/amu) times 1/103.6427
    (amu A^2/fs^2 per eV, see cpp_demo/include/ocp_deploy/units.hpp) has
    eigenvalues w^2 in 1/fs^2. Meant for structures at a (local) minimum,
    where D has no large negative eigenvalue.
    """
    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), _extra_files=extra)
    dtype = {"float32": torch.float32, "float64": torch.float64}[json.loads(extra[METADATA_FILE])["dtype"]]
    numbers = torch.tensor(atoms.get_atomic_numbers(), dtype=torch.long)
    cell = torch.tensor(np.asarray(atoms.get_cell()), dtype=dtype)
    pbc = torch.tensor(atoms.get_pbc(), dtype=torch.bool)
    tags = torch.zeros(len(atoms), dtype=torch.long)
    base = atoms.get_positions().reshape(-1)
    inverse_sqrt_mass = 1.0 / np.sqrt(np.repeat(atoms.get_masses(), 3))

    def forces(flat: np.ndarray) -> np.ndarray:
        positions = torch.tensor(flat.reshape(-1, 3), dtype=dtype)
        return module(positions, numbers, cell, pbc, tags)["forces"].detach().double().numpy().reshape(-1)

    def dynamical_product(vector: np.ndarray) -> np.ndarray:
        displacement = step * inverse_sqrt_mass * vector
        hessian_vector = -(forces(base + displacement) - forces(base - displacement)) / (2.0 * step)
        return inverse_sqrt_mass * hessian_vector / MASS_VELOCITY_SQUARED_TO_EV

    vector = np.random.default_rng(0).standard_normal(base.size)
    vector /= np.linalg.norm(vector)
    eigenvalue = 0.0
    for _ in range(iterations):
        product = dynamical_product(vector)
        eigenvalue = float(vector @ product)
        vector = product / np.linalg.norm(product)
    return math.sqrt(max(eigenvalue, 0.0))


def lammps_installed() -> bool:
    return Path("/usr/lib/x86_64-linux-gnu/cmake/LAMMPS/LAMMPSConfig.cmake").exists() or any(
        Path(p).exists() for p in ("/usr/lib/cmake/LAMMPS/LAMMPSConfig.cmake", "/usr/local/lib/cmake/LAMMPS")
    )
