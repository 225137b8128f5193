"""The findings of a Rich report: each one's severity, kind and message; under -v its evidence and layers;
its causes and fixes, with each fix's code laid out to paste (render/code.py)."""

from __future__ import annotations

import textwrap

from rich.console import Console
from rich.padding import Padding
from rich.syntax import Syntax
from rich.text import Text

from gradcheck_cli.judge.diagnosis import Finding
from gradcheck_cli.render.code import fit_code
from gradcheck_cli.render.names import Names, shown
from gradcheck_cli.render.text_style import SEVERITY_STYLE, number_text

# A fix's code is indented this far under its finding.
CODE_INDENT = 5


def print_findings(console: Console, findings: list[Finding], names: Names, verbose: bool) -> None:
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
    if verbose:
        parts += _evidence_and_layers(finding, names)
    else:
        causes, fixes = (causes[:1], fixes[:1]) if number == 1 else ([], [])
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


def _evidence_and_layers(finding: Finding, names: Names) -> list[Padding]:
    """-v: the finding's evidence (key=value) and the first layers it names, a dim line each."""
    lines = []
    evidence = ", ".join(
        f"{key}={names.prose(_evidence_value(value))}" for key, value in finding.evidence.items() if value is not None
    )
    if evidence:
        lines.append(Padding(Text(f"evidence: {evidence}", style="dim"), (0, 0, 0, 3), expand=False))
    if finding.layers:
        listed = ", ".join(shown(name) for name in finding.layers[:4]) + (
            f" and {len(finding.layers) - 4} more" if len(finding.layers) > 4 else ""
        )
        lines.append(Padding(Text(f"layers: {listed}", style="dim"), (0, 0, 0, 3), expand=False))
    return lines


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


def _evidence_value(value) -> str:
    if isinstance(value, float):
        return number_text(value)
    return str(value)
