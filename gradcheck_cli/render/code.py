"""A fix's code laid out to the terminal's width without changing what it does (issue 23).

A terminal that wraps a code line breaks it where Python does not allow it, and the pasted fix fails. So a
line too long for the width is laid out the way a person would: its trailing comment moved onto lines of
its own above it, then a call's arguments one per line inside its parentheses (where Python allows any line
break). A line that cannot be broken so (no call to open) stays whole, even past the width: code is never cut.
"""

from __future__ import annotations

import io
import textwrap
import tokenize

INDENT = "    "


def fit_code(code: str, width: int) -> str:
    """``code`` with every line at most ``width`` characters where it can be broken safely."""
    lines: list[str] = []
    for line in code.split("\n"):
        lines.extend(_fit_line(line, width))
    return "\n".join(lines)


def _tokens(text: str) -> list[tokenize.TokenInfo] | None:
    """The tokens of one logical line, or None when it is not one by itself (an open bracket, a string
    continued on the next line): such a line is left as it is."""
    try:
        return list(tokenize.generate_tokens(io.StringIO(text + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None


def _fit_line(line: str, width: int) -> list[str]:
    if len(line) <= width:
        return [line]
    margin = line[: len(line) - len(line.lstrip())]
    text = line.strip()
    tokens = _tokens(text)
    if tokens is None:
        return [line]
    comment = next((t for t in tokens if t.type == tokenize.COMMENT and t.start[1] > 0), None)
    if comment is not None:
        code = text[: comment.start[1]].rstrip()
        words = comment.string.lstrip("#").strip()
        room = max(width - len(margin) - 2, 20)
        above = [f"{margin}# {part}" for part in textwrap.wrap(words, room, break_long_words=False)]
        return above + _fit_line(margin + code, width)
    return _broken_call(margin, text, tokens, width) or [line]


def _broken_call(margin: str, text: str, tokens: list[tokenize.TokenInfo], width: int) -> list[str] | None:
    """``f(a, b)`` as ``f(`` / the arguments one per line, indented / ``)``, when the line ends with the
    call's closing parenthesis (or that and the colon of an ``if``); each argument laid out again if it is
    still too long. No comma is added: a trailing one would make ``(a)`` a tuple."""
    significant = [t for t in tokens if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)]
    depth, opening, commas = 0, None, []
    for index, token in enumerate(significant):
        if token.type != tokenize.OP:
            continue
        if token.string in "([{":
            is_call = token.string == "(" and index > 0 and significant[index - 1].string not in "([{,=:+-*/%<>"
            if depth == 0 and opening is None and is_call:
                opening = index
            depth += 1
        elif token.string in ")]}":
            depth -= 1
            if depth == 0 and opening is not None:
                rest = [token.string for token in significant[index + 1 :]]
                if rest not in ([], [":"]):
                    return None  # the call is not the end of the line: `f(x).y`, `f(x) + 1`
                closing = index
                break
        elif token.string == "," and depth == 1 and opening is not None:
            commas.append(index)
    else:
        return None
    start, end = significant[opening].end[1], significant[closing].start[1]
    cuts = [significant[i].start[1] for i in commas]
    arguments = [text[a:b].lstrip(",").strip() for a, b in zip([start, *cuts], [*cuts, end])]
    if not all(arguments):
        return None
    inner = margin + INDENT
    lines = [margin + text[:start]]
    for number, argument in enumerate(arguments):
        comma = "," if number < len(arguments) - 1 else ""
        lines.extend(_fit_line(inner + argument + comma, width))
    lines.append(margin + text[end:])
    return lines
