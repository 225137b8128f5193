"""``--format github``: GitHub Actions workflow commands. Each finding becomes an annotation on the line that
defines the model (``::error file=...,line=...,title=...::message``), then one plain summary line per target.

Escaping follows the runner's own (actions/toolkit, packages/core/src/command.ts): the message escapes
``%``, CR and LF; property values also ``:`` and ``,``, which would otherwise end the value. The names and
messages in them are first shown as every report shows them (render/names.py): one line, no control
character, long names cut.
"""

from __future__ import annotations

from typing import TextIO

from gradcheck_cli.common.choices import Severity
from gradcheck_cli.judge.diagnosis import Finding
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.render.names import LINE_CHARS, Names, escape, shown
from gradcheck_cli.render.sarif import source_path
from gradcheck_cli.report.report import Report

COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


class GithubRenderer:
    def render(self, report: Report, stream: TextIO, options: RenderOptions) -> None:
        self.render_many([report], stream, options)

    def render_many(self, reports: list[Report], stream: TextIO, options: RenderOptions) -> None:
        """Every target's annotations first, then the summaries: the log reads as a list of what failed."""
        lines = [
            _annotation(report, finding, Names.of(report))
            for report in reports
            for finding in report.diagnosis.findings
        ]
        lines += [summary(report) for report in reports]
        stream.write("\n".join(lines) + "\n")


def _annotation(report: Report, finding: Finding, names: Names) -> str:
    properties = []
    if report.source_path is not None:
        properties.append(f"file={escape_property(escape(source_path(report.source_path)))}")
        if report.source_line is not None:
            properties.append(f"line={report.source_line}")
    properties.append(f"title={escape_property(f'gradcheck {finding.kind.value}')}")
    text = [names.prose(finding.message)]
    if report.source_path is None:  # no file to annotate: say which target it is about
        text.insert(0, f"{shown(report.title, LINE_CHARS)}:")
    if finding.causes:
        text.append(f"Cause: {names.prose(finding.causes[0].summary)}")
    if finding.fixes:
        text.append(f"Fix: [{finding.fixes[0].id}] {names.prose(finding.fixes[0].title)}")
    return f"::{COMMAND[finding.severity]} {','.join(properties)}::{escape_data(chr(10).join(text))}"


def summary(report: Report) -> str:
    """E.g. ``gradcheck: examples/x.py (Sequential): vanishing (1 error, 0 warnings)``."""
    errors, warnings, notes = (
        sum(finding.severity is severity for finding in report.diagnosis.findings)
        for severity in (Severity.ERROR, Severity.WARNING, Severity.INFO)
    )
    counts = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}" + (f", {notes} info" if notes else "")
    # Kept on one line: a title's newline could start a line the runner would read as a command.
    return f"gradcheck: {shown(report.title, LINE_CHARS)}: {report.verdict.value} ({counts})"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
