"""The fixes tried on a copy of the model, in a Rich report: the before -> after table (-v) or sentence of
one fix, the fixes tried in order until one cured (the demo), the --verify table, and the -q line."""

from __future__ import annotations

from rich.console import Group
from rich.padding import Padding
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from gradcheck_cli.common.choices import Severity, TrialOutcome
from gradcheck_cli.common.stats import LayerStats
from gradcheck_cli.render.names import Names, shown
from gradcheck_cli.render.table import Cell, Column, fitted_table, left_out
from gradcheck_cli.render.text_style import OUTCOME_STYLE, VERDICT_STYLE, decades_text, number_text
from gradcheck_cli.report.report import FixTrial, Report, summarize


def comparison_table(before: Report, after: Report, width: int) -> Group:
    """-v, one fix applied (the demo): the measures before and after it, a row each."""
    b, a = before.diagnosis, after.diagnosis
    rows: list[list] = [
        [
            "verdict",
            Text(b.verdict.value, style=VERDICT_STYLE[b.verdict]),
            Text(a.verdict.value, style=VERDICT_STYLE[a.verdict]),
        ],
        ["backward signal input/output (decades)", decades_text(b.profile.decades), decades_text(a.profile.decades)],
        ["gain per layer", number_text(b.profile.gain_per_layer), number_text(a.profile.gain_per_layer)],
        [
            "forward signal output/input (decades)",
            decades_text(b.profile.forward_decades),
            decades_text(a.profile.forward_decades),
        ],
        [
            "first layer grad W",
            number_text(_first_grad(before.result.layers)),
            number_text(_first_grad(after.result.layers)),
        ],
    ]
    for series_b, series_a in zip(b.time_profiles, a.time_profiles):
        name = shown(series_b.name)
        rows.append(
            [
                Text(f"{name}: first/last time step (decades)"),
                decades_text(series_b.decades),
                decades_text(series_a.decades),
            ]
        )
        rows.append(
            [Text(f"{name}: gain per step"), number_text(series_b.gain_per_step), number_text(series_a.gain_per_step)]
        )
    errors = [sum(f.severity is Severity.ERROR for f in r.findings) for r in (b, a)]
    rows.append(["error findings", str(errors[0]), str(errors[1])])
    columns = [Column("measure", Cell.PROSE, fold_to=20), Column("before", Cell.NUMBER), Column("after", Cell.NUMBER)]
    table, _ = fitted_table(columns, rows, width)
    return Group(Text("Before -> after", style="italic"), table)


def before_after(before: Report, trial: FixTrial, last: bool = True) -> Text:
    """The comparison in one sentence with the fix's outcome (the default report; -v shows the table); ``last``:
    no other fix follows, so one that did not cure says so."""
    b, a = before.diagnosis, trial.report.diagnosis
    line = Text("Before -> after (")
    line.append(trial.outcome.value, style=OUTCOME_STYLE[trial.outcome])
    line.append("): ")
    line.append(b.verdict.value.upper(), style=VERDICT_STYLE[b.verdict])
    line.append(" -> ")
    line.append(a.verdict.value.upper(), style=VERDICT_STYLE[a.verdict])
    if b.profile.decades is not None and a.profile.decades is not None:
        line.append(f" · backward signal 10^{b.profile.decades:+.1f} -> 10^{a.profile.decades:+.1f}")
    if b.profile.gain_per_layer is not None and a.profile.gain_per_layer is not None:
        line.append(f" · gain x{b.profile.gain_per_layer:.3g} -> x{a.profile.gain_per_layer:.3g}/layer")
    for series_b, series_a in zip(b.time_profiles, a.time_profiles):
        line.append(
            f" · {shown(series_b.name)} first/last step 10^{series_b.decades:+.1f} -> 10^{series_a.decades:+.1f}"
        )
    errors = [sum(f.severity is Severity.ERROR for f in d.findings) for d in (b, a)]
    line.append(f" · error findings {errors[0]} -> {errors[1]}.")
    if last and trial.outcome is not TrialOutcome.CURED:
        line.append(" No fix tried cured it.")
    return line


def tried_in_order(report: Report, names: Names) -> Group:
    """The demo's fixes tried one after another until one cured: each one's change and before -> after."""
    parts: list = [Rule("The suggested fixes, tried in order until one cures", style="cyan")]
    for index, trial in enumerate(report.fix_trials, 1):
        parts.append(
            Text(f"{index}. {trial.fix_id}, applied to a copy: {names.prose(trial.description)}.", style="cyan")
        )
        parts.append(before_after(report, trial, last=False))
    cured = next((trial for trial in report.fix_trials if trial.outcome is TrialOutcome.CURED), None)
    tried = len(report.fix_trials)
    parts.append(
        Text(f"The first that cured: {cured.fix_id}." if cured else f"None of the {tried} fixes tried cured it.")
    )
    return Group(*parts)


def trials_table(report: Report, names: Names, width: int) -> Group:
    """Every fix tried on a copy (--verify): the verdict and the depth trend before -> after, and what
    each fix changed (in a column when it fits, else one line each below the table)."""
    before = summarize(report)
    rows: list[list] = [
        [
            "(as measured)",
            Text(before["verdict"], style=VERDICT_STYLE[report.verdict]),
            "",
            decades_text(before["decades"]),
            number_text(before["gain_per_layer"]),
            number_text(before["max_total_grad_norm"]),
            "",
        ]
    ]
    for trial in report.fix_trials:
        if trial.report is None:
            rows.append([Text(trial.fix_id), Text("not applied", style="dim"), "", "", "", "", _change(trial, names)])
            continue
        after = summarize(trial.report)
        rows.append(
            [
                Text(trial.fix_id),
                Text(after["verdict"], style=VERDICT_STYLE[trial.report.verdict]),
                Text(trial.outcome.value, style=OUTCOME_STYLE[trial.outcome]),
                decades_text(after["decades"]),
                number_text(after["gain_per_layer"]),
                number_text(after["max_total_grad_norm"]),
                _change(trial, names),
            ]
        )
    columns = [
        Column("fix", Cell.WORD),
        Column("verdict", Cell.WORD),
        Column("outcome", Cell.WORD),
        Column("input/output", Cell.NUMBER),
        Column("gain/layer", Cell.NUMBER, priority=2),
        Column("max |g| total", Cell.NUMBER, priority=3),
        Column("change", Cell.PROSE, priority=4, fold_to=24),
    ]
    table, dropped = fitted_table(columns, rows, width)
    parts: list = [Text("Fixes tried on a copy of the model (--verify)", style="italic"), table]
    if columns[-1] in dropped:  # one line each below, wrapped under its own start
        changes = Table.grid(padding=(0, 1))
        changes.add_column(no_wrap=True)
        changes.add_column(overflow="fold")
        for trial in report.fix_trials:
            changes.add_row(Text(f"[{trial.fix_id}]"), _change(trial, names))
        parts += [Text("What each fix changed:", style="italic"), Padding(changes, (0, 0, 0, 1), expand=False)]
        dropped = dropped[:-1]
    return Group(*parts, *left_out(dropped, width))


def _change(trial: FixTrial, names: Names) -> Text:
    return Text(names.prose(trial.description), style="" if trial.applied else "dim")


def trials_line(report: Report) -> Text:
    """-q: the fixes tried on a copy and the verdict each gave, in one line."""
    line = Text("Fixes tried on a copy: " if len(report.fix_trials) > 1 else "Fix tried on a copy: ")
    for index, trial in enumerate(report.fix_trials):
        if index:
            line.append(", ")
        line.append(f"{trial.fix_id} -> ")
        if trial.report is None:
            line.append("not applied", style="dim")
        else:
            line.append(trial.report.verdict.value.upper(), style=VERDICT_STYLE[trial.report.verdict])
            line.append(f" ({trial.outcome.value})")
    line.append(".")
    return line


def _first_grad(layers: list[LayerStats]) -> float | None:
    return next((layer.weight_grad_norm for layer in layers if layer.weight_grad_norm is not None), None)
