"""``--format markdown``: a pull-request comment. GitHub-flavoured Markdown, no ANSI; the fixes fold into
``<details>`` blocks so a comment on a healthy target stays two lines long."""

from __future__ import annotations

import html
import re
from typing import TextIO

from gradcheck_cli.common.choices import Severity, Verdict
from gradcheck_cli.judge.diagnosis import Finding
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.render.names import LINE_CHARS, Names, shown
from gradcheck_cli.report.report import Report, summarize

# The findings table holds one line per finding; the whole message follows in the finding's section.
TABLE_MESSAGE_CHARS = 120
SHOWN_LAYERS = 4
# Characters that Markdown reads as markup in running text (``_`` too: ``._orig_mod`` opens emphasis).
_MARKUP = re.compile(r"([\\`*_\[\]|])")
_ENTITY = re.compile(r"&(?=#?\w+;)")  # an "&" that would start an HTML entity; a lone "&" reads as itself
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # a "<" that would start an HTML tag; "<=" reads as itself


class MarkdownRenderer:
    def render(self, report: Report, stream: TextIO, options: RenderOptions) -> None:
        stream.write("\n".join(_section(report)) + "\n")

    def render_many(self, reports: list[Report], stream: TextIO, options: RenderOptions) -> None:
        """A first line with the worst verdict, a table of targets, then one section per target."""
        worst = max((report.verdict for report in reports), key=lambda verdict: verdict.rank, default=Verdict.HEALTHY)
        counts = {verdict: sum(report.verdict is verdict for report in reports) for verdict in reversed(Verdict)}
        tally = ", ".join(f"{count} {verdict.value}" for verdict, count in counts.items() if count)
        targets = _plural(len(reports), "target") + (f": {tally}" if tally else "")
        lines = [f"## gradcheck: **{worst.value.upper()}** ({targets})", ""]
        lines += ["| target | verdict | errors | warnings |", "|---|---|--:|--:|"]
        for report in reports:
            errors, warnings = _count(report, Severity.ERROR), _count(report, Severity.WARNING)
            lines.append(
                f"| {_text(shown(report.title, LINE_CHARS))} | {report.verdict.value} | {errors} | {warnings} |"
            )
        for report in reports:
            lines += ["", "---", "", *_section(report)]
        stream.write("\n".join(lines) + "\n")


def _section(report: Report) -> list[str]:
    names = Names.of(report)
    title = _text(shown(report.title, LINE_CHARS))
    lines = [f"### gradcheck: {title}: **{report.verdict.value.upper()}**", "", _profile(report, names), ""]
    findings = report.diagnosis.findings
    if not findings:
        lines += ["No findings: gradients flow through every layer."]
    else:
        lines += ["| # | severity | kind | message | layers |", "|--:|---|---|---|--:|"]
        for number, finding in enumerate(findings, 1):
            message = _text(_shorten(names.prose(finding.message), TABLE_MESSAGE_CHARS))
            lines.append(
                f"| {number} | {finding.severity.value} | `{finding.kind.value}` | {message} | {len(finding.layers)} |"
            )
        for number, finding in enumerate(findings, 1):
            lines += ["", *_finding(number, finding, names)]
    if report.fix_trials:
        lines += ["", *_trials(report, names)]
    return lines


def _profile(report: Report, names: Names) -> str:
    """The depth trend (or each recurrent module's trend through time) on one line."""
    profile = report.diagnosis.profile
    parts = []
    if profile.decades is not None:
        parts.append(f"input/output backward signal 10^{profile.decades:+.1f}")
    if profile.gain_per_layer is not None:
        parts.append(f"gain x{profile.gain_per_layer:.3g}/layer")
    if profile.forward_decades is not None:
        parts.append(f"forward 10^{profile.forward_decades:+.1f}")
    for series in report.diagnosis.time_profiles:
        parts.append(
            f"{_text(shown(series.name))} ({series.steps} steps): first/last step 10^{series.decades:+.1f}, "
            f"x{series.gain_per_step:.3g}/step"
        )
    result = report.result
    facts = f"{len(result.layers)} layers, {result.param_count:,} parameters, {result.seconds:.2f} s"
    return f"{' · '.join(parts) or 'no depth trend measured'} ({facts})"


def _finding(number: int, finding: Finding, names: Names) -> list[str]:
    lines = [
        f"#### {number}. {finding.severity.value}: `{finding.kind.value}`",
        "",
        _text(names.prose(finding.message)),
    ]
    if finding.layers:
        listed = ", ".join(_code_span(shown(name)) for name in finding.layers[:SHOWN_LAYERS])
        more = len(finding.layers) - SHOWN_LAYERS
        lines += ["", f"Layers: {listed}{f' and {more} more' if more > 0 else ''}"]
    if finding.causes:
        lines += ["", "Causes, most supported first:", ""]
        lines += [f"- **{cause.id.value}**: {_text(names.prose(cause.summary))}" for cause in finding.causes]
    for rank, fix in enumerate(finding.fixes, 1):
        # Inside an HTML block GitHub reads no Markdown until the blank line: the summary is HTML-escaped.
        summary = html.escape(f"fix {rank}: [{fix.id}] {names.prose(fix.title)}", quote=False)
        lines += ["", f"<details><summary>{summary}</summary>", "", _text(names.prose(fix.detail)), ""]
        lines += [_fence(names.code(fix.code)), "", "</details>"]
    return lines


def _trials(report: Report, names: Names) -> list[str]:
    """Each fix tried on a copy of the model: the verdict and the depth trend, as measured first."""
    before = summarize(report)
    lines = ["Fixes tried on a copy of the model:", "", "| fix | verdict | input/output |", "|---|---|--:|"]
    lines.append(f"| (as measured) | {before['verdict']} | {_decades(before['decades'])} |")
    for trial in report.fix_trials:
        if trial.report is None:
            lines.append(f"| {_text(trial.fix_id)} | not applied | |")
            continue
        after = summarize(trial.report)
        lines.append(f"| {_text(trial.fix_id)} | {after['verdict']} | {_decades(after['decades'])} |")
    return lines


def _code_span(text: str) -> str:
    """Inline code that holds any backticks: delimited by a longer run of them, padded with a space when
    the text starts or ends with one (CommonMark strips one space from each end)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padded = f" {text} " if text[:1] == "`" or text[-1:] == "`" else text
    return f"{fence}{padded}{fence}"


def _fence(code: str) -> str:
    """A ```python fence, longer than any run of backticks in the code so the code cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}python\n{code.rstrip()}\n{fence}"


def _text(text: str) -> str:
    """Running text on one line: whitespace collapsed, markup characters escaped, HTML tags shown as text
    (only a "<" that would open a tag is escaped; a lone ">" is plain text in Markdown)."""
    flat = " ".join(text.split())
    flat = _MARKUP.sub(r"\\\1", _TAG.sub("&lt;", _ENTITY.sub("&amp;", flat)))
    # A line that starts with one of these would become a quote, a heading or a list item.
    return "\\" + flat if flat[:1] in (">", "#", "-", "+", "=") else flat


def _shorten(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rstrip() + "…"


def _count(report: Report, severity: Severity) -> int:
    return sum(finding.severity is severity for finding in report.diagnosis.findings)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _decades(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"
