"""OpenMP wait policy of the torch this runtime runs artifacts with.

torch's CPU kernels run on GNU OpenMP (``libgomp``, shipped in the torch
wheel). Its threads spin for up to 300,000 iterations at the end of every
parallel region before they sleep. When other processes want the same
cores, a spinning thread keeps a core from the thread it is waiting for,
and a model call made of many short parallel regions becomes 10-100x slower
(``benchmarks/results/threads.md``). ``OMP_WAIT_POLICY=PASSIVE`` makes
waiting threads sleep at once.

libgomp reads the variable once, when it is loaded, which happens when
torch is imported. So ``passive_openmp_wait()`` (called when
``ocpdeploy.runtime`` is imported) can only choose for a process that has
not imported torch yet: then, unless the user has set ``OMP_WAIT_POLICY``
or ``GOMP_SPINCOUNT``, it sets ``OMP_WAIT_POLICY=PASSIVE`` in
``os.environ``, which also reaches any process started from this one.
When torch is already imported nothing can change the policy of that
process; set the variable before Python starts
(``OMP_WAIT_POLICY=PASSIVE python script.py``) or import
``ocpdeploy.runtime`` before torch. ``OMP_WAIT_POLICY=ACTIVE`` keeps the
spinning (fastest on cores nobody else uses).
"""

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"
SPIN_COUNT = "GOMP_SPINCOUNT"
PASSIVE = "PASSIVE"

# What passive_openmp_wait() found (one of these), for wait_policy_status().
SET_PASSIVE = "set OMP_WAIT_POLICY=PASSIVE before torch was imported"
USER_SETTING = "left to the user's OMP_WAIT_POLICY / GOMP_SPINCOUNT"
TOO_LATE = "torch was imported first: OpenMP's default (spin, then sleep) stays"

_status = ""


def passive_openmp_wait() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` if torch is not imported yet and the user chose no policy; returns what it did."""
    global _status
    if WAIT_POLICY in os.environ or SPIN_COUNT in os.environ:
        _status = USER_SETTING
    elif "torch" in sys.modules:
        _status = TOO_LATE
    else:
        os.environ[WAIT_POLICY] = PASSIVE
        _status = SET_PASSIVE
    return _status


def wait_policy_status() -> str:
    """What the import of ``ocpdeploy.runtime`` did about the OpenMP wait policy (empty before it)."""
    return _status
