"""Horizontal bar charts on a log scale for the terminal: one row per item (a layer, a time step, a
training step), each bar growing from the left edge of a decade axis to its value.

Nothing here knows about gradients: a chart is a list of ``Bar`` (label, value, mark, style), so any series
of positive figures can be drawn with it. The layout arithmetic (grouping, the log scale, tick choice,
column widths) is a set of small pure functions; ``draw_bar_chart`` turns their results into Rich lines.

Horizontal bars because a terminal has far more columns than useful rows: the value gets the long
dimension (most of the width, each column cut in eighths by the partial block glyphs), each row keeps a
readable label on the left instead of a rotated or numbered one, and a deep model reads top to bottom
like the layer table that follows it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.text import Text

# Fewer bar columns than this and a decade gets one or two characters: not worth drawing.
MIN_BAR_WIDTH = 20
MIN_LABEL_WIDTH = 8
LABEL_SHARE = 0.4  # a label longer than this share of the width goes on a line of its own, above its bar
MAX_VALUE_WIDTH = 8  # "1.2e+100"
# The axis spans at least this many decades, so equal values still read as bars of a length, not full rows.
MIN_DECADES = 2
# The axis starts at least this many decades below the smallest value, so its bar stays visible.
LOW_MARGIN = 0.3
# Bar ends at an eighth of a character: U+258F..U+2589 (left one-eighth block to left seven-eighths).
_EIGHTHS = ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")
_NUMBER = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Bar:
    """One row of a chart."""

    label: str
    value: float | None  # drawn when positive and finite; otherwise the row says "zero", "nan", "inf" or "n/a"
    mark: str = ""  # a word at the row's end (a status); "" for none. Without colour, this is what flags a row.
    style: str = ""  # Rich style of the bar and its mark
    severity: int = 0  # when rows are grouped, a group keeps the mark and style of its most severe member


@dataclass(frozen=True)
class LogScale:
    """The axis: 10**low at the left edge of the bars, 10**high at the right edge."""

    low: int
    high: int

    @property
    def decades(self) -> int:
        return self.high - self.low

    def position(self, value: float, width: int) -> float:
        """Columns from the left edge of the bars to where ``value`` (positive, finite) ends, within [0, width]."""
        return self.decade_position(math.log10(value), width)

    def decade_position(self, decade: float, width: int) -> float:
        """Columns from the left edge of the bars to 10**decade, within [0, width]."""
        offset = (decade - self.low) / self.decades * width
        return min(max(offset, 0.0), float(width))


@dataclass(frozen=True)
class Layout:
    """Column widths of a chart row: label, a space, the axis line, the bars, a space, the value, and
    (when any row has a mark) two spaces and the mark. ``value`` is 0 when the value column is left out."""

    label: int
    bars: int
    value: int
    mark: int

    @property
    def bars_start(self) -> int:
        """Index of the first bar column in a row (after the label, a space and the axis line)."""
        return self.label + 2

    @property
    def columns(self) -> int:
        """The widest row."""
        return self.bars_start + self.bars + (self.value + 1 if self.value else 0) + (self.mark + 2 if self.mark else 0)


def finite_positive(value: float | None) -> bool:
    return value is not None and value > 0 and math.isfinite(value)


def log_scale(values: Iterable[float | None], min_decades: int = MIN_DECADES) -> LogScale | None:
    """The decade axis for these values: from below the smallest positive finite value (by at least
    LOW_MARGIN decades) to the decade at or above the largest; None when no value can be drawn."""
    positive = [value for value in values if finite_positive(value)]
    if not positive:
        return None
    high = math.ceil(math.log10(max(positive)))
    low = math.floor(math.log10(min(positive)) - LOW_MARGIN)
    return LogScale(min(low, high - min_decades), high)


def decade_label(decade: int) -> str:
    """1e-12, 1e+0, 1e+10: the decade's power of ten as Python writes it."""
    return f"1e{decade:+d}"


def decade_ticks(scale: LogScale, width: int) -> list[int]:
    """The decades to label on an axis ``width`` columns wide: every 1, 2, 5, 10, 20, 50, ... decades,
    the finest step whose labels keep two spaces between them (one survives the rounding to columns)."""
    label_width = max(len(decade_label(scale.low)), len(decade_label(scale.high)))
    step = 1
    for candidate in _steps():
        step = candidate
        if candidate * width / scale.decades >= label_width + 2:
            break
    first = math.ceil(scale.low / step) * step
    return list(range(first, scale.high + 1, step))


def _steps() -> Iterable[int]:
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            yield factor * magnitude
        magnitude *= 10
        if magnitude > 10**6:  # an axis of more than a million decades: every float spans less
            yield magnitude
            return


def bar_glyphs(length: float, ascii_only: bool = False) -> str:
    """A bar ``length`` columns long: full blocks, then the partial block nearest the remainder
    (in ASCII, '#' per column, rounded). A positive length draws at least the thinnest glyph, so a
    value at the axis's left edge is never mistaken for a missing one."""
    if length <= 0:
        return ""
    if ascii_only:
        return "#" * max(1, round(length))
    eighths = max(1, round(length * 8))
    full, part = divmod(eighths, 8)
    return "█" * full + _EIGHTHS[part]


def group_size(count: int, max_rows: int | None) -> int:
    """Items per row so that ``count`` items fit in ``max_rows`` rows (1 when they already fit)."""
    if not max_rows or count <= max_rows:
        return 1
    return math.ceil(count / max_rows)


def geometric_mean(values: Sequence[float | None]) -> float | None:
    """The geometric mean of the positive finite values (the mean on the log axis), None without any."""
    logs = [math.log(value) for value in values if finite_positive(value)]
    return math.exp(math.fsum(logs) / len(logs)) if logs else None


def group_value(values: Sequence[float | None]) -> float | None:
    """A group's value: the geometric mean of its measured values (None: not measured, left out), so an
    exact zero makes it zero, as a product would: a group where the gradient stops shows no bar. NaN
    outranks infinity, which outranks zero."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    if any(value != value for value in present):
        return math.nan
    infinite = [value for value in present if math.isinf(value)]
    if infinite:
        return infinite[0]
    if any(value <= 0 for value in present):
        return 0.0
    return geometric_mean(present)


def group_label(labels: Sequence[str]) -> str:
    """A name for consecutive items that says which they are. Names that differ only in one number:
    ``blocks.3-5.fc`` when the numbers run on (3, 4 and 5); when they skip (a Sequential's layers between
    its activations), ``0,2,4``, or ``0,2..12`` for more than three in steps of two, else ``0..12``. Other
    names: ``first..last``, the last name's leading dotted components that equal the first's left out
    (``blocks.0.conv1..bn1``, ``layers.38..head``). Never "0-2" for two layers, and no ellipsis: that
    would read as a name cut short (issue 23)."""
    first, last = labels[0], labels[-1]
    if len(labels) == 1 or first == last:
        return first
    numbered = _numbered(labels)
    if numbered is not None:
        before, numbers, after = numbered
        values = [int(number) for number in numbers]
        steps = {b - a for a, b in zip(values, values[1:])}
        if steps == {1}:
            middle = f"{numbers[0]}-{numbers[-1]}"
        elif len(numbers) <= 3:
            middle = ",".join(numbers)
        elif len(steps) == 1:
            middle = f"{numbers[0]},{numbers[1]}..{numbers[-1]}"
        else:
            middle = f"{numbers[0]}..{numbers[-1]}"
        return before + middle + after
    first_path, last_path = first.split("."), last.split(".")
    shared = 0
    while shared < min(len(first_path), len(last_path)) - 1 and first_path[shared] == last_path[shared]:
        shared += 1
    return first + ".." + ".".join(last_path[shared:])


def _numbered(labels: Sequence[str]) -> tuple[str, list[str], str] | None:
    """(the text before, each label's number, the text after) when the labels differ in one number only."""
    pieces = [_NUMBER.split(label) for label in labels]
    if len({len(parts) for parts in pieces}) != 1:
        return None
    differ = [i for i in range(len(pieces[0])) if len({parts[i] for parts in pieces}) > 1]
    if len(differ) != 1 or differ[0] % 2 == 0:  # odd pieces of re.split with a group are the numbers
        return None
    (i,) = differ
    return "".join(pieces[0][:i]), [parts[i] for parts in pieces], "".join(pieces[0][i + 1 :])


def group_bars(bars: Sequence[Bar], max_rows: int | None) -> list[Bar]:
    """Consecutive bars merged so that at most ``max_rows`` rows remain, every group of the same size
    (the last one may be shorter): the geometric mean of the values (``group_value``), the most severe
    member's mark and style (the first of equals)."""
    size = group_size(len(bars), max_rows)
    if size == 1:
        return list(bars)
    groups = []
    for start in range(0, len(bars), size):
        members = bars[start : start + size]
        worst = max(members, key=lambda bar: bar.severity)
        groups.append(
            Bar(
                group_label([bar.label for bar in members]),
                group_value([bar.value for bar in members]),
                worst.mark,
                worst.style,
                worst.severity,
            )
        )
    return groups


def value_text(value: float | None) -> str:
    """The figure at a row's end, two significant digits; a word where there is no bar."""
    if value is None:
        return "n/a"
    if value != value:
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "zero"
    return f"{value:.2g}"


def layout(label_width: int, value_width: int, mark_width: int, width: int) -> Layout | None:
    """Column widths for a chart ``width`` columns wide. Labels get up to LABEL_SHARE of the width. When
    the bars would be narrower than MIN_BAR_WIDTH, the value column goes first (the figures are in the
    tables), then the label column narrows, down to MIN_LABEL_WIDTH (a longer label goes on a line of its
    own above its bar, whole: a name cut short may name another layer). None when even that does not fit: a row
    is never wrapped."""
    mark_columns = mark_width + 2 if mark_width else 0
    label = min(label_width, max(MIN_LABEL_WIDTH, int(width * LABEL_SHARE)))
    for value in (value_width, 0):
        value_columns = value + 1 if value else 0
        room = width - 2 - value_columns - mark_columns - MIN_BAR_WIDTH  # what the bars leave the label
        if room >= label:
            return Layout(label, width - label - 2 - value_columns - mark_columns, value, mark_width)
    if room >= MIN_LABEL_WIDTH:
        return Layout(room, MIN_BAR_WIDTH, 0, mark_width)
    return None


def chart_layout(bars: Sequence[Bar], width: int) -> Layout | None:
    """The layout that fits these bars' labels, values and marks in ``width`` columns (see ``layout``).
    Computed over the bars of two charts, it lines their bars up (a before/after pair)."""
    if not bars:
        return None
    return layout(
        max(len(bar.label) for bar in bars),
        min(max(len(value_text(bar.value)) for bar in bars), MAX_VALUE_WIDTH),
        max(len(bar.mark) for bar in bars),
        width,
    )


def draw_bar_chart(
    bars: Sequence[Bar],
    width: int,
    scale: LogScale | None = None,
    ascii_only: bool = False,
    fit: Layout | None = None,
) -> list[Text] | None:
    """The chart's lines, none longer than ``width``: decade labels, the axis, then one row per bar in
    the given order. Group the bars first (``group_bars``) to bound the rows. ``scale`` and ``fit``
    default to those of these bars; pass shared ones to compare two charts. None when nothing can be
    drawn: no positive finite value, or a width below what one row needs."""
    scale = scale or log_scale(bar.value for bar in bars)
    fit = fit or chart_layout(bars, width)
    if scale is None or fit is None or fit.columns > width:
        return None
    lines = _axis(scale, fit, ascii_only)
    vertical = "|" if ascii_only else "│"
    for bar in bars:
        label = bar.label
        if len(label) > fit.label:  # whole, on lines of its own (issue 23: never cut with an ellipsis)
            lines += [Text(label[i : i + width], no_wrap=True) for i in range(0, len(label), width)]
            label = ""
        line = Text(no_wrap=True, overflow="crop")
        line.append(label.ljust(fit.label) + " " + vertical)
        glyphs = bar_glyphs(scale.position(bar.value, fit.bars), ascii_only) if finite_positive(bar.value) else ""
        line.append(glyphs[: fit.bars], style=bar.style)
        line.append(" " * (fit.bars - len(glyphs)))
        if fit.value:
            # "zero  zero": the mark says it already
            value = "" if value_text(bar.value) == bar.mark else value_text(bar.value)
            line.append(" " + value[: fit.value].rjust(fit.value))
        if bar.mark and fit.mark:
            line.append("  ")
            line.append(bar.mark[: fit.mark], style=bar.style)
        lines.append(line)
    return lines


def _axis(scale: LogScale, fit: Layout, ascii_only: bool) -> list[Text]:
    """Decade labels centred over their ticks, and the rule under them (its first column is the bars' baseline)."""
    start = fit.bars_start - 1  # the baseline column
    labels = [" "] * (start + fit.bars + 1)
    rule = ["-" if ascii_only else "─"] * (fit.bars + 1)
    rule[0] = "+" if ascii_only else "┌"
    free_until = len(labels)
    # right to left: the decade nearest the largest values (the loss end of a gradient chart) is always labelled
    for decade in reversed(decade_ticks(scale, fit.bars)):
        column = round(scale.decade_position(decade, fit.bars))
        rule[column] = "+" if ascii_only else "┬"
        text = decade_label(decade)
        left = min(max(start + column - len(text) // 2, 0), len(labels) - len(text))
        if left + len(text) <= free_until:
            labels[left : left + len(text)] = text
            free_until = left - 1
    return [
        Text("".join(labels).rstrip(), style="dim", no_wrap=True, overflow="crop"),
        Text(" " * start + "".join(rule), style="dim", no_wrap=True, overflow="crop"),
    ]
