"""The gradient-flow chart: its layout arithmetic (render/chart.py) and the charts in the text report."""

import io
import math
from dataclasses import dataclass

import pytest
from rich.console import Console

from gradcheck_cli.common.choices import OutputFormat
from gradcheck_cli.common.stats import RecurrentStats
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.render.chart import (
    MIN_BAR_WIDTH,
    Bar,
    Layout,
    LogScale,
    bar_glyphs,
    decade_label,
    decade_ticks,
    draw_bar_chart,
    geometric_mean,
    group_bars,
    group_label,
    group_size,
    group_value,
    layout,
    log_scale,
    value_text,
)
from gradcheck_cli.render.interface import RenderOptions, get_renderer
from gradcheck_cli.report.report import Report
from tests.synthetic import geometric_result
from tests.test_render import healthy_report, recurrent_report, vanishing_report_with_fix

WIDTHS = (60, 80, 100, 120)
BLOCKS = set("█▏▎▍▌▋▊▉")


# --- pure functions ---------------------------------------------------------------------------------


def test_log_scale_runs_from_below_the_smallest_value_to_the_decade_above_the_largest():
    assert log_scale([1e-12, 0.5, 3.0]) == LogScale(-13, 1)  # 1e-12 sits a margin above the left edge
    assert log_scale([2e-7, None, 0.0, math.nan, math.inf, 0.9]) == LogScale(-7, 0)


def test_log_scale_of_equal_values_still_spans_some_decades():
    scale = log_scale([0.5, 0.5, 0.5])
    assert scale.decades >= 2 and 10**scale.low < 0.5 <= 10**scale.high


def test_log_scale_of_nothing_drawable_is_none():
    assert log_scale([None, 0.0, math.nan, -1.0, math.inf]) is None
    assert log_scale([]) is None


def test_log_scale_of_a_huge_range():
    assert log_scale([1e-40, 1e10]) == LogScale(-41, 10)
    assert log_scale([5e-324, 1e308]) == LogScale(-324, 308)  # the smallest subnormal to near the largest double


def test_position_maps_decades_linearly_and_clamps():
    scale = LogScale(-4, 0)
    assert scale.position(1e-4, 40) == 0.0
    assert scale.position(1e-2, 40) == pytest.approx(20.0)
    assert scale.position(1.0, 40) == 40.0
    assert scale.position(1e-9, 40) == 0.0 and scale.position(1e3, 40) == 40.0


@pytest.mark.parametrize("decades,width", [(2, 20), (13, 60), (51, 28), (51, 90), (633, 20), (633, 200)])
def test_decade_ticks_are_evenly_spaced_and_their_labels_do_not_touch(decades, width):
    scale = LogScale(-decades + 1, 1)
    ticks = decade_ticks(scale, width)
    assert ticks and all(scale.low <= t <= scale.high for t in ticks)
    steps = {b - a for a, b in zip(ticks, ticks[1:])}
    assert len(steps) <= 1
    if steps:
        label = max(len(decade_label(scale.low)), len(decade_label(scale.high)))
        assert steps.pop() * width / scale.decades >= label + 2


def test_decade_labels_read_like_python_floats():
    assert [decade_label(d) for d in (-12, 0, 10)] == ["1e-12", "1e+0", "1e+10"]
    assert float(decade_label(-12)) == 1e-12


def test_bar_glyphs_end_in_eighths():
    assert bar_glyphs(0.0) == ""
    assert bar_glyphs(2.5) == "██▌"
    assert bar_glyphs(3.0) == "███"
    assert bar_glyphs(0.125) == "▏" and bar_glyphs(0.01) == "▏" and bar_glyphs(0.01, ascii_only=True) == "#"
    assert bar_glyphs(2.5, ascii_only=True) == "##"  # round half to even
    assert bar_glyphs(2.6, ascii_only=True) == "###"


def test_group_size_fits_the_rows():
    assert group_size(10, 20) == 1 and group_size(10, None) == 1
    assert group_size(51, 20) == 3 and group_size(40, 20) == 2 and group_size(41, 20) == 3


def test_geometric_mean_is_the_mean_on_the_log_axis():
    assert geometric_mean([1e-10, 1e-2]) == pytest.approx(1e-6)
    assert geometric_mean([1e-300, 1e-300]) == pytest.approx(1e-300)  # no underflow of the product
    assert geometric_mean([0.0, None, math.nan]) is None


def test_group_value_is_the_geometric_mean_of_what_was_measured():
    assert group_value([1e-4, None, 1e-2]) == pytest.approx(1e-3)
    assert group_value([1e-4, 0.0, 1e-2]) == 0.0  # a zero factor: the gradient stops in this group
    assert math.isnan(group_value([0.0, math.nan, 1.0]))
    assert group_value([0.0, math.inf]) == math.inf
    assert group_value([None, None]) is None


def test_group_label_names_a_run_of_layers():
    assert group_label(["blocks.3.fc"]) == "blocks.3.fc"
    assert group_label(["blocks.3.fc", "blocks.4.fc", "blocks.5.fc"]) == "blocks.3-5.fc"
    assert group_label(["blocks.9.fc", "blocks.10.fc"]) == "blocks.9-10.fc"
    assert group_label(["step 1", "step 2", "step 3"]) == "step 1-3"
    assert group_label(["blocks.0.conv1", "blocks.0.bn1"]) == "blocks.0.conv1..bn1"
    assert group_label(["layers.38", "layers.39", "head"]) == "layers.38..head"
    assert group_label(["stem.0", "blocks.0.conv1"]) == "stem.0..blocks.0.conv1"


def test_group_label_of_numbers_that_skip_names_no_layer_that_is_not_in_the_row():
    """Issue 23: a Sequential's layers 0 and 2 (its activation is 1) read "0-2", three layers, under the
    caption "2 layers per row"."""
    assert group_label(["0", "2"]) == "0,2"
    assert group_label(["56", "58", "60"]) == "56,58,60"
    assert group_label(["0", "2", "4", "6"]) == "0,2..6"  # every second one, from 0 to 6
    assert group_label(["blocks.1.fc", "blocks.4.fc", "blocks.5.fc", "blocks.9.fc"]) == "blocks.1..9.fc"
    for labels in (["0", "2"], ["layers.38", "layers.39", "head"], ["blocks.0.conv1", "blocks.0.bn1"]):
        assert "…" not in group_label(labels)  # a range, not a name cut short


def test_group_bars_keeps_the_most_severe_mark_and_the_geometric_mean():
    bars = [Bar(f"layers.{i}", 10.0**-i, "", "green", 0) for i in range(9)]
    bars[4] = Bar("layers.4", 1e-4, "vanishing", "bold yellow", 5)
    bars[5] = Bar("layers.5", 1e-5, "weak", "yellow", 3)
    grouped = group_bars(bars, 3)
    assert [bar.label for bar in grouped] == ["layers.0-2", "layers.3-5", "layers.6-8"]
    assert [bar.mark for bar in grouped] == ["", "vanishing", ""]
    assert grouped[1].style == "bold yellow" and grouped[1].severity == 5
    assert [bar.value for bar in grouped] == pytest.approx([1e-1, 1e-4, 1e-7])
    assert group_bars(bars, 9) == bars


def test_group_bars_leaves_the_remainder_in_a_shorter_last_row():
    grouped = group_bars([Bar(f"t{i}", 1.0) for i in range(50)], 20)
    assert len(grouped) == 17 and grouped[-1].label == "t48-49"


def test_value_text_has_a_word_where_there_is_no_bar():
    assert [value_text(v) for v in (None, math.nan, math.inf, -math.inf, 0.0)] == ["n/a", "nan", "inf", "-inf", "zero"]
    assert value_text(0.951) == "0.95" and value_text(5.2e-42) == "5.2e-42"


def test_layout_gives_the_bars_the_rest_and_drops_the_value_before_cutting_labels():
    assert layout(16, 7, 9, 100) == Layout(16, 100 - 16 - 2 - 8 - 11, 7, 9)
    at_60 = layout(20, 7, 9, 60)
    assert at_60.value == 0 and at_60.label == 20 and at_60.bars == MIN_BAR_WIDTH + 7
    cut = layout(30, 7, 9, 45)
    assert cut.value == 0 and cut.bars == MIN_BAR_WIDTH and cut.label == 45 - 2 - 11 - MIN_BAR_WIDTH
    assert layout(30, 7, 9, 40) is None
    assert layout(100, 7, 0, 100).label == 40  # labels get at most 40% of the width


def test_a_label_too_long_for_its_column_goes_whole_on_a_line_above_its_bar():
    """Issue 23: a name cut with an ellipsis (``…ttention.self.query``) may name another layer."""
    bars = [Bar("encoder.layer.3.attention.self.query", 1e-3, "vanishing"), Bar("head", 1.0)]
    lines = [line.plain for line in draw_bar_chart(bars, 60)]
    assert lines[2] == "encoder.layer.3.attention.self.query"
    assert lines[3].lstrip().startswith("│") and lines[3].rstrip().endswith("vanishing")
    assert lines[4].startswith("head ") and all(len(line) <= 60 and "…" not in line for line in lines)
    long = "x" * 70
    assert [line.plain for line in draw_bar_chart([Bar(long, 1.0)], 40)][2:4] == [long[:40], long[40:]]


# --- drawing ----------------------------------------------------------------------------------------


def _bars(values, marks=None):
    marks = marks or [""] * len(values)
    return [
        Bar(f"layers.{i}", v, m, "red" if m else "green", 5 if m else 0) for i, (v, m) in enumerate(zip(values, marks))
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_no_chart_line_is_wider_than_the_console(width):
    values = [10.0 ** (-40 + 50 * i / 29) for i in range(30)]  # 1e-40 .. 1e+10
    lines = draw_bar_chart(_bars(values, ["exploding"] * 5 + [""] * 25), width)
    assert lines and all(len(line.plain) <= width for line in lines)


def test_bars_grow_with_the_value_and_words_replace_missing_bars():
    lines = draw_bar_chart(_bars([1e-8, 1e-4, 1.0, 0.0, math.nan, None]), 80)
    rows = [line.plain for line in lines[2:]]
    lengths = [sum(ch in BLOCKS for ch in row) for row in rows]
    assert lengths[0] < lengths[1] < lengths[2]
    assert lengths[3:] == [0, 0, 0]
    assert rows[3].split()[-1] == "zero" and rows[4].split()[-1] == "nan" and rows[5].split()[-1] == "n/a"
    assert "1e-8" in lines[0].plain and "1e+0" in lines[0].plain


def test_a_single_bar_and_equal_bars_are_drawn():
    (row,) = draw_bar_chart([Bar("only", 3.0)], 60)[2:]
    assert "only" in row.plain and "3" in row.plain and any(ch in BLOCKS for ch in row.plain)
    rows = [line.plain for line in draw_bar_chart(_bars([0.25] * 4), 60)[2:]]
    assert len({row[row.index("│") :] for row in rows}) == 1


def test_nothing_to_draw_or_no_room_gives_no_chart():
    assert draw_bar_chart(_bars([0.0, None, math.nan]), 100) is None
    assert draw_bar_chart([], 100) is None
    assert draw_bar_chart(_bars([1.0, 0.1], ["vanishing", ""]), 30) is None


def test_the_rows_with_a_mark_say_it_in_words():
    rows = [line.plain for line in draw_bar_chart(_bars([1e-6, 1.0], ["vanishing", ""]), 80)[2:]]
    assert rows[0].rstrip().endswith("vanishing") and "vanishing" not in rows[1]


def test_ascii_only_charts_use_no_other_characters():
    lines = draw_bar_chart(_bars([1e-6, 0.3, 1.0], ["vanishing", "", ""]), 80, ascii_only=True)
    assert all(line.plain.isascii() for line in lines)
    assert "#" in lines[2].plain and "|" in lines[2].plain


# --- in the text report -----------------------------------------------------------------------------


def _render(report: Report, **options) -> str:
    stream = io.StringIO()
    get_renderer(OutputFormat.TEXT).render(report, stream, RenderOptions(**options))
    return stream.getvalue()


@dataclass
class Chart:
    title: str
    axis: list[str]  # the decade labels and the rule
    rows: list[str]
    legend: str  # its lines joined (prose: it may wrap)

    @property
    def lines(self) -> list[str]:
        return [self.title, *self.axis, *self.rows]


def _charts(text: str) -> list[Chart]:
    """Each chart of a rendered report: title, axis, rows (up to the legend), legend (up to the blank line)."""
    charts, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("Gradient flow", "Gradient through time")):
            legend = next(j for j in range(i, len(lines)) if lines[j].startswith("Bar: "))
            end = next(j for j in range(legend, len(lines)) if not lines[j].strip())
            charts.append(Chart(line, lines[i + 1 : i + 3], lines[i + 3 : legend], " ".join(lines[legend:end])))
    return charts


@pytest.mark.parametrize("width", WIDTHS)
def test_report_charts_fit_the_width(width):
    for report in (vanishing_report_with_fix(), recurrent_report(), healthy_report()):
        text = _render(report, width=width, color=False, verbose=True)
        charts = _charts(text)
        assert len(charts) == (2 if report.fix_trials else 1) + len(report.result.recurrent)
        for chart in charts:
            assert chart.rows and all(len(line) <= width for line in chart.lines)


def test_the_chart_shows_the_whole_depth_while_the_table_is_condensed():
    text = _render(vanishing_report_with_fix(), width=100, color=False, verbose=True)
    assert "... 29 more" in text  # the condensed table
    rows = _charts(text)[0].rows
    assert len(rows) == 14  # 41 layers, 3 per row
    assert rows[0].startswith("layers.0-2 ") and rows[1].startswith("layers.3-5 ")
    # layers.0 and layers.1 are exactly zero: so is their group's geometric mean, and its mark says so once
    # (issue 23: the row read "zero  zero")
    assert rows[0].split()[-2:] == ["│", "zero"] and not BLOCKS & set(rows[0])
    assert rows[1].rstrip().endswith("vanishing") and rows[-2].rstrip().endswith("weak")
    assert rows[-1].startswith("layers.39..head ")
    assert "3 layers per row: geometric mean, most severe status." in _charts(text)[0].legend


def test_the_default_report_draws_a_shorter_chart():
    rows = _charts(_render(vanishing_report_with_fix(), width=100, color=False))[0].rows
    assert len(rows) == 9  # 41 layers, 5 per row: the report fits one screen (issue 23)
    assert rows[0].startswith("layers.0-4 ") and rows[-1].startswith("head ")


def test_all_layers_draws_one_row_per_layer():
    chart = _charts(_render(vanishing_report_with_fix(), width=100, all_layers=True, color=False))[0]
    assert [row.split()[0] for row in chart.rows] == [f"layers.{i}" for i in range(40)] + ["head"]
    assert "per row" not in chart.legend


def test_flagged_layers_are_marked_in_words_without_colour():
    text = _render(vanishing_report_with_fix(), width=100, all_layers=True, color=False)
    assert "\x1b[" not in text
    rows = {row.split()[0]: row for row in _charts(text)[0].rows}
    assert rows["layers.0"].rstrip().endswith("zero") and not BLOCKS & set(rows["layers.0"])
    assert rows["layers.5"].rstrip().endswith("vanishing")
    assert not rows["head"].rstrip().endswith(("vanishing", "weak", "zero"))


def test_the_demo_before_and_after_charts_share_their_axis():
    charts = _charts(_render(vanishing_report_with_fix(), width=100, color=False, verbose=True))
    assert len(charts) == 2
    assert charts[0].axis == charts[1].axis  # same decade labels and ticks, in the same columns
    assert len(charts[1].rows[0]) < len(charts[0].rows[0])  # the after's rows have no marks, same bar columns


def test_the_recurrent_chart_marks_the_steps_past_the_lines():
    chart = _charts(_render(recurrent_report(), width=100, color=False, verbose=True))[1]
    assert chart.title == "Gradient through time in rnn (RNN), first step first"
    rows = chart.rows
    assert len(rows) == 15 and rows[0].startswith("step 1-2 ") and rows[-1].startswith("step 29-30 ")
    assert rows[0].rstrip().endswith("vanishing")
    assert any(row.rstrip().endswith("weak") for row in rows)
    assert not rows[-1].rstrip().endswith(("vanishing", "weak"))
    assert "2 steps per row" in chart.legend and "dL/dx_t" in chart.legend


def test_a_steady_recurrent_module_has_no_marked_steps():
    result = geometric_result(depth=1)
    result.recurrent = [RecurrentStats("rnn", "LSTM", [0.9] * 12)]
    chart = _charts(_render(Report("steady", result, diagnose(result)), width=80, color=False, verbose=True))[1]
    assert len(chart.rows) == 12
    assert not any(row.rstrip().endswith(("vanishing", "weak", "high", "exploding")) for row in chart.rows)


def test_missing_and_nonfinite_signals_have_words_and_no_bars():
    result = healthy_report().result
    result.layers[1].backward = math.nan
    result.layers[1].backward_nonfinite = True
    result.layers[2].backward = None
    rows = {row.split()[0]: row for row in _charts(_render(Report("t", result, diagnose(result)), width=80))[0].rows}
    assert "nan" in rows["layers.1"] and rows["layers.1"].rstrip().endswith("nonfinite")
    assert "n/a" in rows["layers.2"]
    assert not BLOCKS & set(rows["layers.1"]) and not BLOCKS & set(rows["layers.2"])
    assert BLOCKS & set(rows["layers.3"])


def test_a_model_without_hooks_charts_weight_gradient_norms():
    result = geometric_result(depth=6)
    result.hooked = False
    for layer in result.layers:
        layer.backward = None
    (chart,) = _charts(_render(Report("scripted", result, diagnose(result)), width=100, color=False))
    assert "weight-gradient norm" in chart.legend and len(chart.rows) == 7


def test_a_narrow_terminal_leaves_the_chart_out_and_says_so():
    text = _render(vanishing_report_with_fix(), width=40, color=False)
    assert not _charts(text)
    assert "Gradient flow, input end first: no room for the chart in 40 columns." in " ".join(text.split())


def test_every_status_has_a_chart_severity():
    from gradcheck_cli.common.choices import LayerStatus
    from gradcheck_cli.render.text_charts import CHART_SEVERITY

    assert set(CHART_SEVERITY) == set(LayerStatus)


def test_quiet_output_has_no_chart():
    assert "Gradient flow" not in _render(vanishing_report_with_fix(), width=100, quiet=True)


def test_an_ascii_terminal_gets_an_ascii_chart():
    class AsciiStream(io.StringIO):
        encoding = "ascii"

    stream = AsciiStream()
    get_renderer(OutputFormat.TEXT).render(vanishing_report_with_fix(), stream, RenderOptions(width=100, verbose=True))
    chart = _charts(stream.getvalue())[0]
    assert all(line.isascii() for line in chart.lines)
    assert "#" in chart.rows[-1] and chart.rows[-1].startswith("layers.39..head ")


def test_colour_styles_the_flagged_bars():
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system="standard")
    lines = draw_bar_chart(_bars([1e-6, 1.0], ["vanishing", ""]), 80)
    console.print(lines[2])
    assert "\x1b[31m" in console.file.getvalue()  # the bar and its mark in the row's style (red)
