"""Write an AOTInductor package (``.pt2``) of a ``StructureProgram``: ``torch.export`` + AOTInductor.

The package holds the program compiled ahead of time to native code for one
device type (``cpu``, or ``cuda`` when exported on a CUDA device); inputs
are the structures (``PROGRAM_CONTRACT``: positions, atomic_numbers, cell,
pbc, tags, natoms), outputs energy, forces [, stress]. The neighbour graph
is built inside the program by the same code the TorchScript artifacts
embed. The metadata record, with the device type it was
compiled for under ``compiled_for``, is stored JSON-encoded under
``ocpdeploy_metadata`` in the package's AOTInductor metadata, readable from
Python (``get_metadata()``) and from C++ (``AOTIModelPackageLoader::get_metadata``).

Compiler settings, each for a measured reason (torch 2.13.0, CPU):

* ``inplace_buffers=False``: with in-place buffer reuse, the compiled PaiNN
  h512 (3 or more layers) returned wrong energies and forces (33.5 eV
  became 8.9 eV on the 81-atom slab, every intermediate correct when
  returned as an output); off, it matches eager to float32 rounding. The
  verification after export would refuse such a package.
* ``cpp.dynamic_threads=True``: kernels read the OpenMP thread count when
  they run, not the exporting machine's count at compile time (a package
  compiled with one thread would otherwise add without atomics).
* ``reorder_for_peak_memory=False``: the reordering estimates buffer sizes
  from size hints, and every graph size inside the program is data-dependent
  (a fixed fallback hint). It then moved the radial projections of all PaiNN
  layers (18 (N*K, H) tensors for h512, nearly 1 GB each at 10k atoms) ahead
  of the first layer; in program order each layer's three are freed before
  the next layer's are made.
* deterministic algorithms while compiling: accumulating ``index_put``
  (``index_add_``, the sums into atoms and structures) falls back to ATen's
  serial CPU kernel instead of an atomic add, so results are bit-identical
  run to run with any number of threads, as in the TorchScript and ONNX
  artifacts.
"""

import json
import os
import shutil
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Tuple

import torch
from torch import Tensor

from ocpdeploy.runtime.contract import ContractInput
from ocpdeploy.runtime.keys import AOTI_DEVICE_KEY, AOTI_METADATA_KEY

from .shape_check import ShapeContractError, check_program_shapes

AOTI_SUFFIX = ".pt2"
INDUCTOR_CONFIGS: Dict[str, Any] = {"inplace_buffers": False, "cpp.dynamic_threads": True, "reorder_for_peak_memory": False}


class CompilerError(RuntimeError):
    """AOTInductor could not compile the model (no C++ compiler, unsupported op)."""


def compiler_available() -> bool:
    """Whether the C++ compiler AOTInductor calls on the CPU (``$CXX`` or ``g++``/``clang++``) is on PATH."""
    candidates = [os.environ.get("CXX", ""), "g++", "clang++"]
    return any(name and shutil.which(name) for name in candidates)


def write_aoti(
    program: torch.nn.Module,
    example: Tuple[Tensor, ...],
    dynamic_shapes: Tuple[Any, ...],
    contract: List[ContractInput],
    metadata: Dict[str, Any],
    path: str,
) -> str:
    """Export and compile ``program`` on ``example`` (on its device) into the package ``path``.

    The exported program is checked against ``contract`` (``shape_check.py``)
    before it is compiled.
    """
    if not path.endswith(AOTI_SUFFIX):
        raise ValueError(f"AOTInductor packages end in '{AOTI_SUFFIX}', got '{path}'")
    device = example[0].device
    if device.type == "cpu" and not compiler_available():
        raise CompilerError("--format aoti needs a C++ compiler (g++ or clang++, or $CXX) to build the package; none found")
    record = {**metadata, AOTI_DEVICE_KEY: device.type}
    configs = {**INDUCTOR_CONFIGS, "aot_inductor.metadata": {AOTI_METADATA_KEY: json.dumps(record)}}
    with warnings.catch_warnings(), _deterministic_algorithms(), torch.no_grad():
        warnings.simplefilter("ignore")
        exported = torch.export.export(program, example, dynamic_shapes=dynamic_shapes)
        check_program_shapes(exported, contract, path)
        try:
            torch._inductor.aoti_compile_and_package(exported, package_path=path, inductor_configs=configs)
        except Exception as error:  # noqa: BLE001 - inductor raises many types; one line names the stage
            first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            raise CompilerError(f"AOTInductor could not compile the model: {first}") from None
    return path


@contextmanager
def _deterministic_algorithms() -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` for the compile only; the caller's setting comes back."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def write_aoti_programs(
    program: torch.nn.Module,
    example: Tuple[Tensor, ...],
    dynamic_shapes: Tuple[Any, ...],
    contract: List[ContractInput],
    metadata: Dict[str, Any],
    path: str,
    extra_programs: List[Tuple[str, torch.nn.Module, Tuple[Tensor, ...], Tuple[Any, ...]]],
) -> str:
    """``write_aoti`` plus further named programs in the same package.

    ``program`` is the package's ``model`` (what ``aoti_load_package`` and
    the C++ hosts load by default), checked against ``contract`` as in
    ``write_aoti``; each of ``extra_programs`` (name, module, example,
    dynamic_shapes) is exported and compiled with the same settings and
    stored under its name (``AOTIModelPackageLoader(path, name)``), with
    the metadata record of ``model``.
    """
    if not path.endswith(AOTI_SUFFIX):
        raise ValueError(f"AOTInductor packages end in '{AOTI_SUFFIX}', got '{path}'")
    device = example[0].device
    if device.type == "cpu" and not compiler_available():
        raise CompilerError("--format aoti needs a C++ compiler (g++ or clang++, or $CXX) to build the package; none found")
    from torch._inductor.package import package_aoti

    record = {**metadata, AOTI_DEVICE_KEY: device.type}
    configs = {**INDUCTOR_CONFIGS, "aot_inductor.metadata": {AOTI_METADATA_KEY: json.dumps(record)}, "aot_inductor.package": True}
    files: Dict[str, Any] = {}
    stage = "model"
    with warnings.catch_warnings(), _deterministic_algorithms(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            exported = torch.export.export(program, example, dynamic_shapes=dynamic_shapes)
            check_program_shapes(exported, contract, path)
            entries = [("model", exported)]
            for name, module, module_example, shapes in extra_programs:
                stage = name
                entries.append((name, torch.export.export(module, module_example, dynamic_shapes=shapes)))
            for name, entry in entries:
                stage = name
                args, kwargs = entry.example_inputs
                files[name] = torch._inductor.aot_compile(entry.module(), args, kwargs, options=dict(configs))
            package_aoti(path, files)
        except Exception as error:  # noqa: BLE001 - inductor raises many types; one line names the stage
            if isinstance(error, ShapeContractError):
                raise
            first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            raise CompilerError(f"AOTInductor could not compile the program '{stage}': {first}") from None
    return path
