"""--baseline in a Rich report: whether the model regressed against the saved baseline, and the layers
whose figures moved most."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from gradcheck_cli.render.names import shown
from gradcheck_cli.render.table import Cell, Column, fitted_table
from gradcheck_cli.render.text_style import number_text


def baseline_table(comparison, width: int) -> Group:
    """--baseline: the verdict of the comparison, then the layers that moved most."""
    if comparison.regressed:
        head = Text(f"Baseline: REGRESSED (tolerance x{comparison.tolerance:g}); see the baseline_regression finding.")
        head.stylize("bold red")
    else:
        head = Text(f"Baseline: no regression (tolerance x{comparison.tolerance:g}).", style="green")
    if not comparison.changes:
        return Group(head)
    rows = [
        [
            Text(shown(change.layer)),
            change.what,
            number_text(change.before),
            number_text(change.after),
            number_text(change.factor),
            Text("regression", style="bold red") if change.regression else "",
        ]  # fmt: skip
        for change in comparison.changes[:10]
    ]
    columns = [
        Column("layer", Cell.PROSE, fold_to=24),
        Column("what", Cell.WORD),
        Column("before", Cell.NUMBER),
        Column("after", Cell.NUMBER),
        Column("factor", Cell.NUMBER),
        Column("", Cell.WORD),
    ]
    table, _ = fitted_table(columns, rows, width)
    return Group(head, table)
