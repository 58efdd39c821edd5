"""The opt-in glibc malloc tuning (runtime/allocator.py) in a fresh interpreter."""

import pytest
from conftest import run_python

CODE = "from ocpdeploy.runtime.allocator import keep_freed_memory; print(keep_freed_memory())"


def test_off_by_default_and_on_when_asked():
    assert run_python(CODE, {"OCPDEPLOY_KEEP_FREED_MEMORY": ""}).stdout.strip() == "False"
    result = run_python(CODE, {"OCPDEPLOY_KEEP_FREED_MEMORY": "1"})
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr


# Fill a fresh 64 MB tensor repeatedly, freeing it in between; print the
# fewest minor page faults of one fill among the last rounds. glibc serves
# such a block with mmap by default (a fresh, faulting mapping every time);
# with the tuning it comes from the heap, which after a few rounds (small
# blocks left above a freed one make it grow a few times) holds it in pages
# that are already mapped.
REUSE = """
import resource, torch
from ocpdeploy.runtime.allocator import keep_freed_memory
keep_freed_memory()
size = 16 * 1024 * 1024  # floats: 64 MB
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(size).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[6:]))
"""
PAGES_IN_64_MB = 64 * 1024 // 4


def test_freed_memory_is_reused_without_page_faults():
    if run_python(CODE, {"OCPDEPLOY_KEEP_FREED_MEMORY": "1"}).stdout.strip() != "True":
        pytest.skip("not glibc: the tuning is a no-op")
    default = run_python(REUSE, {"OCPDEPLOY_KEEP_FREED_MEMORY": ""})
    kept = run_python(REUSE, {"OCPDEPLOY_KEEP_FREED_MEMORY": "1"})
    assert default.returncode == 0 and kept.returncode == 0, default.stderr + kept.stderr
    if not _huge_pages_always():  # else a fresh mapping faults once per 2 MB, not per page
        assert int(default.stdout) > PAGES_IN_64_MB // 2
    assert int(kept.stdout) < PAGES_IN_64_MB // 20


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False
