"""Artifacts that need torch to run: ``TorchScriptModel`` (``.pt``) and ``AotiModel`` (``.pt2``).

This module imports torch; ``load_model`` and ``ocpdeploy.runtime`` import
it only when such an artifact is loaded (or one of these classes is
named), so the ONNX path runs where torch is not installed.

Both take the stacked structure arrays of ``backend.DeployedModel`` as
tensors on the model's device (positions and cell in the artifact's dtype,
atomic_numbers, tags and natoms int64, pbc bool) and hand their outputs
back to it as host numpy arrays.
"""

import json
from typing import Dict, Optional

import numpy as np
import torch

from .backend import DeployedModel, ProgramModel, check_threads, load_failure, parse_device
from .keys import AOTI_DEVICE_KEY, AOTI_METADATA_KEY, FORCES_DIRECT, METADATA_FILE
from .metadata import PROGRAM_INPUTS, ArtifactError, check_metadata, check_program_inputs


def torch_device(device: str) -> torch.device:
    """``"cpu"`` / ``"cuda[:k]"`` as a ``torch.device``; CUDA only where torch sees a device."""
    resolved = torch.device(str(parse_device(device)))
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but torch sees no CUDA device")
    return resolved


def _host_arrays(outputs: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """Outputs by name as host numpy arrays (their own dtype; the base class makes them float64)."""
    return {name: value.detach().to("cpu").numpy() for name, value in outputs.items()}


class TorchModel(DeployedModel):
    """A backend whose artifact runs on torch tensors on ``self.device`` (a ``torch.device``)."""

    device: torch.device

    def _tensors(self, stacked: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
        """Stacked structure arrays as tensors on the model's device, in the artifact's dtypes."""
        return {name: torch.from_numpy(array).to(self.device) for name, array in self._arrays(stacked).items()}


class TorchScriptModel(TorchModel):
    """A TorchScript artifact (``.pt``) run with ``torch.jit.load``."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        self.path = path
        self.device = torch_device(device)
        extra = {METADATA_FILE: ""}
        try:
            self.module = torch.jit.load(path, map_location=self.device, _extra_files=extra)
        except RuntimeError as error:
            raise load_failure(
                path, error, "{path}: torch.jit.load cannot read this TorchScript archive ({reason}); export it again with the installed torch"
            ) from None
        if not extra[METADATA_FILE]:
            raise ArtifactError(f"{path}: TorchScript file has no {METADATA_FILE}; not exported by ocp-deploy")
        self.metadata = check_metadata(json.loads(extra[METADATA_FILE]), path)
        self.module.eval()

    def _run(self, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        tensors = self._tensors(arrays)
        # ``forward_batch`` takes the structures in the programs' input order.
        arguments = [tensors[name] for name in PROGRAM_INPUTS]
        if self.forces_mode == FORCES_DIRECT:
            with torch.no_grad():
                return _host_arrays(self.module.forward_batch(*arguments))
        return _host_arrays(self.module.forward_batch(*arguments))


class AotiModel(ProgramModel, TorchModel):
    """An AOTInductor package (``.pt2``) run with ``torch._inductor.aoti_load_package``.

    The package runs only on the device type it was compiled for
    (metadata ``compiled_for``); the OpenMP thread count is read when it
    runs (``threads`` sets torch's, which the package's kernels use).
    """

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None) -> None:
        self.path = path
        self.device = torch_device(device)
        check_threads(threads)
        if threads is not None:
            torch.set_num_threads(threads)
        from torch._inductor import aoti_load_package  # slow to import: only when a package is loaded

        try:
            package = aoti_load_package(path, device_index=self.device.index if self.device.index is not None else -1)
            raw = package.get_metadata()
        except Exception as error:  # noqa: BLE001 - the loader raises RuntimeError and others
            raise load_failure(
                path, error, "{path}: not a loadable AOTInductor package ({reason}); export it again with the installed torch"
            ) from None
        if AOTI_METADATA_KEY not in raw:
            raise ArtifactError(f"{path}: AOTInductor package has no {AOTI_METADATA_KEY}; not exported by ocp-deploy")
        self.metadata = check_metadata(json.loads(raw[AOTI_METADATA_KEY]), path)
        compiled_for = self.metadata.get(AOTI_DEVICE_KEY)
        if compiled_for != self.device.type:
            raise ArtifactError(
                f"{path}: this package was compiled for {compiled_for}, not {self.device.type}; "
                f"re-export it with --format aoti --device {self.device.type}"
            )
        check_program_inputs(self.metadata, path)
        self.package = package
        self.input_names = list(self.metadata["inputs"])
        self.output_names = list(self.metadata["outputs"])

    def _run(self, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        feeds = self._checked(self._feeds(arrays))
        tensors = {name: torch.from_numpy(array).to(self.device) for name, array in feeds.items()}
        return _host_arrays(self._run_package(tensors))

    def _run_package(self, feeds: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The compiled model on the feeds (in ``input_names`` order); outputs by name."""
        with torch.no_grad():
            outputs = self.package(*feeds.values())
        return dict(zip(self.output_names, outputs))
