"""``export-model bench``'s rows: one measured call per size whose columns add up, and its markdown file."""

import pytest

from ocpdeploy.exporter.bench import COLUMNS, MISSING, SizeResult, format_markdown, format_table, median_call

MS = 1.0e-3
# (total, graph, model, edges) of five timed calls, in seconds. Column-wise
# medians would be total 11, graph 2, model 5 (other 4): a row of parts no
# call had. The call with the median total is the second.
SAMPLES = [(10 * MS, 1 * MS, 8 * MS, 40), (11 * MS, 5 * MS, 5 * MS, 40), (12 * MS, 2 * MS, 2 * MS, 40), (30 * MS, 2 * MS, 27 * MS, 40), (9 * MS, 1 * MS, 1 * MS, 40)]


def test_median_call_is_one_call_with_its_own_parts():
    total, graph, model, other, edges = median_call(SAMPLES)
    assert (total, graph, model, edges) == (11 * MS, 5 * MS, 5 * MS, 40)
    assert other == pytest.approx(1 * MS)
    assert graph + model + other == pytest.approx(total)


def test_median_call_of_an_even_count_is_the_faster_middle_call():
    total, graph, model, other, _ = median_call(SAMPLES[:4])  # totals 10, 11, 12, 30
    assert (total, graph, model) == (11 * MS, 5 * MS, 5 * MS)


def test_median_call_without_a_model_timer_puts_the_rest_in_model():
    """TorchScript: the model is not timed on its own, so model = total - graph and other is not reported."""
    total, graph, model, other, _ = median_call([(t, g, None, e) for t, g, _, e in SAMPLES])
    assert (total, graph, other) == (11 * MS, 5 * MS, None)
    assert model == pytest.approx(6 * MS)


def _results():
    return [
        SizeResult(size=8, atoms=4, edges=40, graph=5 * MS, model=5 * MS, other=1 * MS, total=11 * MS, peak_bytes=2 * 1024 * 1024),
        SizeResult(size=32, atoms=32, edges=None, graph=2 * MS, model=7 * MS, other=None, total=9 * MS, peak_bytes=None),
    ]


def test_table_rows_add_up_and_missing_cells_are_marked():
    lines = format_table(["timing: the median call"], _results()).splitlines()
    assert lines[0] == "timing: the median call" and lines[1].split() == list(COLUMNS)
    first, second = (dict(zip(COLUMNS, line.split())) for line in lines[2:])
    assert float(first["graph_ms"]) + float(first["model_ms"]) + float(first["other_ms"]) == pytest.approx(float(first["total_ms"]))
    assert (second["edges"], second["other_ms"], second["peak_MiB"]) == (MISSING, MISSING, MISSING)
    assert float(second["graph_ms"]) + float(second["model_ms"]) == pytest.approx(float(second["total_ms"]))


def test_markdown_ends_with_one_newline():
    text = format_markdown(["timing: the median call"], _results())
    assert text.endswith(" |\n") and not text.endswith("\n\n")
    assert text.splitlines()[0] == "- timing: the median call"
