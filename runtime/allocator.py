"""glibc malloc settings for model calls: freed memory reused instead of page-faulted in again.

One energy+forces call allocates and frees many tensors: chunks of a few MB
in the CPU edge loops, and per-edge messages or padded quadruplets of
hundreds of MB. With glibc's defaults both are page-faulted and zero-filled
again on every call:

* blocks above the mmap threshold (dynamic, at most 32 MB) get a fresh
  ``mmap`` each and are ``munmap``-ed on free;
* the heap is trimmed whenever more than twice that threshold is free at its
  top, which a loop's working set of a few 4 MB chunks passes at the end of
  every chunk (measured in a fresh interpreter: 6 x 4 MB blocks allocated
  and freed per round fault 6,100 pages a round by default, 0 with the
  bounded setting below; the dynamic thresholds depend on what the process
  allocated before, so not every process sees the default side).

``tune_malloc()`` applies, once per process, the setting named by the
environment variable ``OCPDEPLOY_KEEP_FREED_MEMORY``:

* unset (default), **bounded**: mmap threshold fixed at 32 MB (glibc's own
  largest dynamic value) and trim threshold 128 MB. Small blocks stay in the
  heap and at most 128 MB of free heap is kept; large blocks are still
  returned to the system, so the heap cannot fragment around them. On small
  structures this removes the page faults of every call (tens of thousands
  with glibc's defaults) and makes calls faster; large ones are unchanged
  (README, Memory on the CPU).
* ``1``, **keep**: ``M_MMAP_MAX = 0`` (every block from the heap) and a trim
  threshold of 2 GB, so after the first call nothing below 2 GB is faulted
  in again, which makes large-cell calls much faster. The process keeps its
  peak heap, and a model variant that allocated padded per-edge tensors
  fragmented the heap to ten times its working set: opt-in.
* ``0``, **none**: malloc is left as it is.

A no-op where the C library is not glibc. Applied by ``load_model``. C++
hosts get the same from their environment: bounded
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728``, keep
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``.
"""

import ctypes
import ctypes.util
import os
from typing import Dict, List, Optional, Tuple

ENVIRONMENT_SWITCH = "OCPDEPLOY_KEEP_FREED_MEMORY"
BOUNDED = "bounded"
KEEP = "keep"
NONE = "none"
# Environment value -> setting.
SETTINGS_BY_VALUE: Dict[str, str] = {"": BOUNDED, "1": KEEP, "0": NONE}

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

MB = 1024 * 1024
# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the dynamic threshold never passes it.
BOUNDED_MMAP_THRESHOLD = 32 * MB
BOUNDED_TRIM_THRESHOLD = 128 * MB
# The largest int mallopt accepts: freed memory below 2 GB stays in the heap.
# Larger free blocks are still returned (GemNet-OC's quadruplet weights on
# thousands of atoms, page-faulted in again on every call). -1 (SIZE_MAX in
# glibc: never trim) removed those faults too, but the heap then fragmented
# past the machine's memory and a call that fits with the default allocator
# was killed; so not that.
NEVER_TRIM = 2**31 - 1
NO_MMAP = 0

# Setting -> mallopt (parameter, value) calls.
MALLOPT_CALLS: Dict[str, List[Tuple[int, int]]] = {
    BOUNDED: [(M_MMAP_THRESHOLD, BOUNDED_MMAP_THRESHOLD), (M_TRIM_THRESHOLD, BOUNDED_TRIM_THRESHOLD)],
    KEEP: [(M_MMAP_MAX, NO_MMAP), (M_TRIM_THRESHOLD, NEVER_TRIM)],
    NONE: [],
}

_applied: Optional[str] = None


def requested_setting() -> str:
    """The setting the environment asks for; ValueError on a value other than unset, 0 or 1."""
    value = os.environ.get(ENVIRONMENT_SWITCH, "").strip()
    if value not in SETTINGS_BY_VALUE:
        raise ValueError(f"{ENVIRONMENT_SWITCH}={value!r}: expected 1 (keep freed memory), 0 (leave malloc alone) or unset")
    return SETTINGS_BY_VALUE[value]


def tune_malloc() -> str:
    """Apply the requested setting (once per process); returns the one in effect.

    ``"none"`` where nothing was changed: asked for, or not glibc. A later
    call returns the first call's result whatever the environment says then.
    """
    global _applied
    if _applied is not None:
        return _applied
    setting = requested_setting()
    calls = MALLOPT_CALLS[setting]
    mallopt = _glibc_mallopt() if calls else None
    if mallopt is None or not all(mallopt(parameter, value) for parameter, value in calls):
        setting = NONE
    _applied = setting
    return setting


def _glibc_mallopt():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
