"""Keep freed memory in the process heap (glibc malloc) between model calls.

One energy+forces call of a large model allocates and frees tensors of
hundreds of MB (per-edge messages, padded quadruplets). glibc serves every
block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
returns it with ``munmap`` on free, so each call page-faults and zero-fills
all of that memory again: millions of page faults per call, measured as a
large part of the reference's time. ``keep_freed_memory()`` sets
``M_MMAP_MAX = 0`` (every block from the heap) and a trim threshold that
never shrinks it, so after the first call the pages stay mapped and are
reused. The price: the process keeps its peak heap (RSS does not drop
between calls), which is what an inference or MD process wants anyway.

Opt-in: applied once by ``load_model`` when the environment sets
``OCPDEPLOY_KEEP_FREED_MEMORY=1``; a no-op where the C library is not glibc.
Measured (PaiNN h512, 1,008-atom bulk, TorchScript, 2 threads): 8.5 s ->
5.2 s per call at the same peak RSS; but with a variant that allocated
padded (N, K, 3H) tensors the heap grew to 17 GB instead of 1.7 GB
(fragmentation with nothing returned), hence not the default.
C++ hosts get the same with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``
in their environment.
"""

import ctypes
import ctypes.util
import os

ENVIRONMENT_SWITCH = "OCPDEPLOY_KEEP_FREED_MEMORY"
# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# The largest int mallopt accepts: freed memory below 2 GB stays in the heap.
# Larger free blocks are still returned (e.g. GemNet-OC's 4.5 GB quadruplet
# weights at 4,840 atoms, page-faulted in again on every call). -1 (SIZE_MAX
# in glibc: never trim) removed those faults (the shared bases there: 26 s
# -> 11-14 s from the second call), but the heap then fragmented past the
# machine's 24 GB and a TorchScript call was OOM-killed, where it needs
# 10.8 GB with the default allocator; so not that.
NEVER_TRIM = 2**31 - 1
NO_MMAP = 0

_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc malloc as described above (once per process); True if it is in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENVIRONMENT_SWITCH, "0") != "1":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(M_MMAP_MAX, NO_MMAP)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    return _applied
