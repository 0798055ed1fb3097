"""The tables the commands print off a terminal are written line by line, as rich
lays them out: the same characters, whatever the cells hold."""

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradtrace.cli.report import PIPE_WIDTH, make_console
from gradtrace.cli.table import print_table

COLS = ("seq", "op", "inputs", "code")
ROWS = [
    (0, "torch.ones", None, "x = torch.ones(8)"),
    (1, "Tensor.add", ["x#1@v0 (8,)", "w (2, 3)"], "y = x + 1  # 加一"),
    (2, "Tensor.mul", [], "print('a\\tb')"),
    (10_000, "torch.nn.functional.scaled_dot_product_attention", None, ""),
]


def _rich(cols, rows) -> str:
    """What rich itself prints for the table off a terminal."""
    out = io.StringIO()
    c = Console(file=out, markup=False, emoji=False, highlight=False, soft_wrap=True, width=PIPE_WIDTH)
    t = Table(show_header=True, header_style="bold")
    for col in cols:
        t.add_column(col, no_wrap=True, overflow="ignore")
    for r in rows:
        t.add_row(*(Text("" if v is None else ", ".join(map(str, v)) if isinstance(v, list) else str(v))
                    for v in r))
    c.print(t)
    return out.getvalue()


def _ours(cols, rows) -> str:
    out = io.StringIO()
    print_table(make_console(out), cols, rows)
    return out.getvalue()


def test_a_table_off_a_terminal_is_what_rich_prints_for_it():
    assert _ours(COLS, ROWS) == _rich(COLS, ROWS)


def test_a_table_without_rows_is_what_rich_prints_for_it():
    assert _ours(COLS, []) == _rich(COLS, [])


def test_a_control_character_in_a_cell_is_written_as_an_escape():
    text = _ours(("code",), [("a\nb",)])
    assert "a\\nb" in text and len(text.splitlines()) == 5
