"""What the reports show of the names a model's author chose: layer, module and class names, and the titles,
paths and messages that carry them (issue 21).

A module name may hold any character but ".": a newline followed by ``::error file=x::`` would start a line
that GitHub Actions runs as a workflow command when the report is printed in a CI log; an ESC sequence
would reach the terminal; a 3,000-character name would fill the screen. So every renderer shows such text
through this module: control characters as escapes (``\\n``, ``\\x1b``, ``\\u2028``), ``::`` broken (the
runner reads a command from any line that starts with ``::`` once its leading spaces are stripped, and a
terminal report wraps a long line at any space), long names cut in the middle with an ellipsis. The JSON and
SARIF documents keep every name whole: ``json.dumps`` escapes what JSON must.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradcheck_cli.report.report import Report

NAME_CHARS = 80  # a layer or class name: its start and its end, which says which layer it is
LINE_CHARS = 160  # a title, a path or a context row: one line of its own
ELLIPSIS = "\u2026"

# C0, DEL and C1 controls; the Unicode line and paragraph separators, which some terminals and log viewers
# break lines at; and the bidirectional controls, which make text read other than it is (CVE-2021-42574).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str, keep_newlines: bool = False) -> str:
    """Every control character shown as its escape, e.g. ``\\n``, ``\\x1b``, ``\\u2028``; with
    ``keep_newlines`` (code, which is shown over several lines) the line breaks stay."""
    if keep_newlines:
        return "\n".join(_CONTROL.sub(_escaped, line) for line in text.split("\n"))
    return _CONTROL.sub(_escaped, text)


def shorten(text: str, limit: int | None) -> str:
    """At most ``limit`` characters: the start and the end, an ellipsis between (None: whole)."""
    if limit is None or len(text) <= limit:
        return text
    keep = max(limit - 1, 0)
    head = keep - keep // 2
    return text[:head] + ELLIPSIS + (text[len(text) - keep // 2 :] if keep // 2 else "")


def _no_command(text: str) -> str:
    return text.replace("::", ":\\x3a")


def shown(text: str, limit: int | None = NAME_CHARS) -> str:
    """One name (or a title, a path) as a report shows it: on one line, no control character, no ``::``
    (shown ``:\\x3a``), cut to ``limit`` characters (None: whole)."""
    return shorten(_no_command(escape(text)), limit)


class Names:
    """The names of one report's modules that do not show as they are, to show them the way ``shown`` does
    inside the text that embeds them (a finding's message, a cause, a fix's code): the diagnosis writes
    names into its messages, and a renderer formats, so the renderer escapes them."""

    def __init__(self, names: Iterable[str], limit: int | None = NAME_CHARS):
        changed = {name: shown(name, limit) for name in set(names)}
        # longest first: a name that holds another is replaced whole
        self._replacements = sorted(
            ((name, text) for name, text in changed.items() if text != name), key=lambda pair: -len(pair[0])
        )

    @classmethod
    def of(cls, report: Report, limit: int | None = NAME_CHARS) -> Names:
        """Every layer, activation and recurrent module of the report, its fixes' and training steps' too."""
        reports = [report, *(trial.report for trial in report.fix_trials if trial.report is not None)]
        reports += [step.report for step in report.training]
        names = [
            item.name
            for each in reports
            for item in (*each.result.layers, *each.result.activations, *each.result.recurrent)
        ]
        return cls(names, limit)

    def _replaced(self, text: str) -> str:
        for name, replacement in self._replacements:
            if name in text:
                text = text.replace(name, replacement)
        return text

    def prose(self, text: str) -> str:
        """Text gradcheck wrote (a message, a cause, a fix's title): the names in it shown; its own line
        breaks kept for the renderer to lay out; any other control character escaped and ``::`` broken, so
        that a name the diagnosis took from elsewhere (a parameter's) starts no command either."""
        return _no_command(self.code(text))

    def code(self, text: str) -> str:
        """A fix's code: as ``prose``, but ``::`` left as it is (``x[::2]``)."""
        return escape(self._replaced(text), keep_newlines=True)
