"""The checks of single config values: each reads one key's node into the value it stands for, or fails in one
sentence that names the key, what it takes and what it got. The settings table (config/settings.py) says
which check each key has. Numbers are held to the same ranges as the command line (``limits.RANGES``).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable
from enum import Enum
from typing import Any

from gradcheck_cli.common.errors import InvalidOptionError
from gradcheck_cli.common.limits import RANGES, parse_memory, range_problem
from gradcheck_cli.config.nodes import Check, Context, Node, items, show


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(minimum: int) -> Check:
    def check(node: Node, key: str, context: Context) -> int:
        if not is_int(node.value) or node.value < minimum:
            context.fail(node.line, f"'{key}' must be an integer of at least {minimum}, not {show(node)}.")
        return node.value

    return check


def ranged(name: str) -> Check:
    """A number in ``limits.RANGES[name]``: the same range as the command line's option and the API's
    argument (a seed past 2**63 would otherwise reach torch and fail there)."""

    def check(node: Node, key: str, context: Context) -> int | float:
        problem = range_problem(name, node.value)
        if problem is not None:
            context.fail(node.line, f"'{key}' {problem}, not {show(node)}.")
        return node.value if RANGES[name].integer else float(node.value)

    return check


def number(above: float) -> Check:
    def check(node: Node, key: str, context: Context) -> float:
        value = node.value
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value > above)
        ):
            context.fail(node.line, f"'{key}' must be a number greater than {above:g}, not {show(node)}.")
        return float(value)

    return check


def boolean(node: Node, key: str, context: Context) -> bool:
    if not isinstance(node.value, bool):
        context.fail(node.line, f"'{key}' must be true or false, not {show(node)}.")
    return node.value


def trust_pickle(node: Node, key: str, context: Context) -> bool:
    """Unpickling runs code, so the consent to it cannot come from a file the user did not name: the search
    goes up to the filesystem root, and a folder above (a shared or world-writable /tmp) may hold a config
    file that someone else wrote. Refused rather than ignored, so that the user sees why it did not apply."""
    value = boolean(node, key, context)
    if value and not context.named:
        context.fail(
            node.line,
            f"'{key}' is honoured only from --trust-pickle or a file given with --config, not from a config "
            "file found by searching the parent folders; pass --trust-pickle, or name this file with --config.",
        )
    return value


def memory(node: Node, key: str, context: Context) -> int:
    """A size such as "8G", "512M" or "75%" (of this machine's memory), or a number of bytes -> bytes."""
    value = node.value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        context.fail(node.line, f"'{key}' must be a size such as 8G, 512M or 75%, not {show(node)}.")
    try:
        return parse_memory(str(value), shown_as=f"'{key}'")
    except InvalidOptionError as error:
        context.fail(node.line, str(error))


def text(node: Node, key: str, context: Context) -> str:
    if not isinstance(node.value, str) or not node.value.strip():
        context.fail(node.line, f"'{key}' must be a non-empty string, not {show(node)}.")
    return node.value


def one_of(names: tuple[str, ...], convert: Callable[[str], Any] = str) -> Check:
    def check(node: Node, key: str, context: Context) -> Any:
        if isinstance(node.value, str) and node.value in names:
            return convert(node.value)
        close = difflib.get_close_matches(node.value, names, n=1) if isinstance(node.value, str) else []
        hint = f"; did you mean '{close[0]}'?" if close else "."
        context.fail(node.line, f"'{key}' must be one of {', '.join(names)}, not {show(node)}{hint}")

    return check


def choice(enum: type[Enum]) -> Check:
    return one_of(tuple(member.value for member in enum), enum)


def patterns(node: Node, key: str, context: Context) -> tuple[str, ...]:
    found = []
    for item in items(node):
        if node.mapping or not isinstance(item.value, str) or not item.value.strip():
            context.fail(item.line, f"'{key}' must be a list of glob patterns on layer names, not {show(item)}.")
        found.append(item.value)
    return tuple(found)


def folders(node: Node, key: str, context: Context) -> tuple[str, ...]:
    found = []
    for item in items(node):
        if node.mapping or not isinstance(item.value, str) or not item.value.strip():
            context.fail(item.line, f"'{key}' must be a list of folders, not {show(item)}.")
        found.append(os.path.normpath(context.base_dir / os.path.expanduser(item.value)))
    return tuple(found)


def shapes(node: Node, key: str, context: Context) -> tuple[tuple[int, ...], ...]:
    listed = items(node)
    if isinstance(node.value, list) and listed and all(is_int(item.value) for item in listed):
        listed = [node]  # [8, 3, 32, 32] is one shape
    return tuple(_shape(item, key, context) for item in listed)


def _shape(node: Node, key: str, context: Context) -> tuple[int, ...]:
    """The grammar of options.parse_shape: '8,3,32,32', '8x3x32x32', or a list [8, 3, 32, 32]."""
    value = node.value
    shape: tuple[int, ...] = ()
    if isinstance(value, str):
        parts = [part for part in value.replace("x", ",").replace(" ", "").split(",") if part]
        if all(part.isascii() and part.isdigit() for part in parts):
            shape = tuple(int(part) for part in parts)
    elif isinstance(value, list) and not node.mapping and all(is_int(item.value) for item in value):
        shape = tuple(item.value for item in value)
    if not shape or any(size < 1 for size in shape):
        context.fail(
            node.line, f"'{key}' must be a list of shapes such as \"8,3,32,32\" or [8, 3, 32, 32], not {show(node)}."
        )
    too_large = [size for size in shape if range_problem("input_dim", size)]
    if too_large:
        context.fail(
            node.line,
            f"'{key}' has a size of {too_large[0]}; each size {range_problem('input_dim', too_large[0])}, and the "
            "whole input must fit max-memory.",
        )
    return shape
