"""``benchmarks/compare.py``'s report and options, without running a benchmark.

The main table gives each engine's call time next to its graph time alone
and the graph's share of the call, and says with which code each engine's
graph was timed. The growth table must divide each large-bulk row by the
same model and engine at the 1,008-atom bulk (never across engines or
models), and skip rows that failed; unknown structures are refused before
any export.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import compare  # noqa: E402


def _run(model, structure, engine, atoms, seconds, rss):
    return {"model": model, "structure": structure, "engine": engine, "atoms": atoms, "seconds": seconds, "peak_rss_gb": rss}


def _results(runs):
    return {"machine": "test", "engines": ["torchscript", "aoti"], "matmul_peak_gflops": 100.0, "runs": runs, "graphs": []}


def _growth_rows(markdown):
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Growth from"))
    rows = [line for line in lines[start + 1 :] if line.startswith("| ") and not line.startswith("| model")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_growth_is_relative_to_the_same_model_and_engine():
    runs = [
        _run("painn_h512", "bulk_1008", "torchscript", 1008, 5.0, 1.0),
        _run("painn_h512", "bulk_1008", "aoti", 1008, 4.0, 0.5),
        _run("gemnet_oc_base", "bulk_1008", "aoti", 1008, 50.0, 2.0),
        _run("painn_h512", "bulk_10192", "torchscript", 10192, 60.0, 4.0),
        _run("painn_h512", "bulk_10192", "aoti", 10192, 44.0, 6.0),
        _run("gemnet_oc_base", "bulk_4840", "aoti", 4840, 300.0, 9.0),
        {"model": "gemnet_oc_base", "structure": "bulk_4840", "engine": "torchscript", "failed": "killed above 20 GB RSS"},
    ]
    rows = _growth_rows(compare.render_markdown(_results(runs)))
    assert rows == [
        ["painn_h512", "bulk_10192", "torchscript", "10.1", "12.0", "4.0"],
        ["painn_h512", "bulk_10192", "aoti", "10.1", "11.0", "12.0"],
        ["gemnet_oc_base", "bulk_4840", "aoti", "4.8", "6.0", "4.5"],
    ]


MAIN_HEADER = ["model", "structure", "atoms", "engine", "time (s)", "graph (s)", "graph share", "speed-up", "peak RSS (GB)"]


def _main_rows(markdown):
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model | structure | atoms"))
    assert [cell.strip() for cell in lines[start].strip("|").split("|")] == MAIN_HEADER
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_main_table_gives_each_engines_graph_time_and_share():
    runs = [
        {**_run("painn_h512", "bulk_1008", "torchscript", 1008, 5.0, 1.0), "graph_seconds": 0.5},
        {**_run("painn_h512", "bulk_1008", "onnx", 1008, 4.0, 0.8), "graph_seconds": 1.0},
        {**_run("painn_h512", "bulk_1008", "aoti", 1008, 2.5, 0.5), "graph_seconds": 0.25},
        {"model": "gemnet_oc_base", "structure": "bulk_1008", "engine": "onnx", "failed": "killed above 20 GB RSS"},
    ]
    results = {**_results(runs), "engines": ["torchscript", "onnx", "aoti"]}
    markdown = compare.render_markdown(results)
    rows = _main_rows(markdown)
    assert [row[3:7] for row in rows[:3]] == [
        ["torchscript", "5.000", "0.500", "10%"],
        ["onnx", "4.000", "1.000", "25%"],
        ["aoti", "2.500", "0.250", "10%"],
    ]
    assert rows[3][:5] == ["gemnet_oc_base", "bulk_1008", "", "onnx", "killed above 20 GB RSS"] and len(rows[3]) == len(MAIN_HEADER)
    graph_line = next(line for line in markdown.splitlines() if line.startswith("graph: "))
    for engine in results["engines"]:
        assert f"{engine}: {compare.GRAPH_TIMING[engine]}" in graph_line
    assert "graph-only program" in compare.GRAPH_TIMING["onnx"] and "graph-only" in compare.GRAPH_TIMING["aoti"]


def test_no_growth_table_without_the_base_size():
    runs = [_run("painn_h512", "slab_81", "aoti", 81, 0.3, 0.5), _run("painn_h512", "bulk_10192", "aoti", 10192, 44.0, 6.0)]
    assert "Growth from" not in compare.render_markdown(_results(runs))


def test_unknown_structure_is_refused(capsys):
    with pytest.raises(SystemExit):
        compare.main(["--structures", "bulk_1008,bulk_999", "--engines", "torchscript"])
    err = capsys.readouterr().err
    assert "unknown structure(s) bulk_999" in err


SPIKE_BYTES = 400 * 1024**2


def test_peak_rss_sees_a_spike_made_while_holding_the_gil():
    """AOTInductor's call holds the GIL: a sampling thread saw only the RSS
    before and after it. The meter must report a freed spike made that way."""
    before = compare._rss_bytes("VmRSS")
    with compare._PeakRss() as rss:
        spike = b"\x01" * SPIKE_BYTES  # one C call, GIL held, every page touched
        del spike
    if not rss.exact:
        pytest.skip("this kernel refuses the VmHWM reset; the sampled fallback misses such spikes")
    assert rss.peak >= before + 0.9 * SPIKE_BYTES
