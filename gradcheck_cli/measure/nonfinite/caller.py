"""The line of code that called an op: its file and line as the user would type them, and the call as written."""

from __future__ import annotations

import inspect
import itertools
import linecache
import os
from typing import Any

import torch

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
# The frames of this package (the op mode's, this module's) stand between the op and the code that called it.
_TRACER_DIR = os.path.dirname(__file__) + os.sep
# gradcheck's own code (its built-in losses, gradcheck_cli/load/objective.py) has no line for the user to change:
# the whole gradcheck_cli package, two folders above this one, not measure/ only (issue 24).
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep


def calling_line() -> tuple[str | None, str | None]:
    """("file.py:14", the call as written) of the code that called the op: the first frame outside torch and
    this package. None, None when that is gradcheck's own code (its built-in losses)."""
    frame = inspect.currentframe()
    try:
        while frame is not None and frame.f_code.co_filename.startswith((_TORCH_DIR, _TRACER_DIR)):
            frame = frame.f_back
        if frame is None or frame.f_code.co_filename.startswith(_OWN_DIR):
            return None, None
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
        return f"{_shown_path(filename)}:{lineno}", call_source(filename, lineno, _positions(frame))
    finally:
        del frame  # a frame holds the model's locals, the graph among them


def _positions(frame: Any) -> tuple[int | None, int | None, int | None, int | None]:
    """(line, end line, column, end column) of the instruction the frame is running: the call into torch
    (PEP 657, Python 3.11+; Nones before). Columns count UTF-8 bytes."""
    positions = getattr(frame.f_code, "co_positions", None)
    if positions is None or frame.f_lasti < 0:
        return None, None, None, None
    # One entry per 2-byte code unit, as f_lasti counts bytes.
    return next(itertools.islice(positions(), frame.f_lasti // 2, None), (None, None, None, None))


def call_source(filename: str, lineno: int, positions: tuple[int | None, ...]) -> str | None:
    """The expression that called the op, as written; the whole line where positions are not known."""
    lines = linecache.getlines(filename)
    if not lines or not lineno or lineno > len(lines):
        return None
    start, end, column, end_column = positions
    if start != lineno or end is None or column is None or end_column is None or end > len(lines):
        return lines[lineno - 1].strip() or None
    chunk = [line.encode() for line in lines[start - 1 : end]]
    chunk[-1] = chunk[-1][:end_column]
    chunk[0] = chunk[0][column:]
    return b"".join(chunk).decode(errors="replace").strip() or None


def _shown_path(filename: str) -> str:
    """Relative to the working folder when inside it, as the user would type it; else as it is."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith(os.pardir) else relative
