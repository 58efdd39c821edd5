"""Checkpoint -> verified artifact: the library behind ``export-model``.

``export_checkpoint(checkpoint, output, format, dtype, forces, verify, device)``
loads the checkpoint, builds the rewrite, writes the artifact, then (unless
``verify=False``) loads it back through ``ocpdeploy.runtime`` and compares it
with the eager rewrite on every structure of the probe suite
(``probe.probe_suite``: slab, bulk, 1- and 2-atom cells, molecule, lone
atom, fragments), one by one and as one mixed batch; a wrong artifact is
deleted and ``VerificationError`` raised with the probe's name. ``device`` applies to ``aoti``
only: the package is compiled for that device type and runs only there. A package with
domain programs (``domain``) also runs them on one rank with periodic images as ghosts
(``DOMAIN_PROBES``) against the eager rewrite.
"""

import copy
import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, NoReturn, Optional, Tuple

import numpy as np
import torch
from ase import Atoms
from torch import nn

import ocpdeploy.runtime.keys as keys
from ocpdeploy.runtime import load_model
from ocpdeploy.runtime.contract import INPUT_SHAPES_KEY, PROGRAM_CONTRACT, as_metadata, model_contract
from ocpdeploy.runtime.graph_painn import PaiNNGraph

from .checkpoint import Checkpoint, CheckpointError, build_rewrite, read_checkpoint
from .deployed import DeployedModel, PhysicalModel
from .domain import PaiNNDomainModel
from .domain_aoti import DOMAIN_KEY, domain_programs, run_one_rank
from .program import build_program
from .probe import atoms_tensors, probe_atoms, probe_batch, probe_suite
from .write_aoti import write_aoti, write_aoti_programs
from .write_onnx import write_onnx
from .write_torchscript import write_torchscript

EXPORTER_VERSION = "0.1.0"
FORMATS = ("torchscript", "onnx", "aoti")
# Devices an AOTInductor package can be compiled for (it runs only there).
AOTI_DEVICES = ("cpu", "cuda")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Verification bounds on the probe (artifact vs eager rewrite) per dtype:
# (relative to |E| or max|F|, absolute floor); float64 is 1e-9 relative.
ENERGY_TOLERANCE = {"float32": (1.0e-5, 1.0e-4), "float64": (1.0e-9, 1.0e-9)}
FORCES_TOLERANCE = {"float32": (1.0e-4, 1.0e-4), "float64": (1.0e-9, 1.0e-9)}
# float32 bounds also scale with the model's own float32 noise on the probe:
# how far energy and forces move (computed in float64) when every weight and
# coordinate is perturbed by one float32 rounding (relative 2^-24). A poorly
# conditioned model (e.g. random weights: dE ~1e-4 eV per rounding on the
# probe) legitimately differs between two float32 kernels by many roundings;
# exported graphs sum in another order than eager on some CPUs (seen: 2e-3 eV,
# 1e-4 relative, on a 21-atom probe). An export bug (a lost edge, a wrong
# normaliser) moves the probe forces by >0.1 eV/A and stays refused.
FLOAT32_ROUNDING = 2.0**-24
FLOAT32_NOISE_DRAWS = 2
FLOAT32_NOISE_FACTOR = 30.0


class VerificationError(RuntimeError):
    """The written artifact disagrees with the eager rewrite."""


@dataclass
class ExportResult:
    path: str
    metadata: Dict[str, Any]
    max_energy_error: Optional[float] = None
    max_forces_error: Optional[float] = None


def graph_arguments(graph: nn.Module) -> Dict[str, Any]:
    """Constructor arguments of a graph module (stored as same-named attributes)."""
    names = [p for p in inspect.signature(type(graph).__init__).parameters if p != "self"]
    return {name: getattr(graph, name) for name in names}


def _num_elements(core: nn.Module) -> int:
    return int(core.atom_emb.embeddings.num_embeddings)


def build_metadata(checkpoint: Checkpoint, core: nn.Module, graph: nn.Module, artifact: str, dtype: str, forces: str) -> Dict[str, Any]:
    arguments = graph_arguments(graph)
    cutoffs = [float(v) for k, v in arguments.items() if k.startswith("cutoff") and v is not None]
    caps = {k: int(v) for k, v in arguments.items() if k.startswith("max_neighbors") and v is not None}
    outputs = [keys.ENERGY, keys.FORCES] + ([keys.STRESS] if forces == keys.FORCES_CONSERVATIVE else [])
    if artifact == "torchscript":
        inputs = [keys.POSITIONS, keys.ATOMIC_NUMBERS, keys.CELL, keys.PBC, keys.TAGS]
    else:
        inputs = [entry.name for entry in PROGRAM_CONTRACT]
    normalizers = checkpoint.normalizers
    return {
        "format": keys.FORMAT_NAME,
        "format_version": keys.FORMAT_VERSION,
        "artifact": artifact,
        "model_kind": checkpoint.model_name,
        "model_attributes": checkpoint.model_attributes,
        "graph": arguments,
        "cutoff": max(cutoffs),
        "max_neighbors": caps.get("max_neighbors", max(caps.values()) if caps else 0),
        "max_neighbors_all": caps,
        "forces": forces,
        "outputs": outputs,
        "dtype": dtype,
        "min_atomic_number": 1,
        "max_atomic_number": _num_elements(core),
        "units": {"energy": keys.ENERGY_UNIT, "length": keys.LENGTH_UNIT, "forces": keys.FORCES_UNIT, "stress": keys.STRESS_UNIT},
        "normalizers": {
            "energy_mean": normalizers.energy_mean,
            "energy_std": normalizers.energy_std,
            "forces_mean": normalizers.forces_mean,
            "forces_std": normalizers.forces_std,
            "baked_in": True,
        },
        "exporter_version": EXPORTER_VERSION,
        "torch_version": torch.__version__,
        "checkpoint_sha256": checkpoint.sha256,
        "checkpoint_name": os.path.basename(checkpoint.path),
        "inputs": inputs,
        **({} if artifact == "torchscript" else {INPUT_SHAPES_KEY: as_metadata(PROGRAM_CONTRACT)}),
        "edge_convention": keys.EDGE_CONVENTION,
    }


def _eager_reference(
    physical: PhysicalModel, graph: nn.Module, atoms: Atoms, dtype: torch.dtype, positions_noise: Optional[torch.Tensor] = None
) -> Dict[str, np.ndarray]:
    """Eager outputs on one structure; ``positions_noise`` (N, 3) scales each coordinate (relative), graph unchanged."""
    probe = atoms_tensors(atoms, dtype)
    natoms = torch.tensor([probe["positions"].shape[0]])
    batch = torch.zeros(probe["positions"].shape[0], dtype=torch.long)
    cell = probe["cell"].unsqueeze(0)
    prepared = graph(probe["positions"], cell, probe["pbc"].unsqueeze(0), natoms, probe["tags"])
    positions = probe["positions"]
    if positions_noise is not None:
        positions = positions * (1.0 + positions_noise.to(dtype))
    outputs = physical(positions, cell, probe["atomic_numbers"], batch, prepared)
    return {name: value.detach().double().numpy() for name, value in outputs.items()}


def float32_noise(physical: PhysicalModel, graph: nn.Module, atoms: Optional[Atoms] = None) -> Dict[str, float]:
    """The model's float32 rounding sensitivity on ``atoms`` (default: the slab probe), measured in float64.

    Returns ``{"energy": eV, "forces": eV/A}``: the largest change of E and of
    max|F| over ``FLOAT32_NOISE_DRAWS`` seeded draws that perturb every
    floating parameter, buffer and coordinate by a relative
    ``FLOAT32_ROUNDING`` (one float32 rounding).
    """
    atoms = probe_atoms() if atoms is None else atoms
    model = copy.deepcopy(physical).to(torch.float64)
    exact = _eager_reference(model, graph, atoms, torch.float64)
    generator = torch.Generator().manual_seed(0)
    originals = [tensor.detach().clone() for tensor in _floating_tensors(model)]
    energy_noise, forces_noise = 0.0, 0.0
    for _ in range(FLOAT32_NOISE_DRAWS):
        with torch.no_grad():
            for tensor, original in zip(_floating_tensors(model), originals):
                tensor.copy_(original * (1.0 + FLOAT32_ROUNDING * torch.randn(original.shape, generator=generator, dtype=original.dtype)))
        noise = torch.randn(exact[keys.FORCES].shape, generator=generator, dtype=torch.float64)
        perturbed = _eager_reference(model, graph, atoms, torch.float64, positions_noise=FLOAT32_ROUNDING * noise)
        energy_noise = max(energy_noise, float(np.abs(perturbed[keys.ENERGY] - exact[keys.ENERGY]).max()))
        forces_noise = max(forces_noise, float(np.abs(perturbed[keys.FORCES] - exact[keys.FORCES]).max()))
    return {keys.ENERGY: energy_noise, keys.FORCES: forces_noise}


def _floating_tensors(model: nn.Module):
    return [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]


def _compare(
    got: Dict[str, Any],
    expected: Dict[str, np.ndarray],
    dtype_name: str,
    force_scale: float,
    noise: Callable[[], Dict[str, float]],
) -> Tuple[float, float, float, float]:
    """(|dE|, max|dF|, energy bound, forces bound) of one structure; ``noise`` widens float32 bounds when needed.

    Forces are compared relative to ``force_scale``, the largest force of the
    model on the whole probe suite: where a structure's forces cancel by
    symmetry (a 1-atom cell: every image pulls against its mirror image) the
    rounding of the cancelling terms, not the near-zero result, sets the
    error.
    """
    energy_error = abs(got["energy"] - float(expected[keys.ENERGY][0]))
    forces_error = float(np.abs(got["forces"] - expected[keys.FORCES]).max()) if len(got["forces"]) else 0.0
    relative, absolute = ENERGY_TOLERANCE[dtype_name]
    energy_bound = relative * abs(float(expected[keys.ENERGY][0])) + absolute
    relative, absolute = FORCES_TOLERANCE[dtype_name]
    forces_bound = relative * max(force_scale, float(np.abs(expected[keys.FORCES]).max(initial=0.0))) + absolute
    exceeded = not (energy_error <= energy_bound and forces_error <= forces_bound)
    if dtype_name == "float32" and exceeded:
        # Only measured when the fixed bounds are exceeded (it costs a few float64 passes).
        measured = noise()
        energy_bound += FLOAT32_NOISE_FACTOR * measured[keys.ENERGY]
        forces_bound += FLOAT32_NOISE_FACTOR * measured[keys.FORCES]
    return energy_error, forces_error, energy_bound, forces_bound


def _refuse(path: str, message: str) -> NoReturn:
    if os.path.exists(path):
        os.remove(path)
    raise VerificationError(f"{path}: {message}; not written")


def _verify(path: str, physical: PhysicalModel, graph: nn.Module, dtype_name: str, device: str = "cpu") -> ExportResult:
    """Load the artifact back and compare it with the eager rewrite on every probe, one by one and batched."""
    dtype = DTYPES[dtype_name]
    suite = probe_suite()
    expected = {name: _eager_reference(physical, graph, atoms, dtype) for name, atoms in suite}
    force_scale = max(float(np.abs(outputs[keys.FORCES]).max(initial=0.0)) for outputs in expected.values())
    try:
        model = load_model(path, device=device)
    except Exception as error:  # noqa: BLE001 - any failure to load refuses the artifact
        _refuse(path, f"the written artifact does not load ({_first_line(error)})")
    worst_energy, worst_forces = 0.0, 0.0
    runs = [(name, [atoms]) for name, atoms in suite] + [("mixed batch", [atoms for _, atoms in probe_batch()])]
    for label, structures in runs:
        names = [label] if len(structures) == 1 else [name for name, _ in probe_batch()]
        try:
            results = model.predict_many(structures, batch_size=len(structures))
        except Exception as error:  # noqa: BLE001 - the artifact must run on every probe
            _refuse(path, f"the artifact fails on probe '{label}' ({_first_line(error)})")
        for name, atoms, got in zip(names, structures, results):
            energy_error, forces_error, energy_bound, forces_bound = _compare(
                got, expected[name], dtype_name, force_scale, lambda atoms=atoms: float32_noise(physical, graph, atoms)
            )
            if not (energy_error <= energy_bound and forces_error <= forces_bound):
                where = f"probe '{name}'" + ("" if len(structures) == 1 else " in the mixed batch")
                _refuse(
                    path,
                    f"artifact disagrees with the eager rewrite on {where} "
                    f"(|dE| {energy_error:.3g} eV vs bound {energy_bound:.3g}, max|dF| {forces_error:.3g} eV/A vs bound "
                    f"{forces_bound:.3g}; bounds include {FLOAT32_NOISE_FACTOR:g}x the model's float32 rounding noise)",
                )
            worst_energy = max(worst_energy, energy_error)
            worst_forces = max(worst_forces, forces_error)
    return ExportResult(path, model.metadata, worst_energy, worst_forces)


# Probes the domain programs run on (one rank, periodic images as ghosts):
# partial and full periodicity, and a 2-atom cell with many images.
DOMAIN_PROBES = ("slab", "bulk_tags0", "two_atoms_tags0")


def _verify_domain(path: str, physical: PhysicalModel, graph: nn.Module, dtype_name: str, device: str, record: Dict[str, Any]) -> None:
    """The package's domain programs on one rank against the eager rewrite, on ``DOMAIN_PROBES``."""
    dtype = DTYPES[dtype_name]
    suite = dict(probe_suite())
    expected = {name: _eager_reference(physical, graph, suite[name], dtype) for name in DOMAIN_PROBES}
    force_scale = max(float(np.abs(outputs[keys.FORCES]).max(initial=0.0)) for outputs in expected.values())
    for name in DOMAIN_PROBES:
        atoms = suite[name]
        try:
            energy, forces = run_one_rank(path, record, atoms, float(graph.cutoff), device)
        except Exception as error:  # noqa: BLE001 - the domain programs must run on every probe
            _refuse(path, f"the domain programs fail on probe '{name}' ({_first_line(error)})")
        got = {"energy": energy, "forces": forces.numpy()}
        energy_error, forces_error, energy_bound, forces_bound = _compare(
            got, expected[name], dtype_name, force_scale, lambda atoms=atoms: float32_noise(physical, graph, atoms)
        )
        if not (energy_error <= energy_bound and forces_error <= forces_bound):
            _refuse(
                path,
                f"the domain programs disagree with the eager rewrite on probe '{name}' (|dE| {energy_error:.3g} eV vs bound "
                f"{energy_bound:.3g}, max|dF| {forces_error:.3g} eV/A vs bound {forces_bound:.3g})",
            )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def export_checkpoint(
    checkpoint_path: str,
    output: str,
    format: str = "torchscript",
    dtype: str = "float32",
    forces: Optional[str] = None,
    verify: bool = True,
    device: str = "cpu",
    domain: bool = False,
) -> ExportResult:
    """Export one checkpoint to one artifact; see the module docstring.

    ``domain`` (``aoti``, PaiNN): the package also holds the per-layer
    domain-decomposition programs (``domain_aoti.py``) that C++ hosts run on
    several MPI ranks. TorchScript PaiNN artifacts always carry them.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    if device not in AOTI_DEVICES:
        raise ValueError(f"unknown device '{device}'; choose cpu or cuda")
    if device != "cpu" and format != "aoti":
        raise ValueError(f"--device {device} applies to --format aoti only; {format} artifacts choose their device when loaded")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device to compile the package for")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}'; choose float32 or float64")
    if domain and format != "aoti":
        why = "TorchScript PaiNN artifacts always carry the domain methods" if format == "torchscript" else "ONNX artifacts have none"
        raise ValueError(f"--domain applies to --format aoti only ({why})")
    checkpoint = read_checkpoint(checkpoint_path)
    core, graph = build_rewrite(checkpoint)
    if domain and not isinstance(graph, PaiNNGraph):
        raise ValueError(f"--domain: only PaiNN has per-layer domain programs; {checkpoint_path} is {checkpoint.model_name}, which runs on one MPI rank")
    core = core.to(DTYPES[dtype])
    core.requires_grad_(False)
    has_direct = bool(getattr(core, "direct_forces", False))
    if forces is None:
        forces = keys.FORCES_DIRECT if has_direct else keys.FORCES_GRADIENT
    if forces not in keys.FORCES_MODES:
        raise ValueError(f"unknown forces mode '{forces}'; choose one of {', '.join(keys.FORCES_MODES)}")
    if forces == keys.FORCES_DIRECT and not has_direct:
        raise CheckpointError(f"{checkpoint_path}: the model has no direct force head; use --forces gradient or conservative")
    n = checkpoint.normalizers
    physical = PhysicalModel(core, forces, n.energy_mean, n.energy_std, n.forces_mean, n.forces_std)
    metadata = build_metadata(checkpoint, core, graph, format, dtype, forces)
    if format == "torchscript":
        # PaiNN artifacts also carry the per-layer entry points of MPI domain decomposition.
        deployed_type = PaiNNDomainModel if isinstance(graph, PaiNNGraph) else DeployedModel
        deployed = deployed_type(physical, graph, metadata["min_atomic_number"], metadata["max_atomic_number"], DTYPES[dtype])
        write_torchscript(deployed, metadata, output)
    else:
        contract = model_contract(checkpoint.model_name, list(graph.input_names))
        program, example, shapes = build_program(physical, graph, contract, metadata["max_atomic_number"], torch.device(device))
        if format == "onnx":
            write_onnx(program, example, shapes, PROGRAM_CONTRACT, metadata["outputs"], metadata, output)
        elif domain:
            programs, record = domain_programs(physical, float(graph.cutoff), int(graph.max_neighbors), metadata["max_atomic_number"], torch.device(device))
            metadata[DOMAIN_KEY] = record
            write_aoti_programs(program, example, shapes, PROGRAM_CONTRACT, metadata, output, programs)
        else:
            write_aoti(program, example, shapes, PROGRAM_CONTRACT, metadata, output)
    if not verify:
        return ExportResult(output, metadata)
    result = _verify(output, physical, graph, dtype, device)
    if domain:
        _verify_domain(output, physical, graph, dtype, device, metadata[DOMAIN_KEY])
    return result
