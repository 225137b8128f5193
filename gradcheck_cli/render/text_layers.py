"""The tables of a Rich report under -v or --all-layers: one row per layer (condensed to the ends and the
flagged layers unless --all-layers), and one per time step of a recurrent module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Group
from rich.text import Text

from gradcheck_cli.common.choices import LayerStatus
from gradcheck_cli.common.stats import LayerStats, RecurrentStats
from gradcheck_cli.judge.diagnosis import Diagnosis, TimeProfile
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.render.names import shown
from gradcheck_cli.render.table import Cell, Column, fitted_table, left_out
from gradcheck_cli.render.text_style import STATUS_STYLE, number_text
from gradcheck_cli.report.report import Report

# Condensed layer table: this many layers at each end, then every flagged layer; runs of flagged
# layers with one status are cut to their ends when the table would exceed MAX_ROWS.
END_ROWS = 3
MAX_ROWS = 24
RUN_ENDS = 2
STATUS_WIDTH = max(len(status.value) for status in LayerStatus)
# The time-step table: this many steps, spread evenly from the first to the last.
TIME_STEP_ROWS = 8


@dataclass(frozen=True)
class _LayerColumn:
    column: Column
    cell: Callable[[int, LayerStats, Diagnosis], str]


# In the order shown; the priority says which optional column goes first when the terminal is narrow.
_LAYER_COLUMNS = [
    _LayerColumn(Column("#", Cell.NUMBER, priority=5), lambda i, layer, d: str(i)),
    _LayerColumn(Column("layer", Cell.PROSE, fold_to=24), lambda i, layer, d: shown(layer.name)),
    _LayerColumn(Column("type", Cell.PROSE, priority=3, fold_to=12), lambda i, layer, d: shown(layer.type)),
    _LayerColumn(Column("grad W", Cell.NUMBER, priority=2), lambda i, layer, d: number_text(_weight_grad(layer))),
    _LayerColumn(Column("|g|/|w|", Cell.NUMBER, priority=4), lambda i, layer, d: number_text(layer.relative_grad)),
    _LayerColumn(Column("dL/dout", Cell.NUMBER), lambda i, layer, d: number_text(layer.backward)),
    _LayerColumn(Column("ratio", Cell.NUMBER), lambda i, layer, d: number_text(d.ratios.get(layer.name))),
    _LayerColumn(Column("fwd RMS", Cell.NUMBER, priority=6), lambda i, layer, d: number_text(layer.forward_rms)),
]
# A status may carry "(tied to ...)": it folds there, never inside the status word.
_STATUS_COLUMN = Column("status", Cell.PROSE, fold_to=STATUS_WIDTH)


def layer_table(report: Report, options: RenderOptions, width: int) -> Group:
    result, diagnosis = report.result, report.diagnosis
    statuses = [diagnosis.statuses[layer.name] for layer in result.layers]
    name_column = [each.column.header for each in _LAYER_COLUMNS].index("layer")
    rows: list[list[Text]] = []

    def add_skipped(skipped: list[LayerStatus]) -> None:
        cells = [Text("")] * len(_LAYER_COLUMNS)
        cells[name_column] = Text(f"... {len(skipped)} more", style="dim italic")
        summary = skipped[0].value if len(set(skipped)) == 1 else "mixed"
        rows.append([*cells, Text(summary, style="dim italic")])

    previous = -1
    for index in _rows_to_show(statuses, options.all_layers):
        if index - previous > 1:
            add_skipped(statuses[previous + 1 : index])
        layer, status = result.layers[index], statuses[index]
        label = status.value + (f" (tied to {shown(layer.shared_with)})" if layer.shared_with else "")
        # Text, not str: a str cell is read as Rich markup, and a name such as "[/x]" is not valid markup.
        cells = [Text(each.cell(index, layer, diagnosis)) for each in _LAYER_COLUMNS]
        rows.append([*cells, Text(label, style=STATUS_STYLE[status])])
        previous = index
    if previous < len(statuses) - 1:
        add_skipped(statuses[previous + 1 :])
    columns = [each.column for each in _LAYER_COLUMNS] + [_STATUS_COLUMN]
    table, dropped = fitted_table(columns, rows, width)
    return Group(Text("Layers, input end first", style="italic"), table, *left_out(dropped, width))


def _weight_grad(layer: LayerStats) -> float | None:
    return layer.weight_grad_norm if layer.weight_grad_norm is not None else layer.grad_norm


def _rows_to_show(statuses: list[LayerStatus], all_layers: bool) -> list[int]:
    """The ends plus every flagged layer; long runs of one flagged status cut to their ends; never a gap
    of one layer."""
    count = len(statuses)
    if all_layers or count <= MAX_ROWS:
        return list(range(count))
    keep = set(range(END_ROWS)) | set(range(count - END_ROWS, count))
    keep |= {i for i, status in enumerate(statuses) if status.flagged}
    if len(keep) > MAX_ROWS:
        keep = set(range(END_ROWS)) | set(range(count - END_ROWS, count))
        start = 0
        while start < count:
            end = start
            while end + 1 < count and statuses[end + 1] is statuses[start]:
                end += 1
            if statuses[start].flagged:
                keep |= set(range(start, min(start + RUN_ENDS, end + 1)))
                keep |= set(range(max(end - RUN_ENDS + 1, start), end + 1))
            start = end + 1
    # a gap of one layer shows that layer: "... 1 more" would take its row anyway
    keep |= {i for i in range(1, count - 1) if i - 1 in keep and i + 1 in keep}
    return sorted(keep)


def time_table(series: RecurrentStats, profile: TimeProfile | None, width: int) -> Group:
    title = Text(
        f"Time steps of {shown(series.name)} ({shown(series.type)}): gradient reaching each step's input",
        style="italic",
    )
    steps = series.time_steps
    count = len(steps)
    shown_steps = (
        sorted({round(i * (count - 1) / (TIME_STEP_ROWS - 1)) for i in range(TIME_STEP_ROWS)})
        if count > TIME_STEP_ROWS
        else range(count)
    )
    rows = [
        [str(t + 1), number_text(steps[t]), number_text(profile.ratio_to_last[t] if profile is not None else None)]
        for t in shown_steps
    ]
    columns = [Column("step", Cell.NUMBER), Column("dL/dx_t", Cell.NUMBER), Column("ratio to last", Cell.NUMBER)]
    table, _ = fitted_table(columns, rows, width)
    return Group(title, table)
