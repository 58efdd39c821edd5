"""The opt-in glibc malloc tuning (runtime/allocator.py) in a fresh interpreter."""

from conftest import run_python

CODE = "from ocpdeploy.runtime.allocator import keep_freed_memory; print(keep_freed_memory())"


def test_off_by_default_and_on_when_asked():
    assert run_python(CODE, {"OCPDEPLOY_KEEP_FREED_MEMORY": ""}).stdout.strip() == "False"
    result = run_python(CODE, {"OCPDEPLOY_KEEP_FREED_MEMORY": "1"})
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr


# Fill a fresh 64 MB tensor repeatedly, freeing it in between; print the
# minor page faults of the last fill. glibc serves such a block with mmap by
# default (a fresh, faulting mapping each time); with the tuning it comes
# from the heap, which after a few rounds (small blocks left above the freed
# one) holds it in pages that are already mapped.
REUSE = """
import resource, torch
from ocpdeploy.runtime.allocator import keep_freed_memory
keep_freed_memory()
size = 16 * 1024 * 1024  # floats: 64 MB
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(size).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_IN_64_MB = 64 * 1024 // 4


def test_freed_memory_is_reused_without_page_faults():
    default = run_python(REUSE, {"OCPDEPLOY_KEEP_FREED_MEMORY": ""})
    kept = run_python(REUSE, {"OCPDEPLOY_KEEP_FREED_MEMORY": "1"})
    assert default.returncode == 0 and kept.returncode == 0, default.stderr + kept.stderr
    assert int(default.stdout) > PAGES_IN_64_MB // 2  # a fresh mapping: one fault per page (or per huge page group)
    assert int(kept.stdout) < PAGES_IN_64_MB // 20
