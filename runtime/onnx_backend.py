"""ONNX artifacts run with ONNX Runtime alone (numpy and onnxruntime; no torch): ``OnnxModel``.

The artifact's program takes the structures (positions (N,3) in the
artifact's dtype, atomic_numbers (N,) int64, cell (B,3,3), pbc (B,3) bool,
tags (N,) int64, natoms (B,) int64) and builds its neighbour graph inside,
so nothing is prepared here beyond the stacked arrays.

Runs use IO binding with ONNX Runtime's own ``OrtValue``s: on the CPU
the numpy arrays are bound in place; on CUDA they are copied to the device
once, the outputs are allocated there by ONNX Runtime, and only the
outputs (energy (B,), forces (N,3), stress (B,3,3)) come back to the host.
"""

import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np

from .backend import ProgramModel, check_threads, load_failure, parse_device
from .keys import RACE_FREE_KEY
from .metadata import ArtifactError, check_metadata, check_program_inputs, from_onnx_props

if TYPE_CHECKING:
    import onnxruntime

# ONNX Runtime session log severity (0 verbose .. 4 fatal): failures reach
# the user as exceptions, not as the runtime's own stderr log.
ORT_LOG_FATAL_ONLY = 4
# Intra-op threads for ONNX artifacts without race-free aggregation.
SAFE_ONNX_CPU_THREADS = 1
# ONNX Runtime prefixes its messages with "[ONNXRuntimeError] : <status code> : ".
ORT_ERROR_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : ")
# ONNX Runtime's status for bytes that do not parse as an ONNX protobuf (the
# file kind was sniffed as ONNX, so the file is truncated or damaged).
ORT_INVALID_PROTOBUF = "INVALID_PROTOBUF"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


class OnnxModel(ProgramModel):
    """An ONNX artifact run with ONNX Runtime (CPU or CUDA provider) and IO binding."""

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None) -> None:
        # Imported here: ``import ocpdeploy.runtime`` stays quick for hosts that never load an ONNX file.
        import onnxruntime

        self.path = path
        self.device = parse_device(device)
        check_threads(threads)
        options = onnxruntime.SessionOptions()
        # The CPU arena (ONNX Runtime's default, power-of-two extension) keeps
        # the freed intermediates, so a call reuses them instead of the kernel
        # page-faulting fresh ones in; its memory pattern (one planned block
        # per input shape, allocated beside what the arena already holds) is
        # off: it raised peak memory well above the arena's without making
        # calls faster, and sizes that change from call to call only grow the
        # arena a little before it stays (measurements: README, Memory).
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = False
        # ONNX Runtime logs a failing node over several lines on stderr before
        # raising; the raised text is kept (``InferenceError``), the log is not.
        options.log_severity_level = ORT_LOG_FATAL_ONLY
        if threads is not None:
            options.intra_op_num_threads = threads
        if self.device.type == "cuda":
            if CUDA_PROVIDER not in onnxruntime.get_available_providers():
                raise RuntimeError(f"device '{self.device}' requested but this onnxruntime has no {CUDA_PROVIDER}")
            providers: List[Any] = [(CUDA_PROVIDER, {"device_id": self._device_id}), CPU_PROVIDER]
        else:
            providers = [CPU_PROVIDER]
        self.session = self._session(onnxruntime, options, providers)
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        if not props:
            raise ArtifactError(f"{path}: ONNX model has no metadata_props; not exported by ocp-deploy")
        self.metadata = check_metadata(from_onnx_props(props), path)
        check_program_inputs(self.metadata, path)
        if self._adapt_options(options, threads):
            self.session = onnxruntime.InferenceSession(path, options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def _device_id(self) -> int:
        return self.device.index or 0

    def _session(self, onnxruntime: Any, options: Any, providers: List[Any]) -> "onnxruntime.InferenceSession":
        """The inference session, or one ``ArtifactError`` line saying why ONNX Runtime refused the file."""
        try:
            return onnxruntime.InferenceSession(self.path, options, providers=providers)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
            reason = ORT_ERROR_PREFIX.sub("", str(error).strip())
            failure = (
                "{path} is an ONNX model that ONNX Runtime cannot parse ({reason}): the file is truncated or damaged; copy or export it again"
                if ORT_INVALID_PROTOBUF in reason
                else "{path}: ONNX Runtime cannot load this ONNX model ({reason}); export it again with this version of ocp-deploy"
            )
            raise load_failure(self.path, RuntimeError(reason), failure) from None

    def _adapt_options(self, options: Any, threads: Optional[int]) -> bool:
        """Session options this artifact needs beyond the defaults; True if any changed.

        * no ``race_free_aggregation`` flag (an older export whose ScatterND
          add races with more than one CPU thread): pinned to one thread;
        * float64: graph optimisations up to ``ORT_ENABLE_BASIC`` only; the
          extended fusions compute parts of the captured backward in float32
          (measured: forces off by 4e-8 relative instead of 1e-15).
        """
        import onnxruntime

        changed = False
        if self.device.type == "cpu" and not self.metadata.get(RACE_FREE_KEY, False):
            if threads is not None and threads > SAFE_ONNX_CPU_THREADS:
                raise ValueError(f"{self.path}: threads={threads} needs an artifact with race-free aggregation; re-export it")
            options.intra_op_num_threads = SAFE_ONNX_CPU_THREADS
            changed = True
        if self.metadata["dtype"] == "float64":
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
            changed = True
        return changed

    def _run(self, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self._run_bound(self._checked(self._feeds(arrays)))

    def _run_bound(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run with IO binding: feeds (host numpy arrays, ``input_names`` order) in, host numpy outputs by name out.

        Each input is an ``OrtValue`` on the session's device: on the CPU
        it wraps the numpy array's memory (no copy), on CUDA it is a copy
        there. Outputs are allocated on that device by ONNX Runtime.
        """
        from onnxruntime import OrtValue

        binding = self.session.io_binding()
        device_type, device_id = self.device.type, self._device_id
        # Held until the run has read them: the CPU ones share the arrays' memory.
        values = {name: OrtValue.ortvalue_from_numpy(array, device_type, device_id) for name, array in feeds.items()}
        for name, value in values.items():
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, device_type, device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))
