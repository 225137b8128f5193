"""The Rich terminal report. Colour is decoration only: every status is also a word, so ``NO_COLOR``
and pipes read the same. Rich itself honours NO_COLOR, FORCE_COLOR, COLUMNS and TTY detection.

By default the report fits one screen (issue 23): the verdict, the gradient-flow chart, the top finding with
its first cause and fix, one line for each other finding. ``-v`` adds the layer table, each finding's
evidence and every cause and fix, and (demo) the fixed model's whole report. Every table reads whole at
80 columns (render/table.py); ``-q`` keeps the verdict line, the findings and one line on the fixes tried.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console, Group
from rich.padding import Padding
from rich.rule import Rule
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from gradcheck_cli.common.choices import FindingKind, LayerStatus, Severity, TrialOutcome, Verdict
from gradcheck_cli.common.stats import LayerStats, RecurrentStats
from gradcheck_cli.judge.depth_trend import signal_of
from gradcheck_cli.judge.diagnosis import Diagnosis, Finding, TimeProfile
from gradcheck_cli.render.chart import Bar, chart_layout, draw_bar_chart, group_bars, group_size, log_scale
from gradcheck_cli.render.code import fit_code
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.render.names import LINE_CHARS, Names, shown
from gradcheck_cli.render.table import Cell, Column, fitted_table
from gradcheck_cli.report.report import FixTrial, Report, summarize

OUTCOME_STYLE = {
    TrialOutcome.CURED: "bold green",
    TrialOutcome.HELPED: "green",
    TrialOutcome.NO_CHANGE: "yellow",
    TrialOutcome.WORSE: "bold red",
}
VERDICT_STYLE = {
    Verdict.HEALTHY: "bold green",
    Verdict.VANISHING: "bold yellow",
    Verdict.EXPLODING: "bold red",
    Verdict.NONFINITE: "bold magenta",
}
STATUS_STYLE = {
    LayerStatus.OK: "green",
    LayerStatus.WEAK: "yellow",
    LayerStatus.HIGH: "red",
    LayerStatus.VANISHING: "bold yellow",
    LayerStatus.EXPLODING: "bold red",
    LayerStatus.ZERO: "bold yellow",
    LayerStatus.NONFINITE: "bold magenta",
    LayerStatus.NO_GRAD: "yellow",
    LayerStatus.FROZEN: "dim",
    LayerStatus.NOT_RUN: "dim",
    LayerStatus.IGNORED: "dim",
}
SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow", Severity.INFO: "bold blue"}
# Condensed layer table: this many layers at each end, then every flagged layer; runs of flagged
# layers with one status are cut to their ends when the table would exceed MAX_ROWS.
END_ROWS = 3
MAX_ROWS = 24
RUN_ENDS = 2
STATUS_WIDTH = max(len(status.value) for status in LayerStatus)
TIME_STEP_ROWS = 8
# The gradient-flow charts: at most this many rows (consecutive layers or steps grouped beyond it), so
# the whole depth shows at a glance. BRIEF_CHART_ROWS keeps the default report on one screen (issue 23);
# -v draws CHART_ROWS; --all-layers one row per layer.
CHART_ROWS = 20
BRIEF_CHART_ROWS = 10
# A fix's code is indented this far under its finding.
CODE_INDENT = 5
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


class TextRenderer:
    def render(self, report: Report, stream: TextIO, options: RenderOptions) -> None:
        console = _console(stream, options)
        names = Names.of(report)
        if options.quiet:  # -q: the verdict line, the findings, one line on the fixes tried
            title = shown(report.title, LINE_CHARS)
            console.print(Text.assemble(("gradcheck  ", "bold"), title, "  ", _verdict_text(report.verdict)))
            _print_findings(console, report.diagnosis.findings, names, options.verbose)
            if report.fix_trials:
                console.print(_trials_line(report, names))
            return
        applied = [trial for trial in report.fix_trials if trial.applied]
        one_fix = len(report.fix_trials) == 1 and len(applied) == 1  # the demo: show it whole
        # the before and after charts share their axes, so their bars compare directly
        companion = applied[0].report if one_fix else None
        _render_report(console, report, options, names, heading=None, companion=companion)
        if report.baseline is not None:
            console.print()
            console.print(_baseline(report.baseline, names, console.width))
        if report.training:
            console.print()
            console.print(_training(report, console.width))
        if report.fix_trials and not one_fix and report.fix_trials_until_cured:
            console.print()
            console.print(_tried_in_order(report, names))
        elif report.fix_trials and not one_fix:
            console.print()
            console.print(_trials(report, names, console.width))
        elif one_fix:
            (trial,) = applied
            console.print()
            console.print(Rule(f"After the suggested fix: {trial.fix_id} ({trial.outcome.value})", style="cyan"))
            console.print(Text(f"Applied to a copy: {names.prose(trial.description)}.", style="cyan"))
            if options.verbose:
                console.print()
                console.print(_comparison(report, trial.report, names, console.width))
                console.print()
                _render_report(console, trial.report, options, names, heading="after", companion=report)
            else:
                console.print(_before_after(report, trial))
        adds = [] if options.verbose else _verbose_adds(report, options, one_fix)
        if adds:
            console.print()
            console.print(Text(f"-v: {', '.join(adds)}.", style="dim"))

    def render_many(self, reports: list[Report], stream: TextIO, options: RenderOptions) -> None:
        for index, report in enumerate(reports):
            if index:
                stream.write("\n")
                _console(stream, options).print(Rule(style="dim"))
            self.render(report, stream, options)


def _verbose_adds(report: Report, options: RenderOptions, one_fix: bool) -> list[str]:
    """What the default report left out that -v shows."""
    findings = report.diagnosis.findings
    parts = []
    if not options.all_layers:
        parts.append("the layer table")
    if report.result.recurrent:
        parts.append("the time-step table")
    if any(finding.evidence for finding in findings):
        parts.append("evidence")
    if len(findings) > 1 or any(len(f.causes) > 1 or len(f.fixes) > 1 for f in findings):
        parts.append("every cause and fix")
    if one_fix:
        parts.append("the fixed model's report")
    return parts


def _console(stream: TextIO, options: RenderOptions) -> Console:
    """--color always forces colour even into a pipe; never turns it off; auto (None) leaves it to Rich
    (NO_COLOR, FORCE_COLOR, whether the stream is a terminal)."""
    colour: dict = {}
    if options.color is True:
        colour = {"force_terminal": True}
    elif options.color is False:
        colour = {"no_color": True, "color_system": None}
    return Console(file=stream, width=options.width, highlight=False, soft_wrap=False, **colour)


def _verdict_text(verdict: Verdict) -> Text:
    return Text(verdict.value.upper(), style=VERDICT_STYLE[verdict])


def _render_report(
    console: Console,
    report: Report,
    options: RenderOptions,
    names: Names,
    heading: str | None,
    companion: Report | None = None,
) -> None:
    """One report; ``companion`` (the other side of a before/after) only widens the charts' axes."""
    console.print(_header(report, heading, names))
    console.print()
    chart_rows = None if options.all_layers else CHART_ROWS if options.verbose else BRIEF_CHART_ROWS
    _print_chart(
        console,
        _layer_bars(report, names),
        _layer_bars(companion, names) if companion else [],
        "Gradient flow, input end first",
        _layer_legend(report),
        "layers",
        chart_rows,
    )
    if options.verbose or options.all_layers:
        console.print(_layer_table(report, options, console.width, names))
        console.print()
    profiles = {profile.name: profile for profile in report.diagnosis.time_profiles}
    for series in report.result.recurrent:
        if series.stack is not None and series.name not in profiles:
            continue  # a stacked module's layers: the steepest one's chart (diagnosis.time_profiles_of)
        other = [s for s in (companion.result.recurrent if companion else []) if s.name == series.name]
        other_profiles = {p.name: p for p in companion.diagnosis.time_profiles} if companion else {}
        _print_chart(
            console,
            _step_bars(series, profiles.get(series.name), report.diagnosis),
            [bar for s in other for bar in _step_bars(s, other_profiles.get(s.name), companion.diagnosis)],
            f"Gradient through time in {shown(series.name)} ({shown(series.type)}), first step first",
            "Bar: per-sample RMS of dL/dx_t, the gradient reaching each step's input; log scale."
            if series.stack is None
            else f"Bar: per-sample RMS of dL/dx_t through {shown(series.name)} alone, from the gradient at "
            f"{shown(series.stack)}'s output; log scale.",
            "steps",
            chart_rows,
        )
        if options.verbose:
            console.print(_time_table(series, profiles.get(series.name), names, console.width))
            console.print()
    findings = report.diagnosis.findings
    if not findings:
        console.print(Text("No findings: gradients flow through every layer.", style="green"))
    _print_findings(console, findings, names, options.verbose)


def _header(report: Report, heading: str | None, names: Names) -> Group:
    result, diagnosis = report.result, report.diagnosis
    title = Text()
    title.append("gradcheck", style="bold")
    if heading:
        title.append(f" ({heading})", style="cyan")
    title.append(f"  {shown(report.title, LINE_CHARS)}")
    facts = Text(
        f"{result.param_count:,} parameters ({result.trainable_param_count:,} trainable) · "
        f"{len(result.layers)} layers · batch {result.batch_size} · {result.passes} pass{'es' if result.passes != 1 else ''} · seed {result.seed} · "
        f"{result.dtype} on {result.device} · {result.seconds:.2f} s",
        style="dim",
    )
    context = [
        Text.assemble((f"{shown(what)}: ", "bold dim"), (shown(how, LINE_CHARS), "dim")) for what, how in report.context
    ]
    verdict = Text("Verdict: ")
    verdict.append(diagnosis.verdict.value.upper(), style=VERDICT_STYLE[diagnosis.verdict])
    profile = diagnosis.profile
    if profile.decades is not None:
        verdict.append(f"   input/output backward signal 10^{profile.decades:+.1f}")
    if profile.gain_per_layer is not None:
        verdict.append(f" · gain x{profile.gain_per_layer:.3g}/layer")
    if profile.forward_decades is not None:
        verdict.append(f" · forward 10^{profile.forward_decades:+.1f}")
    for series in diagnosis.time_profiles:
        verdict.append(
            f"   {shown(series.name)}: first/last step 10^{series.decades:+.1f}, x{series.gain_per_step:.3g}/step"
        )
    return Group(title, facts, *context, verdict)


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


def _layer_table(report: Report, options: RenderOptions, width: int, names: Names) -> Group:
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
    return Group(Text("Layers, input end first", style="italic"), table, *_left_out(dropped, width))


def _left_out(dropped: list[Column], width: int) -> list[Text]:
    """One line naming the columns a narrow terminal left out, and where they are."""
    if not dropped:
        return []
    headers = ", ".join(column.header for column in dropped)
    return [Text(f"Not shown at {width} columns: {headers} (see --format json).", style="dim")]


def _print_chart(
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


def _layer_bars(report: Report, names: Names) -> list[Bar]:
    result, statuses = report.result, report.diagnosis.statuses
    return [_bar(shown(layer.name), signal_of(layer, result.hooked), statuses[layer.name]) for layer in result.layers]


def _layer_legend(report: Report) -> str:
    if report.result.hooked:
        return "Bar: the backward signal at each layer's output (per-sample RMS of dL/dout), log scale."
    return "Bar: each layer's weight-gradient norm (the model takes no hooks: no output gradients), log scale."


def _bar(label: str, value: float | None, status: LayerStatus) -> Bar:
    mark = "" if status is LayerStatus.OK else status.value
    return Bar(label, value, mark, STATUS_STYLE[status], CHART_SEVERITY[status])


def _step_bars(series: RecurrentStats, profile: TimeProfile | None, diagnosis: Diagnosis) -> list[Bar]:
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


def _time_table(series: RecurrentStats, profile: TimeProfile | None, names: Names, width: int) -> Group:
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


def _print_findings(console: Console, findings: list[Finding], names: Names, verbose: bool) -> None:
    """The findings in order; a blank line after one that shows code, to set the next apart."""
    after_code = False
    for number, finding in enumerate(findings, 1):
        parts = _finding(number, finding, names, verbose, console.width)
        if after_code:
            console.print()
        for part in parts:
            if isinstance(part, _Code):
                console.print(part.text, soft_wrap=True)
            else:
                console.print(part)
        after_code = any(isinstance(part, _Code) for part in parts)


def _finding(number: int, finding: Finding, names: Names, verbose: bool, width: int) -> list:
    """A finding. -v: its evidence, layers, every cause and fix. Otherwise the first finding keeps its
    first cause and fix (title, why, code) and the others their message: one line says what -v adds."""
    head = Text(f"{number}. ")
    head.append(finding.severity.value.upper(), style=SEVERITY_STYLE[finding.severity])
    head.append(f" {finding.kind.value}: ", style="bold")
    head.append(names.prose(finding.message))
    parts: list = [head]
    causes, fixes = finding.causes, finding.fixes
    if not verbose:
        causes, fixes = (causes[:1], fixes[:1]) if number == 1 else ([], [])
    if verbose:
        evidence = ", ".join(
            f"{key}={names.prose(_evidence_value(value))}"
            for key, value in finding.evidence.items()
            if value is not None
        )
        if evidence:
            parts.append(Padding(Text(f"evidence: {evidence}", style="dim"), (0, 0, 0, 3), expand=False))
        if finding.layers:
            listed = ", ".join(shown(name) for name in finding.layers[:4]) + (
                f" and {len(finding.layers) - 4} more" if len(finding.layers) > 4 else ""
            )
            parts.append(Padding(Text(f"layers: {listed}", style="dim"), (0, 0, 0, 3), expand=False))
    for rank, cause in enumerate(causes, 1):
        line = Text(f"cause {rank}: ", style="bold magenta")
        line.append(f"[{cause.id.value}] ", style="magenta")
        line.append(names.prose(cause.summary))
        parts.append(Padding(line, (1 if rank == 1 and verbose else 0, 0, 0, 3), expand=False))
    for rank, fix in enumerate(fixes, 1):
        title = Text(f"fix {rank}: ", style="bold cyan")
        title.append(f"[{fix.id}] ", style="cyan")
        title.append(names.prose(fix.title), style="bold")
        parts.append(Padding(title, (1 if rank == 1 and verbose else 0, 0, 0, 3), expand=False))
        parts.append(Padding(Text(names.prose(fix.detail)), (0, 0, 0, CODE_INDENT), expand=False))
        parts.append(_Code(names.code(fix.code), width))
        if rank < len(fixes):
            parts.append(Text())
    more = _more_with_verbose(finding.causes[len(causes) :], finding.fixes[len(fixes) :], bool(causes or fixes))
    if more is not None:
        parts.append(Padding(more, (0, 0, 0, 3), expand=False))
    return parts


def _more_with_verbose(causes: list, fixes: list, shown_some: bool) -> Text | None:
    """What -v would add to a finding, by id: ``-v: 1 more cause [init_scale]; 3 more fixes [init], ...``."""
    more = "more " if shown_some else ""
    parts = []
    for items, noun, ids in ((causes, "cause", [c.id.value for c in causes]), (fixes, "fix", [f.id for f in fixes])):
        if items:
            plural = noun + ("es" if noun == "fix" else "s") if len(items) > 1 else noun
            parts.append(f"{len(items)} {more}{plural} " + ", ".join(f"[{each}]" for each in ids))
    if not parts:
        return None
    return Text("-v: " + "; ".join(parts), style="dim")


class _Code:
    """Fix code, laid out to the width where Python allows a line break (render/code.py), never wrapped
    by the terminal: a line cut anywhere else (a comment in two) would not paste."""

    def __init__(self, code: str, width: int):
        laid_out = fit_code(code, max(width - CODE_INDENT, 20))
        indented = textwrap.indent(laid_out, " " * CODE_INDENT)
        syntax = Syntax(indented, "python", theme="ansi_dark", background_color="default")
        self.text = syntax.highlight(indented)
        self.text.rstrip()


def _comparison(before: Report, after: Report, names: Names, width: int) -> Group:
    b, a = before.diagnosis, after.diagnosis
    rows: list[list] = [
        [
            "verdict",
            Text(b.verdict.value, style=VERDICT_STYLE[b.verdict]),
            Text(a.verdict.value, style=VERDICT_STYLE[a.verdict]),
        ],
        ["backward signal input/output (decades)", _decades(b.profile.decades), _decades(a.profile.decades)],
        ["gain per layer", number_text(b.profile.gain_per_layer), number_text(a.profile.gain_per_layer)],
        [
            "forward signal output/input (decades)",
            _decades(b.profile.forward_decades),
            _decades(a.profile.forward_decades),
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
            [Text(f"{name}: first/last time step (decades)"), _decades(series_b.decades), _decades(series_a.decades)]
        )
        rows.append(
            [Text(f"{name}: gain per step"), number_text(series_b.gain_per_step), number_text(series_a.gain_per_step)]
        )
    errors = [sum(f.severity is Severity.ERROR for f in r.findings) for r in (b, a)]
    rows.append(["error findings", str(errors[0]), str(errors[1])])
    columns = [Column("measure", Cell.PROSE, fold_to=20), Column("before", Cell.NUMBER), Column("after", Cell.NUMBER)]
    table, _ = fitted_table(columns, rows, width)
    return Group(Text("Before -> after", style="italic"), table)


def _before_after(before: Report, trial: FixTrial, last: bool = True) -> Text:
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


def _tried_in_order(report: Report, names: Names) -> Group:
    """The demo's fixes tried one after another until one cured: each one's change and before -> after."""
    parts: list = [Rule("The suggested fixes, tried in order until one cures", style="cyan")]
    for index, trial in enumerate(report.fix_trials, 1):
        parts.append(
            Text(f"{index}. {trial.fix_id}, applied to a copy: {names.prose(trial.description)}.", style="cyan")
        )
        parts.append(_before_after(report, trial, last=False))
    cured = next((trial for trial in report.fix_trials if trial.outcome is TrialOutcome.CURED), None)
    tried = len(report.fix_trials)
    parts.append(
        Text(f"The first that cured: {cured.fix_id}." if cured else f"None of the {tried} fixes tried cured it.")
    )
    return Group(*parts)


def _trials(report: Report, names: Names, width: int) -> Group:
    """Every fix tried on a copy (--verify): the verdict and the depth trend before -> after, and what
    each fix changed (in a column when it fits, else one line each below the table)."""
    before = summarize(report)
    rows: list[list] = [
        [
            "(as measured)",
            Text(before["verdict"], style=VERDICT_STYLE[report.verdict]),
            "",
            _decades(before["decades"]),
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
                _decades(after["decades"]),
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
    return Group(*parts, *_left_out(dropped, width))


def _change(trial, names: Names) -> Text:
    return Text(names.prose(trial.description), style="" if trial.applied else "dim")


def _trials_line(report: Report, names: Names) -> Text:
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


def _baseline(comparison, names: Names, width: int) -> Group:
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


def _training(report: Report, width: int) -> Group:
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
                _decades(summary["decades"]),
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
    return Group(title, table, *_left_out(dropped, width))


def _first_grad(layers: list[LayerStats]) -> float | None:
    return next((layer.weight_grad_norm for layer in layers if layer.weight_grad_norm is not None), None)


def _decades(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def number_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return f"{value:.2e}" if (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:.3g}"


def _evidence_value(value) -> str:
    if isinstance(value, float):
        return number_text(value)
    return str(value)


def targets_summary(reports: list[Report], not_measured: int, exit_code: int) -> str:
    """The line that ends a scan of several targets: how many, each verdict's count, and the exit code,
    e.g. ``3 targets: 1 healthy, 1 vanishing, 1 not measured (exit 2)``."""
    counts = [(sum(r.verdict is verdict for r in reports), verdict.value) for verdict in Verdict]
    parts = [f"{count} {word}" for count, word in counts if count]
    if not_measured:
        parts.append(f"{not_measured} not measured")
    return f"{len(reports) + not_measured} targets: {', '.join(parts)} (exit {exit_code})"
