"""--steps in a Rich report: the model measured again after each step of training a copy, a row per step."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from gradcheck_cli.render.table import Cell, Column, fitted_table, left_out
from gradcheck_cli.render.text_style import VERDICT_STYLE, decades_text, number_text
from gradcheck_cli.report.report import Report, summarize


def training_table(report: Report, width: int) -> Group:
    # the setup says "on a copy" already
    title = Text(f"Training: {report.training_setup}", style="italic")
    rows = []
    for step in report.training:
        summary = summarize(step.report)
        dead = summary["max_dead_fraction"]
        rows.append(
            [
                str(step.step),
                number_text(step.loss),
                Text(summary["verdict"], style=VERDICT_STYLE[step.report.verdict]),
                decades_text(summary["decades"]),
                number_text(summary["gain_per_layer"]),
                number_text(summary["max_total_grad_norm"]),
                number_text(summary["max_relative_grad"]),
                "-" if dead is None else f"{dead:.0%}",
            ]
        )
    columns = [
        Column("step", Cell.NUMBER),
        Column("loss", Cell.NUMBER, priority=3),
        Column("verdict", Cell.WORD),
        Column("input/output", Cell.NUMBER),
        Column("gain/layer", Cell.NUMBER, priority=2),
        Column("max |g| total", Cell.NUMBER, priority=4),
        Column("max |g|/|w|", Cell.NUMBER, priority=5),
        Column("dead units", Cell.NUMBER, priority=6),
    ]
    table, dropped = fitted_table(columns, rows, width)
    return Group(title, table, *left_out(dropped, width))
