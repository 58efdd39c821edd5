"""``export-model bench`` in process: a table row per size for both formats, markdown output, one-line errors."""

import time

import numpy as np
import pytest
import torch

from ocpdeploy.exporter.bench import BYTES_PER_MIB, COLUMNS, MISSING, _PeakRss, _reset_peak_rss, _SampledRss, bulk_structure, cubic_repeat
from ocpdeploy.exporter.cli import EXIT_FAILURE, main
from ocpdeploy.exporter.write_aoti import compiler_available

SIZES = (8, 32)
EXPECTED_ATOMS = (4, 32)  # closest 4 r^3: r = 1 and r = 2
TINY = ["--sizes", ",".join(map(str, SIZES)), "--repeats", "2", "--warmup", "1", "--threads", "1"]
PROBE_MIB = 64
PROBE_HOLD_S = 0.05  # long enough for the 1 ms sampler
RATE_RELATIVE = 1.0e-2  # atoms/s is printed with 1 decimal from the unrounded total
# A row is one call's parts (graph + model + other = total); each of the
# (up to) four cells is rounded to 3 decimals (half a microsecond each).
SUM_ABSOLUTE_MS = 2.0e-3
# How the split line says each format's graph time was taken.
SPLIT_SAYS = {
    "torchscript": "embedded scripted graph submodule",
    "onnx": "graph-only program",
    "aoti": "not timed apart",
}


def _rows(lines):
    """Table rows (column name -> cell) after the header line that lists COLUMNS."""
    header = next(i for i, line in enumerate(lines) if line.split() == list(COLUMNS))
    return [dict(zip(COLUMNS, line.split())) for line in lines[header + 1 :] if line.strip()]


def _markdown_rows(text):
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == list(COLUMNS)
    return [dict(zip(COLUMNS, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def _fail(capsys, arguments):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *arguments])
    assert exit_info.value.code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_structures_have_the_closest_cubic_repeat():
    assert [cubic_repeat(n) for n in (1, 8, 32, 100, 1000)] == [1, 1, 2, 3, 6]
    atoms = bulk_structure(100)
    assert len(atoms) == 108 and atoms.pbc.all() and set(atoms.get_tags()) == {1}
    assert (bulk_structure(100).positions == atoms.positions).all()  # seeded rattle


@pytest.mark.parametrize("meter", [_PeakRss, _SampledRss])
def test_rss_meters_see_a_transient_allocation(meter):
    if meter is _PeakRss and not _reset_peak_rss():
        pytest.skip("/proc/self/clear_refs refuses the VmHWM reset here")
    probe = meter()
    probe.start()
    block = np.ones(PROBE_MIB * BYTES_PER_MIB // 8)  # float64, pages touched
    time.sleep(PROBE_HOLD_S)
    del block
    assert probe.stop() >= 0.9 * PROBE_MIB * BYTES_PER_MIB


@pytest.mark.parametrize(
    "format", ["torchscript", "onnx", pytest.param("aoti", marks=pytest.mark.skipif(not compiler_available(), reason="no C++ compiler"))]
)
def test_bench_table_and_markdown(export_artifact, capsys, tmp_path, format):
    artifact = export_artifact("painn_tiny", format)
    markdown = tmp_path / "bench.md"
    threads = torch.get_num_threads()
    main(["bench", artifact, *TINY, "--markdown", str(markdown)])
    assert torch.get_num_threads() == threads  # --threads is restored afterwards
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert any(line.startswith("split: ") for line in lines) and any(line.startswith("memory: ") for line in lines)
    assert any(line.startswith("timing: the median call") and "graph + model + other = total" in line for line in lines)
    rows = _rows(lines)
    assert [int(row["size"]) for row in rows] == list(SIZES)
    assert [int(row["atoms"]) for row in rows] == list(EXPECTED_ATOMS)
    assert "atoms" in captured.err  # progress on stderr
    split = next(line for line in lines if line.startswith("split: "))
    assert SPLIT_SAYS[format] in split
    for row in rows:
        assert int(row["edges"]) > 0
        model, total = float(row["model_ms"]), float(row["total_ms"])
        assert total > 0
        graph = 0.0 if row["graph_ms"] == MISSING else float(row["graph_ms"])
        other = 0.0 if row["other_ms"] == MISSING else float(row["other_ms"])
        if format == "aoti":
            # The graph is built inside the package, not timed apart: model is the package's run.
            assert row["graph_ms"] == MISSING and model > 0 and other > 0
        elif format == "onnx":
            # graph: the graph-only program run apart; graph + model: the artifact's session run inside predict.
            # model alone may come out near zero or below for a tiny model (two runs, two clocks), so it is not bounded.
            assert graph > 0 and graph + model > 0 and other > 0
        else:
            assert graph > 0 and model > 0 and row["other_ms"] == MISSING
        assert graph + model + other == pytest.approx(total, rel=0, abs=SUM_ABSOLUTE_MS)
        assert float(row["atoms/s"]) == pytest.approx(int(row["atoms"]) / (total / 1000.0), rel=RATE_RELATIVE)
        assert float(row["peak_MiB"]) >= 0
    text = markdown.read_text()
    assert _markdown_rows(text) == rows
    assert text.endswith(" |\n") and not text.endswith("\n\n")  # the file ends with its last row and one newline


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--sizes", "8,x"], "--sizes: 'x' is not an integer"),
        (["--sizes", "0"], "--sizes: every size must be >= 1, got 0"),
        (["--sizes", "8,"], "--sizes: '' is not an integer"),
        (["--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_bad_arguments_give_one_line_errors(export_artifact, capsys, arguments, message):
    err = _fail(capsys, [export_artifact("painn_tiny", "torchscript"), *arguments])
    assert message in err


def test_missing_artifact(capsys, tmp_path):
    assert "artifact not found" in _fail(capsys, [str(tmp_path / "nope.onnx"), "--sizes", "8"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_cuda_without_cuda(export_artifact, capsys, format):
    err = _fail(capsys, [export_artifact("painn_tiny", format), "--device", "cuda", "--sizes", "8"])
    assert "cuda" in err.lower()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_on_cuda(export_artifact, capsys):
    main(["bench", export_artifact("painn_tiny", "torchscript"), "--device", "cuda", "--sizes", "32", "--repeats", "2"])
    out = capsys.readouterr().out
    assert "max_memory_allocated" in out
    (row,) = _rows(out.splitlines())
    assert float(row["total_ms"]) > 0 and row["peak_MiB"] != MISSING
