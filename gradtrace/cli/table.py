"""The tables the commands print. On a terminal rich lays them out and folds long
cells; elsewhere nothing wraps, and the same characters rich would print are written
line by line: a 200,000-row ``show --ops`` piped to a file takes seconds, where
rich's layout of one table that size took minutes and gigabytes."""

from __future__ import annotations

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..analyze.summary import plain

__all__ = ["print_table"]

_BOX = box.HEAVY_HEAD


def print_table(console: Console, cols, rows) -> None:
    """Print a table of literal cells (``rows``: sequences of values, None for an
    empty cell, a list joined with commas) to ``console``."""
    cells = [[_cell(v) for v in r] for r in rows]
    if console.is_terminal or console.color_system is not None:
        console.print(_rich_table(console, cols, cells))
    else:
        _write_lines(console, list(cols), cells)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    return plain(value)


def _rich_table(console: Console, cols, cells) -> Table:
    t = Table(show_header=True, header_style="bold", box=_BOX)
    for col in cols:
        if console.is_terminal:
            t.add_column(col, overflow="fold")
        else:
            t.add_column(col, no_wrap=True, overflow="ignore")
    for r in cells:
        t.add_row(*(Text(v) for v in r))
    return t


def _write_lines(console: Console, cols: list, cells: list) -> None:
    """What rich prints for the table off a terminal (no colour, no wrapping), written
    a few thousand lines at a time."""
    widths = [cell_len(c) for c in cols]
    for r in cells:
        for i, v in enumerate(r):
            n = _width(v)
            if n > widths[i]:
                widths[i] = n
    b = _BOX
    write = console.file.write

    def rule(left, fill, mid, right):
        return left + mid.join(fill * (w + 2) for w in widths) + right + "\n"

    def row(left, sep, right, values):
        return left + sep.join(" " + _pad(v, w) + " " for v, w in zip(values, widths)) + right + "\n"

    write(rule(b.top_left, b.top, b.top_divider, b.top_right))
    write(row(b.head_left, b.head_vertical, b.head_right, cols))
    write(rule(b.head_row_left, b.head_row_horizontal, b.head_row_cross, b.head_row_right))
    chunk = []
    for r in cells:
        chunk.append(row(b.mid_left, b.mid_vertical, b.mid_right, r))
        if len(chunk) >= 4096:
            write("".join(chunk))
            chunk = []
    write("".join(chunk))
    write(rule(b.bottom_left, b.bottom, b.bottom_divider, b.bottom_right))
    console.file.flush()


def _width(value: str) -> int:
    return len(value) if value.isascii() else cell_len(value)  # cell_len of ASCII is len, found faster


def _pad(value: str, width: int) -> str:
    return value + " " * (width - _width(value))
