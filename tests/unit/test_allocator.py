"""The opt-in glibc malloc tuning (runtime/allocator.py) in a fresh interpreter."""

from conftest import run_python

CODE = "from ocpdeploy.runtime.allocator import keep_freed_memory; print(keep_freed_memory())"


def test_off_by_default_and_on_when_asked():
    assert run_python(CODE, {"OCPDEPLOY_KEEP_FREED_MEMORY": ""}).stdout.strip() == "False"
    result = run_python(CODE, {"OCPDEPLOY_KEEP_FREED_MEMORY": "1"})
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr
