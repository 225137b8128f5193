"""The Rich terminal report. Colour is decoration only: every status is also a word, so ``NO_COLOR``
and pipes read the same. Rich itself honours NO_COLOR, FORCE_COLOR, COLUMNS and TTY detection.

By default the report fits one screen (issue 23): the verdict, the gradient-flow chart, the top finding with
its first cause and fix, one line for each other finding. ``-v`` adds the layer table, each finding's
evidence and every cause and fix, and (demo) the fixed model's whole report. Every table reads whole at
80 columns (render/table.py); ``-q`` keeps the verdict line, the findings and one line on the fixes tried.
"""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from gradcheck_cli.common.choices import Verdict
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.render.names import LINE_CHARS, Names, shown
from gradcheck_cli.render.text_baseline import baseline_table
from gradcheck_cli.render.text_charts import (
    BRIEF_CHART_ROWS,
    CHART_ROWS,
    layer_bars,
    layer_legend,
    print_chart,
    step_bars,
)
from gradcheck_cli.render.text_findings import print_findings
from gradcheck_cli.render.text_header import header
from gradcheck_cli.render.text_layers import layer_table, time_table
from gradcheck_cli.render.text_style import verdict_text
from gradcheck_cli.render.text_training import training_table
from gradcheck_cli.render.text_trials import before_after, comparison_table, trials_line, trials_table, tried_in_order
from gradcheck_cli.report.report import Report


class TextRenderer:
    def render(self, report: Report, stream: TextIO, options: RenderOptions) -> None:
        console = _console(stream, options)
        names = Names.of(report)
        if options.quiet:  # -q: the verdict line, the findings, one line on the fixes tried
            title = shown(report.title, LINE_CHARS)
            console.print(Text.assemble(("gradcheck  ", "bold"), title, "  ", verdict_text(report.verdict)))
            print_findings(console, report.diagnosis.findings, names, options.verbose)
            if report.fix_trials:
                console.print(trials_line(report))
            return
        applied = [trial for trial in report.fix_trials if trial.applied]
        one_fix = len(report.fix_trials) == 1 and len(applied) == 1  # the demo: show it whole
        # the before and after charts share their axes, so their bars compare directly
        companion = applied[0].report if one_fix else None
        _render_report(console, report, options, names, heading=None, companion=companion)
        if report.baseline is not None:
            console.print()
            console.print(baseline_table(report.baseline, console.width))
        if report.training:
            console.print()
            console.print(training_table(report, console.width))
        if report.fix_trials and not one_fix and report.fix_trials_until_cured:
            console.print()
            console.print(tried_in_order(report, names))
        elif report.fix_trials and not one_fix:
            console.print()
            console.print(trials_table(report, names, console.width))
        elif one_fix:
            (trial,) = applied
            console.print()
            console.print(Rule(f"After the suggested fix: {trial.fix_id} ({trial.outcome.value})", style="cyan"))
            console.print(Text(f"Applied to a copy: {names.prose(trial.description)}.", style="cyan"))
            if options.verbose:
                console.print()
                console.print(comparison_table(report, trial.report, console.width))
                console.print()
                _render_report(console, trial.report, options, names, heading="after", companion=report)
            else:
                console.print(before_after(report, trial))
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


def _render_report(
    console: Console,
    report: Report,
    options: RenderOptions,
    names: Names,
    heading: str | None,
    companion: Report | None = None,
) -> None:
    """One report; ``companion`` (the other side of a before/after) only widens the charts' axes."""
    console.print(header(report, heading))
    console.print()
    chart_rows = None if options.all_layers else CHART_ROWS if options.verbose else BRIEF_CHART_ROWS
    print_chart(
        console,
        layer_bars(report),
        layer_bars(companion) if companion else [],
        "Gradient flow, input end first",
        layer_legend(report),
        "layers",
        chart_rows,
    )
    if options.verbose or options.all_layers:
        console.print(layer_table(report, options, console.width))
        console.print()
    profiles = {profile.name: profile for profile in report.diagnosis.time_profiles}
    for series in report.result.recurrent:
        if series.stack is not None and series.name not in profiles:
            continue  # a stacked module's layers: the steepest one's chart (diagnosis.time_profiles_of)
        other = [s for s in (companion.result.recurrent if companion else []) if s.name == series.name]
        other_profiles = {p.name: p for p in companion.diagnosis.time_profiles} if companion else {}
        print_chart(
            console,
            step_bars(series, profiles.get(series.name), report.diagnosis),
            [bar for s in other for bar in step_bars(s, other_profiles.get(s.name), companion.diagnosis)],
            f"Gradient through time in {shown(series.name)} ({shown(series.type)}), first step first",
            "Bar: per-sample RMS of dL/dx_t, the gradient reaching each step's input; log scale."
            if series.stack is None
            else f"Bar: per-sample RMS of dL/dx_t through {shown(series.name)} alone, from the gradient at "
            f"{shown(series.stack)}'s output; log scale.",
            "steps",
            chart_rows,
        )
        if options.verbose:
            console.print(time_table(series, profiles.get(series.name), console.width))
            console.print()
    findings = report.diagnosis.findings
    if not findings:
        console.print(Text("No findings: gradients flow through every layer.", style="green"))
    print_findings(console, findings, names, options.verbose)


def targets_summary(reports: list[Report], not_measured: int, exit_code: int) -> str:
    """The line that ends a scan of several targets: how many, each verdict's count, and the exit code,
    e.g. ``3 targets: 1 healthy, 1 vanishing, 1 not measured (exit 2)``."""
    counts = [(sum(r.verdict is verdict for r in reports), verdict.value) for verdict in Verdict]
    parts = [f"{count} {word}" for count, word in counts if count]
    if not_measured:
        parts.append(f"{not_measured} not measured")
    return f"{len(reports) + not_measured} targets: {', '.join(parts)} (exit {exit_code})"
