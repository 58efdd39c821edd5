"""``export-model --version``: the installed distribution's version, or a plain fallback outside an install."""

import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from ocpdeploy.exporter import cli

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _run(capsys, *arguments):
    code = 0
    try:
        cli.main(list(arguments))
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version_is_the_project_version(capsys):
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    code, out, err = _run(capsys, "--version")
    assert (code, err) == (0, "")
    assert out == f"export-model (ocp-deploy) {declared}\n"


def test_version_without_an_installed_distribution(capsys, monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.distribution_metadata, "version", not_installed)
    code, out, _ = _run(capsys, "--version")
    assert code == 0
    assert out == "export-model (ocp-deploy) unknown (not installed; pip install -e . records the version)\n"


@pytest.mark.parametrize("arguments", [["--version", "--format", "onnx"], ["painn.pt", "--version"]])
def test_version_needs_no_checkpoint_and_runs_no_export(capsys, arguments):
    code, out, _ = _run(capsys, *arguments)
    assert code == 0 and out.startswith("export-model (ocp-deploy) ")


def test_help_lists_version(capsys):
    _, out, _ = _run(capsys, "--help")
    assert "--version" in out
