"""The gradient-flow charts of a Rich report: one bar per layer (or per time step of a recurrent module),
on a log scale, marked with the layer's status (render/chart.py draws them)."""

from __future__ import annotations

import math

from rich.console import Console, Group
from rich.text import Text

from gradcheck_cli.common.choices import FindingKind, LayerStatus
from gradcheck_cli.common.stats import RecurrentStats
from gradcheck_cli.judge.depth_trend import signal_of
from gradcheck_cli.judge.diagnosis import Diagnosis, TimeProfile
from gradcheck_cli.render.chart import Bar, chart_layout, draw_bar_chart, group_bars, group_size, log_scale
from gradcheck_cli.render.names import shown
from gradcheck_cli.render.text_style import STATUS_STYLE
from gradcheck_cli.report.report import Report

# The gradient-flow charts: at most this many rows (consecutive layers or steps grouped beyond it), so
# the whole depth shows at a glance. BRIEF_CHART_ROWS keeps the default report on one screen (issue 23);
# -v draws CHART_ROWS; --all-layers one row per layer.
CHART_ROWS = 20
BRIEF_CHART_ROWS = 10
# A chart row that groups several layers takes the mark of its most severe member.
CHART_SEVERITY = {
    LayerStatus.OK: 0,
    LayerStatus.IGNORED: 1,
    LayerStatus.FROZEN: 1,
    LayerStatus.NOT_RUN: 1,
    LayerStatus.NO_GRAD: 2,
    LayerStatus.WEAK: 3,
    LayerStatus.HIGH: 3,
    LayerStatus.VANISHING: 4,
    LayerStatus.EXPLODING: 4,
    LayerStatus.ZERO: 5,  # as the group's value: one exact zero makes its geometric mean zero
    LayerStatus.NONFINITE: 6,
}


def print_chart(
    console: Console,
    bars: list[Bar],
    companion: list[Bar],
    title: str,
    legend: str,
    items: str,
    max_rows: int | None,
) -> None:
    """A gradient-flow chart (render/chart.py) under its title, its legend below; nothing when no bar
    has a positive finite value, and one line saying so when the terminal is too narrow for it.
    ``companion``: the bars of the other side of a before/after, drawn on the same axis and columns."""
    ascii_only = console.options.ascii_only
    rows, other = group_bars(bars, max_rows), group_bars(companion, max_rows)
    scale = log_scale(bar.value for bar in (*rows, *other))
    if scale is None:
        return
    fit = chart_layout([*rows, *other], console.width)
    lines = draw_bar_chart(rows, console.width, scale, ascii_only, fit) if fit else None
    if lines is None:
        console.print(Text(f"({title}: no room for the chart in {console.width} columns.)", style="dim"))
        console.print()
        return
    console.print(Text(title, style="italic"))
    console.print(Group(*lines))
    per_row = group_size(len(bars), max_rows)
    if per_row > 1:
        legend += f" {per_row} {items} per row: geometric mean, most severe status."
    console.print(Text(legend, style="dim"))
    console.print()


def layer_bars(report: Report) -> list[Bar]:
    result, statuses = report.result, report.diagnosis.statuses
    return [_bar(shown(layer.name), signal_of(layer, result.hooked), statuses[layer.name]) for layer in result.layers]


def layer_legend(report: Report) -> str:
    if report.result.hooked:
        return "Bar: the backward signal at each layer's output (per-sample RMS of dL/dout), log scale."
    return "Bar: each layer's weight-gradient norm (the model takes no hooks: no output gradients), log scale."


def _bar(label: str, value: float | None, status: LayerStatus) -> Bar:
    mark = "" if status is LayerStatus.OK else status.value
    return Bar(label, value, mark, STATUS_STYLE[status], CHART_SEVERITY[status])


def step_bars(series: RecurrentStats, profile: TimeProfile | None, diagnosis: Diagnosis) -> list[Bar]:
    """One bar per time step, marked only when the module has a through-time finding, by the rule the
    diagnosis applies to a layer's ratio (diagnosis._finding_status): a step whose gradient is past the
    error line of decades below (above) the last step's is vanishing (exploding); past the warning line,
    weak (high)."""
    kinds = (FindingKind.VANISHING_THROUGH_TIME, FindingKind.EXPLODING_THROUGH_TIME)
    finding = next((f for f in diagnosis.findings if f.kind in kinds and series.name in f.layers), None)
    thresholds = diagnosis.thresholds
    bars = []
    for t, value in enumerate(series.time_steps):
        status = LayerStatus.OK
        if not math.isfinite(value):
            status = LayerStatus.NONFINITE
        elif value == 0:
            status = LayerStatus.ZERO
        elif finding is not None and profile is not None:
            # decades above the last step: negative where the gradient reaching step t is smaller
            decades = math.log10(profile.ratio_to_last[t])
            vanishing = finding.kind is FindingKind.VANISHING_THROUGH_TIME
            past = -decades if vanishing else decades
            if past >= thresholds.decades_error:
                status = LayerStatus.VANISHING if vanishing else LayerStatus.EXPLODING
            elif past >= thresholds.decades_warning:
                status = LayerStatus.WEAK if vanishing else LayerStatus.HIGH
        bars.append(_bar(f"step {t + 1}", value, status))
    return bars
