"""Tables that read whole at the terminal's width (issue 23): a column is dropped, or its prose folded onto
more lines, before any word or number is cut.

Each column says what it holds. Numbers and words (a status, a verdict, a fix id) never wrap and are never
cut: they keep the width of their widest cell. Prose (a layer name, a change) folds onto more lines, down to
a floor. When even that does not fit, the optional columns go, the least important first, so what is left
still reads whole; the caller learns which went and may say so or show them another way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from rich import box
from rich.table import Table
from rich.text import Text

# A Table(box=SIMPLE_HEAD, show_edge=False) of n columns is sum(widths) + 3n - 1 wide: one space of padding
# each side of every cell and one separator between columns. Without the edge, no blank line above or below.
_PER_COLUMN = 3
_EDGES = -1


class Cell(Enum):
    NUMBER = "number"  # right-aligned, whole
    WORD = "word"  # left-aligned, whole: a status, a verdict, an id
    PROSE = "prose"  # left-aligned, folds onto more lines when the table needs the room


@dataclass(frozen=True)
class Column:
    header: str
    cell: Cell
    priority: int = 0  # 0: always shown; past that, the highest number goes first when the width is short
    fold_to: int = 16  # PROSE: the narrowest it folds to


def _natural(column: Column, cells: Sequence[Text]) -> int:
    return max([len(column.header), *(cell.cell_len for cell in cells)])


def table_width(widths: Sequence[int]) -> int:
    """The width of a SIMPLE_HEAD table whose columns are this wide."""
    return sum(widths) + _PER_COLUMN * len(widths) + _EDGES


def fit_columns(columns: Sequence[Column], rows: Sequence[Sequence[Text]], width: int) -> list[int]:
    """The indices of the columns to show in ``width`` columns: every one when they fit with prose folded to
    its floor; else without the optional ones, highest priority number first (the first of equals last)."""
    kept = list(range(len(columns)))

    def narrowest(index: int) -> int:
        natural = _natural(columns[index], [row[index] for row in rows])
        if columns[index].cell is Cell.PROSE:
            return min(natural, max(columns[index].fold_to, len(columns[index].header)))
        return natural

    optional = sorted((i for i, c in enumerate(columns) if c.priority), key=lambda i: (columns[i].priority, i))
    while table_width([narrowest(i) for i in kept]) > width and optional:
        kept.remove(optional.pop())
    return kept


def fitted_table(
    columns: Sequence[Column], rows: Sequence[Sequence[Text | str]], width: int
) -> tuple[Table, list[Column]]:
    """A SIMPLE_HEAD table of ``rows`` that fits ``width`` (see ``fit_columns``), and the columns it left out."""
    cells = [[cell if isinstance(cell, Text) else Text(cell) for cell in row] for row in rows]
    kept = fit_columns(columns, cells, width)
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, show_edge=False)
    for index in kept:
        column = columns[index]
        natural = _natural(column, [row[index] for row in cells])
        if column.cell is Cell.PROSE:
            table.add_column(column.header, overflow="fold", min_width=min(natural, column.fold_to))
        else:
            justify = "right" if column.cell is Cell.NUMBER else "left"
            table.add_column(column.header, justify=justify, no_wrap=True, min_width=natural)
    for row in cells:
        table.add_row(*(row[index] for index in kept))
    return table, [column for index, column in enumerate(columns) if index not in kept]


def left_out(dropped: list[Column], width: int) -> list[Text]:
    """One line naming the columns a narrow terminal left out, and where they are."""
    if not dropped:
        return []
    headers = ", ".join(column.header for column in dropped)
    return [Text(f"Not shown at {width} columns: {headers} (see --format json).", style="dim")]
