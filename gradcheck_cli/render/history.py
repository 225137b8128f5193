"""``gradcheck report history.jsonl``: a training run's history as a Rich report or one JSON document.

The summary (history.summarize_history) holds every number shown; these functions only lay it out: the
run, the problems with the step and layer where each began, a chart of the total gradient norm over the
records, and the layer table of one record with the scan's verdict and findings for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TextIO

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from gradcheck_cli import __version__
from gradcheck_cli.common.choices import HistoryFormat, LayerStatus
from gradcheck_cli.common.stats import LayerStats
from gradcheck_cli.monitor.history import HistorySummary, Problem, StepRecord, record_scalars
from gradcheck_cli.render.chart import Bar, draw_bar_chart, group_bars
from gradcheck_cli.render.json import json_safe, layer_figures
from gradcheck_cli.render.names import LINE_CHARS, Names, shown
from gradcheck_cli.render.table import Cell, Column, fitted_table
from gradcheck_cli.render.text_style import SEVERITY_STYLE, STATUS_STYLE, VERDICT_STYLE, number_text

# Bump the major part on any change to an existing key's meaning or removal (new keys are a minor change).
REPORT_SCHEMA_VERSION = "1.0"
CHART_ROWS = 24  # records beyond this are grouped, a problem's mark kept
# Layer table: every layer up to MAX_ROWS; past it, END_ROWS at each end and every flagged layer.
MAX_ROWS = 24
END_ROWS = 3
STATUS_WIDTH = max(len(status.value) for status in LayerStatus)
PROBLEM_STYLE = "bold red"


class HistoryTextRenderer:
    def render(self, summary: HistorySummary, stream: TextIO, *, color: bool | None = None, all_layers: bool = False):
        console = _console(stream, color)
        header, records = summary.header, summary.history.records
        # Every text of a history file is shown escaped (render/names.py): the file may come from anywhere.
        names = Names(layer.name for layer in header.layers)
        console.print(Text.assemble(("gradcheck report", "bold"), f"  {shown(str(summary.path), LINE_CHARS)}"))
        facts = (
            f"{shown(header.model)} · {header.param_count:,} parameters · {len(header.layers)} layers · "
            f"{shown(header.dtype)} on {shown(header.device)} · "
            f"sampled every {header.every} step{'s' if header.every != 1 else ''} · "
            f"{len(records)} record{'s' if len(records) != 1 else ''}, steps {records[0].step}-{records[-1].step}"
        )
        console.print(Text(facts, style="dim"))
        for line in ([header.note] if header.note else []) + summary.history.notes:
            console.print(Text(f"note: {names.prose(line)}", style="dim"))
        console.print()
        problems = summary.problems
        if problems:
            console.print(Text(f"Problems: {len(problems)}", style=PROBLEM_STYLE))
            types = {layer.name: layer.type for layer in header.layers}
            for number, problem in enumerate(problems, 1):
                _print_problem(console, number, problem, types, names)
        else:
            last = records[-1].step
            console.print(Text(f"No problems from step {header.start_step} to step {last}.", style="green"))
        console.print()
        _print_chart(console, records)
        console.print()
        _print_shown(console, summary, all_layers, names)


class HistoryJsonRenderer:
    def render(self, summary: HistorySummary, stream: TextIO, *, color: bool | None = None, all_layers: bool = False):
        stream.write(json.dumps(json_safe(history_report_document(summary)), indent=2, allow_nan=False))
        stream.write("\n")


RENDERERS = {HistoryFormat.TEXT: HistoryTextRenderer, HistoryFormat.JSON: HistoryJsonRenderer}


def get_history_renderer(output_format: HistoryFormat):
    return RENDERERS[output_format]()


def history_report_document(summary: HistorySummary) -> dict[str, Any]:
    header, records, shown, diagnosis = summary.header, summary.history.records, summary.shown, summary.diagnosis
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": {"name": "gradcheck", "version": __version__},
        "history": summary.path,
        "model": {
            "name": header.model,
            "parameters": header.param_count,
            "trainable_parameters": header.trainable_param_count,
            "layers": len(header.layers),
            "dtype": header.dtype,
            "device": header.device,
            "structure": asdict(header.structure),
        },
        "every": header.every,
        "start_step": header.start_step,
        "signals": header.signals,
        "note": header.note or None,
        "notes": summary.history.notes,
        "records": len(records),
        "thresholds": asdict(header.thresholds),
        "rules": asdict(header.rules),
        "problems": [asdict(problem) for problem in summary.problems],
        "series": [
            {**record_scalars(record), "problems": [problem.kind for problem in record.problems]} for record in records
        ],
        "shown": {
            "step": shown.step,
            "because": summary.shown_because,
            "verdict": diagnosis.verdict.value,
            "loss": shown.loss,
            "total_grad_norm": shown.total_grad_norm,
            "batch_size": shown.batch_size,
            "signals": shown.signals,
            "profile": {
                "decades": diagnosis.profile.decades,
                "gain_per_layer": diagnosis.profile.gain_per_layer,
                "forward_decades": diagnosis.profile.forward_decades,
            },
            "layers": [
                {
                    **layer_figures(layer, diagnosis),
                    "nonfinite": layer.nonfinite,
                }
                for layer in shown.layers
            ],
            "findings": [
                {
                    "kind": finding.kind.value,
                    "severity": finding.severity.value,
                    "layers": finding.layers,
                    "message": finding.message,
                    "fixes": [fix.id for fix in finding.fixes],
                }
                for finding in diagnosis.findings
            ],
        },
    }


def _console(stream: TextIO, color: bool | None) -> Console:
    colour: dict = {}
    if color is True:
        colour = {"force_terminal": True}
    elif color is False:
        colour = {"no_color": True, "color_system": None}
    return Console(file=stream, highlight=False, soft_wrap=False, **colour)


def _print_problem(console: Console, number: int, problem: Problem, types: dict[str, str], names: Names) -> None:
    where = "the loss"
    if problem.layer is not None:
        where = f"layer {shown(problem.layer)} ({shown(types.get(problem.layer, '?'))})"
    head = Text(f"{number}. ")
    head.append(shown(problem.kind), style=PROBLEM_STYLE)
    head.append(f" at step {problem.step}, {where}", style="bold")
    if problem.found_at != problem.step:
        head.append(f" (found at the read-out of step {problem.found_at})", style="dim")
    console.print(head)
    console.print(Padding(Text(names.prose(problem.message)), (0, 0, 0, 3), expand=False))
    if len(problem.layers) > 1:
        more = f" and {len(problem.layers) - 6} more" if len(problem.layers) > 6 else ""
        listed = ", ".join(shown(name) for name in problem.layers[:6])
        console.print(Padding(Text(f"layers: {listed}{more}", style="dim"), (0, 0, 0, 3), expand=False))


def _print_chart(console: Console, records: list[StepRecord]) -> None:
    console.print(Text("Total gradient norm, the largest since the previous record (log scale)", style="italic"))
    bars = [
        Bar(
            label=f"step {record.step}",
            value=record.max_total_grad_norm,
            mark=", ".join(dict.fromkeys(shown(problem.kind) for problem in record.problems)),
            style=PROBLEM_STYLE if record.problems else "cyan",
            severity=1 if record.problems else 0,
        )
        for record in records
    ]
    lines = draw_bar_chart(group_bars(bars, CHART_ROWS), console.width)
    if lines is None:
        console.print(Text("(no finite total norm to draw, or the terminal is too narrow)", style="dim"))
        return
    for line in lines:
        console.print(line)


def _print_shown(console: Console, summary: HistorySummary, all_layers: bool, names: Names) -> None:
    step, diagnosis = summary.shown, summary.diagnosis
    title = Text(f"Step {step.step}", style="bold")
    title.append(f" ({names.prose(summary.shown_because)})")
    facts = [f"loss {number_text(step.loss)}", f"total |g| {number_text(step.total_grad_norm)}"]
    if step.batch_size:
        facts.append(f"batch {step.batch_size}")
    if not step.signals:
        facts.append("weight gradients only (no output-gradient figures at this step)")
    title.append("  " + " · ".join(facts), style="dim")
    console.print(title)
    verdict = Text("The scan's verdict on this step: ")
    verdict.append(diagnosis.verdict.value.upper(), style=VERDICT_STYLE[diagnosis.verdict])
    if diagnosis.profile.decades is not None:
        verdict.append(f"   input/output backward signal 10^{diagnosis.profile.decades:+.1f}")
    if diagnosis.profile.gain_per_layer is not None:
        verdict.append(f" · gain x{diagnosis.profile.gain_per_layer:.3g}/layer")
    console.print(verdict)
    console.print(_layer_table(step, diagnosis, all_layers, console.width))
    console.print()
    for number, finding in enumerate(diagnosis.findings, 1):
        line = Text(f"{number}. ")
        line.append(finding.severity.value.upper(), style=SEVERITY_STYLE[finding.severity])
        line.append(f" {finding.kind.value}: ", style="bold")
        line.append(names.prose(finding.message))
        if finding.fixes:
            line.append(f"  fixes: {', '.join(fix.id for fix in finding.fixes)}", style="cyan")
        console.print(line)


# (column, cell) in the order shown; a narrow terminal leaves out the optional columns, highest priority first,
# and folds the names, so no figure or status is ever cut (render/table.py).
_COLUMNS: list[tuple[Column, Callable[[int, LayerStats, Any], str]]] = [
    (Column("#", Cell.NUMBER, priority=5), lambda i, layer, d: str(i)),
    (Column("layer", Cell.PROSE, fold_to=24), lambda i, layer, d: shown(layer.name)),
    (Column("type", Cell.PROSE, priority=3, fold_to=12), lambda i, layer, d: shown(layer.type)),
    (
        Column("grad W", Cell.NUMBER),
        lambda i, layer, d: number_text(
            layer.weight_grad_norm if layer.weight_grad_norm is not None else layer.grad_norm
        ),
    ),
    (Column("|g|/|w|", Cell.NUMBER, priority=2), lambda i, layer, d: number_text(layer.relative_grad)),
    (Column("|w|", Cell.NUMBER, priority=4), lambda i, layer, d: number_text(layer.weight_norm)),
    (Column("dL/dout", Cell.NUMBER), lambda i, layer, d: number_text(layer.backward)),
    (Column("ratio", Cell.NUMBER), lambda i, layer, d: number_text(d.ratios.get(layer.name))),
    (Column("fwd RMS", Cell.NUMBER, priority=6), lambda i, layer, d: number_text(layer.forward_rms)),
]
_STATUS = Column("status", Cell.PROSE, fold_to=STATUS_WIDTH)


def _layer_table(record: StepRecord, diagnosis: Any, all_layers: bool, width: int) -> Table:
    statuses = [diagnosis.statuses[layer.name] for layer in record.layers]
    name_column = [column.header for column, _ in _COLUMNS].index("layer")
    rows: list[list[Text]] = []

    def add_skipped(count: int) -> None:
        cells = [Text("")] * (len(_COLUMNS) + 1)
        cells[name_column] = Text(f"... {count} more", style="dim italic")
        rows.append(cells)

    previous = -1
    for index in _rows_to_show(statuses, all_layers):
        if index - previous > 1:
            add_skipped(index - previous - 1)
        layer, status = record.layers[index], statuses[index]
        # Text, not str: a str cell is read as Rich markup, and a name such as "[/x]" is not valid markup.
        cells = [Text(cell(index, layer, diagnosis)) for _, cell in _COLUMNS]
        rows.append([*cells, Text(status.value, style=STATUS_STYLE[status])])
        previous = index
    if previous < len(statuses) - 1:
        add_skipped(len(statuses) - 1 - previous)
    table, _ = fitted_table([column for column, _ in _COLUMNS] + [_STATUS], rows, width)
    return table


def _rows_to_show(statuses: list[LayerStatus], all_layers: bool) -> list[int]:
    count = len(statuses)
    if all_layers or count <= MAX_ROWS:
        return list(range(count))
    ends = set(range(END_ROWS)) | set(range(count - END_ROWS, count))
    flagged = [i for i, status in enumerate(statuses) if status.flagged and i not in ends]
    keep = ends | set(flagged[: MAX_ROWS - len(ends)])
    # a gap of one layer shows that layer: "... 1 more" would take its row anyway
    return sorted(keep | {i for i in range(1, count - 1) if i - 1 in keep and i + 1 in keep})
