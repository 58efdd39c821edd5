"""TorchScript vs torch.jit.freeze vs torch.export + AOTInductor, side by side in one run.

For the published PaiNN h512 configuration (random weights, direct forces):
exports a TorchScript artifact, freezes it (``torch.jit.freeze``), and
compiles the same model with ``torch.export`` + AOTInductor (``export-model
--format aoti``: a ``.pt2`` package, the prepared graph as inputs, as in the
ONNX artifact). Prints the
export/compile time, the latency of each call (graph construction included;
the first calls of TorchScript are its profiling runs), the median of the
calls after the warm-up, the ratio to TorchScript, and the largest energy and
force differences to TorchScript.

    python benchmarks/formats.py [--structures slab_81,bulk_1008] [--threads 2] [--calls 5]

AOTInductor needs a C++ compiler at export time (g++ here).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any, Dict, List

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from compare import structure  # noqa: E402

from ocpdeploy.exporter.export import export_checkpoint  # noqa: E402
from ocpdeploy.exporter.random_checkpoint import PUBLISHED, write_random_checkpoint  # noqa: E402
from ocpdeploy.runtime import keys, load_model  # noqa: E402
from ocpdeploy.runtime.structures import atoms_to_arrays, stack_structures  # noqa: E402

WARM_UP_CALLS = 2  # TorchScript's profiling executor optimises after these


def compile_aoti(checkpoint: str, package: str):
    """``export-model --format aoti`` (verification included); returns (loaded model, seconds)."""
    start = time.perf_counter()
    export_checkpoint(checkpoint, package, format="aoti")
    return load_model(package), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", default="slab_81,bulk_1008")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ocp-deploy-formats-"))
    checkpoint = str(work / "painn_h512.pt")
    write_random_checkpoint(*PUBLISHED["painn_h512"], checkpoint, seed=0, noise=0.0)

    start = time.perf_counter()
    export_checkpoint(checkpoint, str(work / "painn_h512_ts.pt"), format="torchscript")
    print(f"TorchScript export (with verification): {time.perf_counter() - start:.1f} s")
    scripted = load_model(str(work / "painn_h512_ts.pt"))
    start = time.perf_counter()
    frozen = torch.jit.freeze(scripted.module.eval(), preserved_attrs=["forward_batch"])
    print(f"torch.jit.freeze: {time.perf_counter() - start:.1f} s")
    cases = {}
    for name in args.structures.split(","):
        atoms = structure(name)
        cases[name] = (len(atoms), scripted._tensors(stack_structures([atoms_to_arrays(atoms)])))

    def torchscript_call(module, tensors):
        arguments = [tensors[k] for k in ("positions", "atomic_numbers", "cell", "pbc", "tags", "natoms")]
        outputs = module.forward_batch(*arguments)
        return outputs[keys.ENERGY], outputs[keys.FORCES]

    times: Dict[str, Dict[str, List[float]]] = {name: {} for name in cases}
    outputs: Dict[str, Dict[str, Any]] = {name: {} for name in cases}

    def measure(label: str, call) -> None:
        # One engine after the other, not interleaved: interleaved calls share
        # the allocator's heap and fragment it for each other.
        with torch.no_grad():
            for name, (_, tensors) in cases.items():
                times[name][label] = []
                for _ in range(args.calls):
                    start = time.perf_counter()
                    outputs[name][label] = call(tensors)
                    times[name][label].append(time.perf_counter() - start)

    measure("torchscript", lambda tensors: torchscript_call(scripted.module, tensors))
    measure("torchscript frozen", lambda tensors: torchscript_call(frozen, tensors))
    # Compiled last: Inductor's compile leaves state (worker pools) that slows what runs after it.
    packaged, seconds = compile_aoti(checkpoint, str(work / "painn_h512.pt2"))
    print(f"torch.export + AOTInductor compile (export-model --format aoti, with verification): {seconds:.1f} s")

    def aoti_call(tensors):
        outputs = packaged._run(tensors)
        return outputs[keys.ENERGY], outputs[keys.FORCES]

    measure("aoti", aoti_call)

    for name, (num_atoms, _) in cases.items():
        reference = median(times[name]["torchscript"][WARM_UP_CALLS:])
        print(f"\n{name} ({num_atoms} atoms), {args.threads} threads")
        print("| engine | calls (s) | median after warm-up (s) | vs TorchScript | max abs dE (eV) | max abs dF (eV/A) |")
        print("|---|---|---|---|---|---|")
        for label, calls in times[name].items():
            steady = median(calls[WARM_UP_CALLS:])
            got, base = outputs[name][label], outputs[name]["torchscript"]
            energy_error = abs(float(got[0][0]) - float(base[0][0]))
            forces_error = float(np.abs(got[1].numpy() - base[1].numpy()).max())
            listed = " ".join(f"{t:.2f}" for t in calls)
            print(f"| {label} | {listed} | {steady:.3f} | {reference / steady:.2f}x | {energy_error:.2g} | {forces_error:.2g} |")


if __name__ == "__main__":
    main()
