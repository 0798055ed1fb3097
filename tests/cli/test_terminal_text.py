"""What `gradtrace run` and `gradtrace show` print: the user's text as written, tables
that do not wrap off a terminal, capped cells, grouped moves, the report on a line of its
own, an output folder checked before the script runs, and no drawing made that will not
be drawn."""

import io
import os
import pty
import re
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from gradtrace.analyze.summary import summary_text
from gradtrace.cli import main
from gradtrace.cli.report import print_run_report
from gradtrace.outputs import write_run_outputs
from gradtrace.progress import phase
from gradtrace.runner import run_script
from gradtrace.views import drawsize

TRICKY = """\
import torch
x = torch.zeros(4)
idx = torch.tensor([1, 2])
for _ in range(8):
    x[idx] = 0  # a closing tag [/b] in a comment
X = torch.ones(4, 2)
rank, world = 0, 2
part = X.chunk(world)[rank]
ts = [torch.ones(2) for _ in range(3)]
sums = [t.sum() for t in ts]
y = torch.ones(3) + 1  # a comment long enough to take this source line well past eighty columns
for _ in range(6):
    x = x.to("cpu")
"""


def line_of(source: str, text: str) -> int:
    return next(i for i, s in enumerate(source.splitlines(), 1) if text in s)


def gradtrace(*args, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "gradtrace", *map(str, args)], cwd=cwd, timeout=300, **kw)


@pytest.fixture(scope="module")
def tricky(tmp_path_factory):
    """``(folder, run output)`` of the tricky script run under `gradtrace run`."""
    root = tmp_path_factory.mktemp("tricky")
    (root / "tricky.py").write_text(TRICKY)
    r = CliRunner().invoke(main, ["run", "--no-svg", "-o", str(root / "out"), str(root / "tricky.py")])
    return root / "out", r


def show(folder, *args):
    return CliRunner().invoke(main, ["show", str(folder), *args])


# -- user text is printed as written, never read as markup -------------------------------

def test_run_exits_0_when_a_comment_holds_a_closing_markup_tag(tricky):
    assert tricky[1].exit_code == 0, tricky[1].output


def test_run_report_prints_an_indexing_line_with_its_brackets(tricky):
    assert "x[idx] = 0  # a closing tag [/b] in a comment" in tricky[1].output


def test_show_ops_exits_0_when_a_comment_holds_a_closing_markup_tag(tricky):
    assert show(tricky[0], "--ops").exit_code == 0


def test_show_summary_exits_0_when_a_comment_holds_a_closing_markup_tag(tricky):
    assert show(tricky[0], "--summary").exit_code == 0


def test_show_ops_keeps_the_index_of_an_indexed_call(tricky):
    assert "part = X.chunk(world)[rank]" in show(tricky[0], "--ops").output


def test_show_ops_keeps_a_list_comprehension(tricky):
    assert "sums = [t.sum() for t in ts]" in show(tricky[0], "--ops").output


def test_show_ops_prints_emoji_codes_as_written(tmp_path):
    (tmp_path / "e.py").write_text("import torch\nx = torch.ones(2)  # :smile: :x:\n")
    CliRunner().invoke(main, ["run", "--no-svg", "-o", str(tmp_path / "out"), str(tmp_path / "e.py")])
    assert "# :smile: :x:" in show(tmp_path / "out", "--ops").output


def test_show_ops_writes_a_control_character_in_a_line_as_an_escape(tmp_path):
    (tmp_path / "c.py").write_text("import torch\nx = torch.ones(2)  # \x1b[31mred\n")
    CliRunner().invoke(main, ["run", "--no-svg", "-o", str(tmp_path / "out"), str(tmp_path / "c.py")])
    out = show(tmp_path / "out", "--ops").output
    assert "\x1b" not in out and "\\x1b[31mred" in out


# -- tables off a terminal ------------------------------------------------------------------

def test_show_off_a_terminal_keeps_a_long_source_line_on_one_line(tricky):
    code = next(s for s in TRICKY.splitlines() if "eighty columns" in s)
    assert code in show(tricky[0], "--ops").output


def test_show_caps_a_huge_source_line_with_an_ellipsis(tmp_path):
    (tmp_path / "h.py").write_text("import torch\nx = torch.ones(2)  # " + "a" * 200_000 + "\n")
    CliRunner().invoke(main, ["run", "--no-svg", "-o", str(tmp_path / "out"), str(tmp_path / "h.py")])
    out = show(tmp_path / "out", "--ops").output
    assert "a…" in out and len(out) < 5_000


# -- moves --------------------------------------------------------------------------------

def test_run_report_counts_identical_moves_once(tricky):
    n = line_of(TRICKY, 'x = x.to("cpu")')
    assert f"moves: 6 x cpu/float32 -> same tensor (line {n})" in tricky[1].output


def test_summary_text_counts_identical_moves_once(tmp_path):
    script = tmp_path / "m.py"
    script.write_text(TRICKY)
    n = line_of(TRICKY, 'x = x.to("cpu")')
    G = run_script(script, values="none").trace.graph
    assert f"moves: 6 x cpu/float32 -> same tensor (line {n})" in summary_text(G)


# -- the script's view of its run -----------------------------------------------------------

ARGV = "import sys, torch\ntorch.ones(1)\nprint('argv0', sys.argv[0], 'file', __file__)\n"


def test_script_sees_argv0_as_typed_and_file_as_python_gives_them(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.py").write_text(ARGV)
    py = subprocess.run([sys.executable, "sub/a.py"], cwd=tmp_path, capture_output=True, text=True)
    r = gradtrace("run", "--no-svg", "-o", "out", "sub/a.py", cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout.splitlines()[0] == py.stdout.splitlines()[0] == f"argv0 sub/a.py file {tmp_path}/sub/a.py"


def test_script_sees_the_builtins_module_as_python_gives_it(tmp_path):
    (tmp_path / "b.py").write_text("print(type(__builtins__).__name__)\n")
    py = subprocess.run([sys.executable, "b.py"], cwd=tmp_path, capture_output=True, text=True)
    r = gradtrace("run", "--no-svg", "-o", "out", "b.py", cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout.splitlines()[0] == py.stdout.splitlines()[0] == "module"


def test_report_starts_a_line_of_its_own_after_output_without_a_newline_in_a_file(tmp_path):
    (tmp_path / "n.py").write_text("import torch\ntorch.ones(1)\nprint('no newline', end='')\n")
    with open(tmp_path / "stdout.txt", "w") as f:
        gradtrace("run", "--no-svg", "-o", tmp_path / "out", tmp_path / "n.py", stdout=f, stderr=subprocess.PIPE)
    assert (tmp_path / "stdout.txt").read_text().startswith("no newline\ngradtrace: ")


def test_report_of_a_script_that_ends_its_output_with_a_newline_has_no_blank_line(tmp_path):
    (tmp_path / "n.py").write_text("import torch\ntorch.ones(1)\nprint('one line')\n")
    with open(tmp_path / "stdout.txt", "w") as f:
        gradtrace("run", "--no-svg", "-o", tmp_path / "out", tmp_path / "n.py", stdout=f, stderr=subprocess.PIPE)
    assert (tmp_path / "stdout.txt").read_text().startswith("one line\ngradtrace: ")


def screen(data: str, cols: int) -> list:
    """The rows a terminal of ``cols`` columns with automatic margins shows for ``data``
    (colours dropped; a full row wraps only when the next character comes)."""
    data = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", data)
    rows, row, col, pending = [[]], 0, 0, False
    for ch in data:
        if ch == "\r":
            col, pending = 0, False
        elif ch == "\n":
            row, pending = row + 1, False
        else:
            if pending:
                row, col, pending = row + 1, 0, False
            while len(rows) <= row:
                rows.append([])
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = ch
            if col == cols - 1:
                pending = True
            else:
                col += 1
        while len(rows) <= row:
            rows.append([])
    return ["".join(r).rstrip() for r in rows]


def test_report_starts_a_line_of_its_own_on_a_terminal_after_output_without_a_newline(tmp_path):
    import fcntl
    import struct
    import termios

    (tmp_path / "n.py").write_text("import sys, torch\ntorch.ones(1)\nprint('tty', sys.stdout.isatty(), end='')\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "gradtrace", "run", "--no-svg", "-o", str(tmp_path / "out"),
                          str(tmp_path / "n.py")], stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    p.wait(timeout=300)
    os.close(master)
    rows = screen(b"".join(chunks).decode("utf-8", "replace"), 60)
    assert (rows[0], rows[1][:11]) == ("tty True", "gradtrace: "), rows[:3]


# -- the output folder ----------------------------------------------------------------------

MARK = "import pathlib, sys, torch\ntorch.ones(1)\npathlib.Path(sys.argv[1]).write_text('ran')\n"


def test_an_impossible_output_folder_is_refused_before_the_script_runs(tmp_path):
    (tmp_path / "s.py").write_text(MARK)
    (tmp_path / "afile").write_text("")
    r = gradtrace("run", "-o", tmp_path / "afile" / "out", tmp_path / "s.py", tmp_path / "marker",
                  capture_output=True, text=True)
    assert (r.returncode, r.stderr.count("\n"), (tmp_path / "marker").exists()) == (2, 1, False), r.stderr


def test_a_folder_that_cannot_be_written_after_the_run_keeps_the_scripts_exit_code(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import shutil, sys, torch\ntorch.ones(1)\nshutil.rmtree(sys.argv[1])\n"
                      "open(sys.argv[1], 'w').close()\nsys.exit(3)\n")
    r = gradtrace("run", "-o", tmp_path / "out", script, tmp_path / "out", capture_output=True, text=True)
    assert (r.returncode, r.stderr.count("\n"), "Traceback" in r.stderr) == (3, 1, False), r.stderr


# -- drawings too big to draw ----------------------------------------------------------------

LOOP = "import torch\nx = torch.ones(2)\nfor _ in range(20):\n    x = x + 1\n"
MODULES = ("import torch\nm = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))\n"
           "x = torch.ones(1, 2)\nfor _ in range(10):\n    x = m(x)\n")


def traced(tmp_path, source):
    (tmp_path / "s.py").write_text(source)
    return run_script(tmp_path / "s.py", values="none").trace


def test_run_outputs_of_a_drawing_too_big_make_no_dot_text(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(drawsize, "SVG_MAX_LINES", 10)
    monkeypatch.setattr("gradtrace.views.dot.to_dot", lambda *a, **k: made.append(1) or "digraph {}")
    write_run_outputs(traced(tmp_path, LOOP), tmp_path / "out", depth=3, svg=False)
    assert made == [] and not (tmp_path / "out" / "graph.dot").exists()


def test_too_big_note_without_modules_points_at_the_busiest_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(drawsize, "SVG_MAX_LINES", 10)
    write_run_outputs(traced(tmp_path, LOOP), tmp_path / "out", depth=3, svg=False)
    err = capsys.readouterr().err
    assert "--line s.py:4" in err and "--depth" not in err


def test_too_big_note_with_modules_that_collapse_suggests_depth_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(drawsize, "SVG_MAX_LINES", 15)  # 22 elements drawn at depth 3, 3 at depth 1
    write_run_outputs(traced(tmp_path, MODULES), tmp_path / "out", depth=3, svg=False)
    assert "--depth 1" in capsys.readouterr().err


def test_run_report_lists_only_the_files_this_run_wrote(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "graph.svg").write_text("<svg/>")  # left by an earlier run
    monkeypatch.setattr(drawsize, "SVG_MAX_LINES", 10)
    tr = traced(tmp_path, LOOP)
    written = write_run_outputs(tr, out, depth=3, svg=False)
    print_run_report(tr, out, written=written)
    assert re.search(r"^wrote \S*trace\.json$", capsys.readouterr().out, re.M)


# -- progress -------------------------------------------------------------------------------

class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_a_slow_step_shows_its_progress_on_a_terminal(monkeypatch):
    err = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", err)
    with phase("building the graph", delay=0.05):
        time.sleep(0.5)
    assert "gradtrace: building the graph" in err.getvalue()


def test_no_progress_is_shown_off_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with phase("building the graph", delay=0.0):
        time.sleep(0.2)
    assert err.getvalue() == ""


# -- launched runs ---------------------------------------------------------------------------

def as_rank(monkeypatch, rank):
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")


def test_rank_1_line_prints_a_script_name_with_a_markup_tag_as_written(tmp_path, monkeypatch):
    (tmp_path / "s[b].py").write_text("import torch\ntorch.ones(1)\n")
    as_rank(monkeypatch, 1)
    r = CliRunner().invoke(main, ["run", "--no-svg", "-o", str(tmp_path / "out"), str(tmp_path / "s[b].py")])
    assert "s[b].py" in r.output, r.output


def test_show_of_rank_folders_prints_a_folder_name_with_a_markup_tag_as_written(tmp_path, monkeypatch):
    (tmp_path / "s.py").write_text("import torch\ntorch.ones(1)\n")
    runs = tmp_path / "runs[b]"
    for rank in (0, 1):
        as_rank(monkeypatch, rank)
        CliRunner().invoke(main, ["run", "--no-svg", "-o", str(runs), str(tmp_path / "s.py")])
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert f"{runs}: ranks 0, 1 of world size 2" in show(runs).output


LOOP_LOSSES = """import torch
for i in range(2):
    w = torch.ones(2, requires_grad=True)
    loss = (w * 2).sum()
    loss.backward()
"""


def test_show_backward_tells_apart_the_losses_of_a_loop(tmp_path):
    (tmp_path / "loop.py").write_text(LOOP_LOSSES)
    gradtrace("run", "--no-svg", "-o", tmp_path / "out", tmp_path / "loop.py", capture_output=True)
    r = gradtrace("show", tmp_path / "out", "--backward", capture_output=True, text=True)
    assert "loss#1@v0" in r.stdout and "loss#2@v0" in r.stdout


TRAINING_STEPS = """import torch
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for i in range(12):
    opt.zero_grad()
    loss = model(torch.ones(2, 3)).pow(2).mean()
    loss.backward()
    opt.step()
"""


def test_a_long_loop_whose_one_step_drawing_is_small_still_gets_its_graph_dot(tmp_path, monkeypatch):
    from gradtrace.views.forward import count_elements

    tr = traced(tmp_path, TRAINING_STEPS)
    one_step = count_elements(tr.graph, 3)
    assert drawsize.forward_elements_at_least(tr.graph, 3) > 2 * one_step
    monkeypatch.setattr(drawsize, "SVG_MAX_LINES", one_step + 1)  # every step together would be too big
    written = write_run_outputs(tr, tmp_path / "out", depth=3, svg=False)
    assert "dot" in written and (tmp_path / "out" / "graph.dot").exists()


SAME_TENSOR_MOVE = """import torch
x = torch.tensor([1.0, 2.0])
y = x + 1
z = x.to("cpu")
"""


def test_show_moves_gives_the_line_of_a_to_that_returned_the_same_tensor(tmp_path):
    (tmp_path / "m.py").write_text(SAME_TENSOR_MOVE)
    gradtrace("run", "--no-svg", "-o", tmp_path / "out", tmp_path / "m.py", capture_output=True)
    r = gradtrace("show", tmp_path / "out", "--moves", "--json", capture_output=True, text=True)
    import json

    (row,) = json.loads(r.stdout)
    assert (row["line"], row["copy"]) == (4, False)


def test_run_with_no_svg_still_writes_the_viewer(tmp_path):
    (tmp_path / "s.py").write_text("import torch\ny = torch.ones(2) * 2\n")
    r = gradtrace("run", "--no-svg", "-o", tmp_path / "out", tmp_path / "s.py", capture_output=True, text=True)
    assert (tmp_path / "out" / "graph.html").exists() and "graph.html" in r.stdout
    assert not (tmp_path / "out" / "graph.svg").exists()
