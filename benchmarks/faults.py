"""Per-call wall time, user and system CPU time and minor page faults of one artifact on one structure.

    python benchmarks/faults.py ARTIFACT STRUCTURE [CALLS]

STRUCTURE is one of ``compare.py``'s (slab_81, bulk_1008, bulk_4840,
bulk_10192). Loads the artifact with ``load_model`` (2 threads) and
calls ``predict`` CALLS times (default 3), printing ``getrusage`` deltas
per call: user time is the compute, system time and minor faults are the
kernel's work of mapping fresh memory in. Run it under
``OCPDEPLOY_KEEP_FREED_MEMORY=1`` or ``THP_MEM_ALLOC_ENABLE=1`` to compare.
"""

import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import structure  # noqa: E402

from ocpdeploy.runtime import load_model  # noqa: E402

THREADS = 2
GIB = 2**30


def main() -> None:
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    artifact, name = sys.argv[1], sys.argv[2]
    calls = int(sys.argv[3]) if len(sys.argv) == 4 else 3
    torch.set_num_threads(THREADS)
    atoms = structure(name)
    model = load_model(artifact, threads=THREADS)
    for call in range(calls):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        model.predict(atoms)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        print(
            f"{Path(artifact).name} {name} call {call}: wall {wall:.2f} s, user {after.ru_utime - before.ru_utime:.2f} s, "
            f"sys {after.ru_stime - before.ru_stime:.2f} s, minor faults {after.ru_minflt - before.ru_minflt}, "
            f"max RSS {after.ru_maxrss * 1024 / GIB:.2f} GB",
            flush=True,
        )


if __name__ == "__main__":
    main()
