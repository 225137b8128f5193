"""The Rich terminal report. Colour is decoration only: every status is also a word, so ``NO_COLOR``
and pipes read the same. Rich itself honours NO_COLOR, FORCE_COLOR, COLUMNS and TTY detection."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from rich import box
from rich.console import Console, Group
from rich.padding import Padding
from rich.rule import Rule
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from gradcheck_cli.choices import FindingKind, LayerStatus, Severity, Verdict
from gradcheck_cli.diagnosis import Diagnosis, Finding, TimeProfile, signal_of
from gradcheck_cli.render.chart import Bar, chart_layout, draw_bar_chart, group_bars, group_size, log_scale
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.render.names import LINE_CHARS, Names, shown
from gradcheck_cli.report import Report, summarize
from gradcheck_cli.stats import LayerStats, RecurrentStats

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
# Terminal widths from which the optional layer-table columns show (see _COLUMNS).
FULL_WIDTH = 100
MEDIUM_WIDTH = 80
STATUS_WIDTH = max(len(status.value) for status in LayerStatus)
TIME_STEP_ROWS = 8
# The gradient-flow charts: at most this many rows (consecutive layers or steps grouped beyond it), so
# the whole depth shows at a glance even when the layer table is condensed. --all-layers: one per layer.
CHART_ROWS = 20
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
        if options.quiet:  # -q: the findings only, under one line naming the model and the verdict
            title = shown(report.title, LINE_CHARS)
            console.print(Text.assemble(("gradcheck  ", "bold"), title, "  ", _verdict_text(report.verdict)))
            for number, finding in enumerate(report.diagnosis.findings, 1):
                _print_finding(console, number, finding, names)
            return
        # one fix tried (the demo): the before and after charts share their axes, so their bars compare directly
        companion = report.fix_trials[0].report if len(report.fix_trials) == 1 else None
        _render_report(console, report, options, names, heading=None, companion=companion)
        if report.baseline is not None:
            console.print()
            console.print(_baseline(report.baseline, names))
        if report.training:
            console.print()
            console.print(_training(report))
        applied = [trial for trial in report.fix_trials if trial.applied]
        if len(report.fix_trials) > 1 or (report.fix_trials and not applied):
            console.print()
            console.print(_trials(report, names))
        elif applied:  # one fix tried (the demo): show it whole
            (trial,) = applied
            console.print()
            console.print(Rule(f"After the suggested fix: {trial.fix_id}", style="cyan"))
            console.print(Text(f"Applied to a copy: {names.prose(trial.description)}.", style="cyan"))
            console.print()
            console.print(_comparison(report, trial.report, names))
            console.print()
            _render_report(console, trial.report, options, names, heading="after", companion=report)

    def render_many(self, reports: list[Report], stream: TextIO, options: RenderOptions) -> None:
        for index, report in enumerate(reports):
            if index:
                stream.write("\n")
                _console(stream, options).print(Rule(style="dim"))
            self.render(report, stream, options)


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
    _print_chart(
        console,
        _layer_bars(report, names),
        _layer_bars(companion, names) if companion else [],
        "Gradient flow, input end first",
        _layer_legend(report),
        "layers",
        None if options.all_layers else CHART_ROWS,
    )
    console.print(_layer_table(report, options, console.width, names))
    profiles = {profile.name: profile for profile in report.diagnosis.time_profiles}
    for series in report.result.recurrent:
        console.print()
        other = [s for s in (companion.result.recurrent if companion else []) if s.name == series.name]
        other_profiles = {p.name: p for p in companion.diagnosis.time_profiles} if companion else {}
        _print_chart(
            console,
            _step_bars(series, profiles.get(series.name), report.diagnosis),
            [bar for s in other for bar in _step_bars(s, other_profiles.get(s.name), companion.diagnosis)],
            f"Gradient through time in {shown(series.name)} ({shown(series.type)}), first step first",
            "Bar: per-sample RMS of dL/dx_t, the gradient reaching each step's input; log scale.",
            "steps",
            CHART_ROWS,
        )
        console.print(_time_table(series, profiles.get(series.name), names))
    console.print()
    findings = report.diagnosis.findings
    if not findings:
        console.print(Text("No findings: gradients flow through every layer.", style="green"))
    for number, finding in enumerate(findings, 1):
        _print_finding(console, number, finding, names)


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
class _Column:
    header: str
    cell: Callable[[int, LayerStats, Diagnosis], str]
    min_terminal: int  # shown on terminals at least this wide
    number: bool = True


_COLUMNS = [
    _Column("#", lambda i, layer, d: str(i), FULL_WIDTH),
    _Column("layer", lambda i, layer, d: shown(layer.name), 0, number=False),
    _Column("type", lambda i, layer, d: shown(layer.type), MEDIUM_WIDTH, number=False),
    _Column("grad W", lambda i, layer, d: number_text(_weight_grad(layer)), MEDIUM_WIDTH),
    _Column("|g|/|w|", lambda i, layer, d: number_text(layer.relative_grad), FULL_WIDTH),
    _Column("dL/dout", lambda i, layer, d: number_text(layer.backward), 0),
    _Column("ratio", lambda i, layer, d: number_text(d.ratios.get(layer.name)), 0),
    _Column("fwd RMS", lambda i, layer, d: number_text(layer.forward_rms), FULL_WIDTH),
]


def _layer_table(report: Report, options: RenderOptions, width: int, names: Names) -> Table:
    result, diagnosis = report.result, report.diagnosis
    # Columns in order of importance: the narrower the terminal, the fewer of the optional ones.
    # Numbers and statuses keep their width; only the layer and type names give way (ellipsis).
    columns = [column for column in _COLUMNS if width >= column.min_terminal]
    table = Table(title="Layers, input end first", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    for column in columns:
        if column.number:
            table.add_column(column.header, justify="right", no_wrap=True, min_width=len(column.header))
        else:
            table.add_column(column.header, overflow="ellipsis", no_wrap=True, max_width=40, ratio=1)
    table.add_column("status", no_wrap=True, min_width=STATUS_WIDTH)
    statuses = [diagnosis.statuses[layer.name] for layer in result.layers]
    name_column = [column.header for column in columns].index("layer")

    def add_skipped(skipped: list[LayerStatus]) -> None:
        cells: list = [""] * len(columns)
        cells[name_column] = Text(f"... {len(skipped)} more", style="dim italic")
        kinds = {status for status in skipped}
        summary = skipped[0].value if len(kinds) == 1 else "mixed"
        table.add_row(*cells, Text(summary, style="dim italic"))

    previous = -1
    for index in _rows_to_show(statuses, options.all_layers):
        if index - previous > 1:
            add_skipped(statuses[previous + 1 : index])
        layer, status = result.layers[index], statuses[index]
        label = status.value + (f" (tied to {shown(layer.shared_with)})" if layer.shared_with else "")
        # Text, not str: a str cell is read as Rich markup, and a name such as "[/x]" is not valid markup.
        cells = [Text(column.cell(index, layer, diagnosis)) for column in columns]
        table.add_row(*cells, Text(label, style=STATUS_STYLE[status]))
        previous = index
    if previous < len(statuses) - 1:
        add_skipped(statuses[previous + 1 :])
    return table


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
    ellipsis = "..." if ascii_only else "…"
    rows, other = group_bars(bars, max_rows, ellipsis), group_bars(companion, max_rows, ellipsis)
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
    console.print(Text(legend, style="dim"))
    per_row = group_size(len(bars), max_rows)
    if per_row > 1:
        console.print(Text(f"{per_row} {items} per row: their geometric mean and most severe status.", style="dim"))
    console.print()


def _layer_bars(report: Report, names: Names) -> list[Bar]:
    result, statuses = report.result, report.diagnosis.statuses
    return [_bar(shown(layer.name), signal_of(layer, result.hooked), statuses[layer.name]) for layer in result.layers]


def _layer_legend(report: Report) -> str:
    if report.result.hooked:
        return "Bar: per-sample RMS of dL/dout, the gradient at each layer's output (backward signal); log scale."
    return "Bar: each layer's weight-gradient norm (the model takes no hooks: no output gradients); log scale."


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
    """The ends plus every flagged layer; long runs of one flagged status cut to their ends."""
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
    return sorted(keep)


def _time_table(series: RecurrentStats, profile: TimeProfile | None, names: Names) -> Group:
    title = Text(
        f"Time steps of {shown(series.name)} ({shown(series.type)}): gradient reaching each step's input",
        style="italic",
    )
    table = Table(header_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("step", justify="right")
    table.add_column("dL/dx_t", justify="right")
    table.add_column("ratio to last", justify="right")
    steps = series.time_steps
    count = len(steps)
    rows = (
        sorted({round(i * (count - 1) / (TIME_STEP_ROWS - 1)) for i in range(TIME_STEP_ROWS)})
        if count > TIME_STEP_ROWS
        else range(count)
    )
    for t in rows:
        ratio = profile.ratio_to_last[t] if profile is not None else None
        table.add_row(str(t + 1), number_text(steps[t]), number_text(ratio))
    return Group(title, table)


def _print_finding(console: Console, number: int, finding: Finding, names: Names) -> None:
    for part in _finding(number, finding, names):
        if isinstance(part, _Code):
            console.print(part.text, soft_wrap=True)
            console.print()
        else:
            console.print(part)


def _finding(number: int, finding: Finding, names: Names) -> list:
    head = Text(f"{number}. ")
    head.append(finding.severity.value.upper(), style=SEVERITY_STYLE[finding.severity])
    head.append(f" {finding.kind.value}: ", style="bold")
    head.append(names.prose(finding.message))
    parts: list = [head]
    evidence = ", ".join(
        f"{key}={names.prose(_evidence_value(value))}" for key, value in finding.evidence.items() if value is not None
    )
    if evidence:
        parts.append(Padding(Text(f"evidence: {evidence}", style="dim"), (0, 0, 0, 3)))
    if finding.layers:
        listed = ", ".join(shown(name) for name in finding.layers[:4]) + (
            f" and {len(finding.layers) - 4} more" if len(finding.layers) > 4 else ""
        )
        parts.append(Padding(Text(f"layers: {listed}", style="dim"), (0, 0, 0, 3)))
    for rank, cause in enumerate(finding.causes, 1):
        line = Text(f"cause {rank}: ", style="bold magenta")
        line.append(f"[{cause.id.value}] ", style="magenta")
        line.append(names.prose(cause.summary))
        parts.append(Padding(line, (1 if rank == 1 else 0, 0, 0, 3)))
    for rank, fix in enumerate(finding.fixes, 1):
        title = Text(f"fix {rank}: ", style="bold cyan")
        title.append(f"[{fix.id}] ", style="cyan")
        title.append(names.prose(fix.title), style="bold")
        parts.append(Padding(title, (1 if rank == 1 else 0, 0, 0, 3)))
        parts.append(Padding(Text(names.prose(fix.detail)), (0, 0, 0, 5)))
        parts.append(_Code(names.code(fix.code)))
    return parts


class _Code:
    """Fix code, printed with its lines whole: a wrapped line (a comment cut in two) would not paste."""

    def __init__(self, code: str):
        indented = textwrap.indent(code, " " * 5)
        syntax = Syntax(indented, "python", theme="ansi_dark", background_color="default")
        self.text = syntax.highlight(indented)
        self.text.rstrip()


def _comparison(before: Report, after: Report, names: Names) -> Table:
    table = Table(title="Before -> after", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("measure")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    b, a = before.diagnosis, after.diagnosis
    table.add_row(
        "verdict",
        Text(b.verdict.value, style=VERDICT_STYLE[b.verdict]),
        Text(a.verdict.value, style=VERDICT_STYLE[a.verdict]),
    )
    table.add_row("backward signal input/output (decades)", _decades(b.profile.decades), _decades(a.profile.decades))
    table.add_row("gain per layer", number_text(b.profile.gain_per_layer), number_text(a.profile.gain_per_layer))
    table.add_row(
        "forward signal output/input (decades)",
        _decades(b.profile.forward_decades),
        _decades(a.profile.forward_decades),
    )
    table.add_row(
        "first layer grad W",
        number_text(_first_grad(before.result.layers)),
        number_text(_first_grad(after.result.layers)),
    )
    for series_b, series_a in zip(b.time_profiles, a.time_profiles):
        name = shown(series_b.name)
        table.add_row(
            Text(f"{name}: first/last time step (decades)"), _decades(series_b.decades), _decades(series_a.decades)
        )
        table.add_row(
            Text(f"{name}: gain per step"), number_text(series_b.gain_per_step), number_text(series_a.gain_per_step)
        )
    errors = [sum(f.severity is Severity.ERROR for f in r.findings) for r in (b, a)]
    table.add_row("error findings", str(errors[0]), str(errors[1]))
    return table


def _trials(report: Report, names: Names) -> Group:
    """Every fix tried on a copy (--verify): the verdict and the depth trend before -> after."""
    before = summarize(report)
    table = Table(
        title="Fixes tried on a copy of the model (--verify)",
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
    )
    for column in ("fix", "verdict", "input/output", "gain/layer", "max |g| total", "change"):
        table.add_column(
            column, justify="right" if column in ("input/output", "gain/layer", "max |g| total") else "left"
        )
    table.add_row(
        "(as measured)",
        Text(before["verdict"], style=VERDICT_STYLE[report.verdict]),
        _decades(before["decades"]),
        number_text(before["gain_per_layer"]),
        number_text(before["max_total_grad_norm"]),
        "",
    )
    for trial in report.fix_trials:
        if trial.report is None:
            table.add_row(
                Text(trial.fix_id),
                Text("not applied", style="dim"),
                "",
                "",
                "",
                Text(names.prose(trial.description), style="dim"),
            )
            continue
        after = summarize(trial.report)
        table.add_row(
            Text(trial.fix_id),
            Text(after["verdict"], style=VERDICT_STYLE[trial.report.verdict]),
            _decades(after["decades"]),
            number_text(after["gain_per_layer"]),
            number_text(after["max_total_grad_norm"]),
            Text(names.prose(trial.description)),
        )
    return Group(table)


def _baseline(comparison, names: Names) -> Group:
    """--baseline: the verdict of the comparison, then the layers that moved most."""
    if comparison.regressed:
        head = Text(f"Baseline: REGRESSED (tolerance x{comparison.tolerance:g}); see the baseline_regression finding.")
        head.stylize("bold red")
    else:
        head = Text(f"Baseline: no regression (tolerance x{comparison.tolerance:g}).", style="green")
    if not comparison.changes:
        return Group(head)
    table = Table(header_style="bold", box=box.SIMPLE_HEAD)
    for column in ("layer", "what", "before", "after", "factor", ""):
        table.add_column(column, justify="right" if column in ("before", "after", "factor") else "left")
    for change in comparison.changes[:10]:
        table.add_row(
            Text(shown(change.layer)), change.what, number_text(change.before), number_text(change.after), number_text(change.factor),
            Text("regression", style="bold red") if change.regression else "",
        )  # fmt: skip
    return Group(head, table)


def _training(report: Report) -> Table:
    table = Table(
        title=f"Training on a copy: {report.training_setup}",
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
    )
    columns = ("step", "loss", "verdict", "input/output", "gain/layer", "max |g| total", "max |g|/|w|", "dead units")
    for column in columns:
        table.add_column(column, justify="left" if column == "verdict" else "right")
    rows = [(step.step, step.loss, step.report) for step in report.training]
    for step, loss, measured in rows:
        summary = summarize(measured)
        dead = summary["max_dead_fraction"]
        table.add_row(
            str(step),
            number_text(loss),
            Text(summary["verdict"], style=VERDICT_STYLE[measured.verdict]),
            _decades(summary["decades"]),
            number_text(summary["gain_per_layer"]),
            number_text(summary["max_total_grad_norm"]),
            number_text(summary["max_relative_grad"]),
            "-" if dead is None else f"{dead:.0%}",
        )
    return table


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
