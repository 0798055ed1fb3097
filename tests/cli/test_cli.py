"""The CLI through click's CliRunner and through real subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import TESTS

from gradtrace.cli import main

ROOT = TESTS.parent
EXAMPLES = ROOT / "examples"


def gradtrace(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gradtrace", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def autograd_trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "autograd"
    r = gradtrace("run", "--no-svg", "-o", out, EXAMPLES / "autograd.py")
    assert r.returncode == 0, r.stderr
    return out


def test_run_writes_the_trace_folder_and_passes_the_scripts_output_through(autograd_trace):
    assert (autograd_trace / "trace.json").exists() and (autograd_trace / "graph.dot").exists()
    assert json.loads((autograd_trace / "trace.json").read_text())["graph"]["format"] == "gradtrace/1"


def test_run_prints_a_summary_with_backward_weights_and_top_lines(tmp_path):
    r = gradtrace("run", "--no-svg", "-o", tmp_path / "a", EXAMPLES / "autograd.py")
    assert "x.grad 2.0" in r.stdout  # the script's own output
    assert "backward bw:1" in r.stdout and "w=v [2, 2]" in r.stdout
    assert "top source lines" in r.stdout and "wrote" in r.stdout
    assert "findings: 1 info, 1 warning (gradtrace check" in r.stdout  # the .data write, the no_grad cut


def test_run_gives_the_script_its_argv_main_and_folder_on_sys_path(tmp_path):
    (tmp_path / "helper_mod.py").write_text("VALUE = 7\n")
    script = tmp_path / "s.py"
    script.write_text(
        "import sys, torch, helper_mod\n"
        "assert __name__ == '__main__'\n"
        "print('argv', sys.argv[1:], helper_mod.VALUE)\n"
        "torch.ones(1)\n"
        "sys.exit(int(sys.argv[2]))\n"
    )
    r = gradtrace("run", "--no-svg", "-o", tmp_path / "out", script, "--flag", "3")
    assert "argv ['--flag', '3'] 7" in r.stdout
    assert r.returncode == 3
    assert json.loads((tmp_path / "out" / "trace.json").read_text())["graph"]["argv"] == ["--flag", "3"]


def test_run_of_a_script_that_traces_itself_runs_as_it_does_untraced(tmp_path):
    script = tmp_path / "own.py"
    script.write_text(
        "import torch, gradtrace\n"
        "x = torch.ones(3)\n"
        "with gradtrace.trace(values='none') as mine:\n"
        "    y = x * 2\n"
        "z = y + 1\n"
        "print('mine', [d['name'] for _, d in mine.graph.nodes(data=True) if d.get('kind') == 'op'])\n"
    )
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    r = gradtrace("run", "--no-svg", "-o", tmp_path / "out", script)
    assert r.returncode == plain.returncode == 0, r.stderr
    assert "mine ['Tensor.mul']" in plain.stdout and "mine ['Tensor.mul']" in r.stdout
    g = json.loads((tmp_path / "out" / "trace.json").read_text())
    names = [n["name"] for n in g["nodes"] if n.get("kind") == "op"]
    assert names == ["torch.ones", "gradtrace.trace", "Tensor.add"]
    assert "paused where the program entered its own gradtrace.trace() (own.py:3)" in r.stdout


def test_a_raising_script_shows_its_traceback_keeps_the_trace_and_exits_nonzero(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("import torch\nx = torch.ones(2)\nraise ValueError('broken here')\n")
    r = gradtrace("run", "--no-svg", "-o", tmp_path / "out", script)
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr and "ValueError: broken here" in r.stderr
    assert 'bad.py", line 3' in r.stderr and "runpy" not in r.stderr
    g = json.loads((tmp_path / "out" / "trace.json").read_text())["graph"]
    assert g["status"] == "error" and g["error"]["type"] == "ValueError"


def test_a_missing_script_is_a_one_line_usage_error(tmp_path):
    r = gradtrace("run", tmp_path / "nope.py")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "script not found" in r.stderr


@pytest.mark.parametrize("content,expected", [
    ("{not json", "corrupt trace file"),
    ('{"hello": 1}', "not a gradtrace trace"),
    ('{"graph": {"format": "other/3"}, "nodes": [], "edges": []}', "not a gradtrace trace"),
    ('{"graph": {"format": "gradtrace/9"}, "nodes": [], "edges": []}', "gradtrace/9 is not supported"),
])
def test_a_bad_trace_folder_is_a_one_line_error_with_exit_code_2(tmp_path, content, expected):
    (tmp_path / "trace.json").write_text(content)
    r = CliRunner().invoke(main, ["show", str(tmp_path)])
    assert r.exit_code == 2
    assert expected in r.output and r.output.strip().count("\n") == 0


def test_a_missing_trace_folder_is_a_one_line_error(tmp_path):
    r = gradtrace("show", tmp_path / "missing")
    assert r.returncode == 2 and "no such trace folder" in r.stderr and r.stderr.strip().count("\n") == 0


def test_show_backward_lists_weights_and_gradients_as_json(autograd_trace):
    r = CliRunner().invoke(main, ["show", str(autograd_trace), "--backward", "--json"])
    rows = json.loads(r.output)
    weights = [row for row in rows if row["edge"] == "weights"]
    assert len(weights) == 4 and weights[0]["w"] == "implicit"


def test_show_ops_filters_by_source_line(autograd_trace):
    r = CliRunner().invoke(main, ["show", str(autograd_trace), "--ops", "--line", "autograd.py:43", "--json"])
    rows = json.loads(r.output)
    assert [row["op"] for row in rows] == ["Tensor.data", "Tensor.mul_"]


def test_show_aliases_and_moves_tables_render(autograd_trace):
    r = CliRunner().invoke(main, ["show", str(autograd_trace), "--aliases"])
    assert r.exit_code == 0 and "invisible to autograd" in r.output


def test_dot_writes_each_view(autograd_trace, tmp_path):
    for view in ["forward", "autograd", "memory", "all"]:
        out = tmp_path / f"{view}.dot"
        r = CliRunner().invoke(main, ["dot", str(autograd_trace), "--view", view, "-o", str(out)])
        assert r.exit_code == 0, r.output
        assert out.read_text().startswith("digraph")


def test_dot_renders_svg_when_graphviz_is_installed(autograd_trace, tmp_path):
    from gradtrace.views.dot import have_graphviz

    out = tmp_path / "g.svg"
    r = CliRunner().invoke(main, ["dot", str(autograd_trace), "-o", str(out)])
    if not have_graphviz():
        assert r.exit_code == 2 and "Graphviz" in r.output
        pytest.skip("Graphviz's dot is not installed")
    assert r.exit_code == 0 and out.read_text().lstrip().startswith(("<?xml", "<svg"))


@pytest.mark.parametrize("command", ["run", "show", "dot", "check", "diff", "replay"])
def test_every_command_help_shows_an_example(command):
    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0 and "Example:" in r.output


def test_version_flag():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and "gradtrace, version" in r.output


def test_the_console_script_is_installed():
    exe = Path(sys.executable).parent / "gradtrace"
    if not exe.exists():
        pytest.skip("not installed as a console script in this environment")
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0


def test_show_modules_counts_ops_per_module(tmp_path):
    out = tmp_path / "mlp"
    r = gradtrace("run", "--no-svg", "-o", out, EXAMPLES / "train_mlp.py", "--steps", "1")
    assert r.returncode == 0, r.stderr
    rows = json.loads(CliRunner().invoke(main, ["show", str(out), "--modules", "--json"]).output)
    by = {row["module"]: row for row in rows}
    assert by["MLP.fc1"]["type"] == "Linear" and by["MLP.fc1"]["ops"] >= 1
    assert by["MLP"]["ops"] >= sum(row["ops"] for m, row in by.items() if m.count(".") == 1)


def test_an_op_that_raises_shows_the_same_traceback_as_python(tmp_path):
    script = tmp_path / "mm.py"
    script.write_text("import torch\na = torch.ones(2, 3)\nb = a @ a\n")
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    traced = gradtrace("run", "--no-svg", "-o", tmp_path / "out", script)
    assert traced.returncode == plain.returncode == 1
    assert traced.stderr.startswith(plain.stderr)


def test_run_with_values_all_says_before_the_run_how_much_it_may_keep(tmp_path):
    r = gradtrace("run", "--no-svg", "--values", "all", "--values-max", "64K", "-o", tmp_path / "t",
                  EXAMPLES / "autograd.py")
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("gradtrace: --values all keeps a copy") and "at most 64.0 KiB" in first


def test_run_with_a_values_limit_reports_what_it_left_out(tmp_path):
    r = gradtrace("run", "--no-svg", "--values", "all", "--values-max", "100", "-o", tmp_path / "t",
                  EXAMPLES / "train_mlp.py", "--steps", "1")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("values: "))
    assert "(limit 100 B)" in line and "not kept past the limit" in line


def test_run_rejects_a_values_limit_that_is_not_a_size(tmp_path):
    r = gradtrace("run", "--values", "all", "--values-max", "lots", "-o", tmp_path / "t", EXAMPLES / "autograd.py")
    assert r.returncode == 2 and "'lots' is not a size" in r.stderr


def _ending_in_os_exit(tmp_path, code, before="", env=None):
    """``(python's run, gradtrace run's run, OUT)`` of a script whose last line is
    ``os._exit(code)``."""
    script = tmp_path / "hard.py"
    script.write_text(f"import os, torch\nx = torch.ones(3) * 2\nprint('done', flush=True)\n{before}os._exit({code})\n")
    env = env or os.environ
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "gradtrace", "run", "--no-svg", "-o", str(out), str(script)],
                       capture_output=True, text=True, timeout=300, env=env)
    return plain, r, out


def test_run_of_a_script_ending_in_os_exit_writes_its_trace_and_exits_with_its_code(tmp_path):
    plain, r, out = _ending_in_os_exit(tmp_path, 3)
    assert r.returncode == plain.returncode == 3, r.stderr
    g = json.loads((out / "trace.json").read_text())
    assert (g["graph"]["status"], g["graph"]["hard_exit"], g["graph"]["error"]["message"]) == ("error", 3, "os._exit(3)")
    assert "Tensor.mul" in [n["name"] for n in g["nodes"] if n.get("kind") == "op"]
    assert f"ended the process with os._exit(3); its trace is in {out}" in r.stderr


def test_a_script_ending_in_os_exit_0_has_a_trace_with_status_ok(tmp_path):
    plain, r, out = _ending_in_os_exit(tmp_path, 0)
    assert r.returncode == plain.returncode == 0, r.stderr
    assert json.loads((out / "trace.json").read_text())["graph"]["status"] == "ok"


def test_output_left_unflushed_at_os_exit_is_lost_under_run_as_it_is_untraced(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe's stdout is block-buffered
    plain, r, _ = _ending_in_os_exit(tmp_path, 0, before="print('never flushed')\n", env=env)
    assert plain.stdout == r.stdout == "done\n", r.stderr


def test_a_forked_child_ending_in_os_exit_leaves_the_parents_trace_going(tmp_path):
    script = tmp_path / "fork.py"
    script.write_text(
        "import os, torch\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    torch.ones(2).sum()\n"
        "    os._exit(7)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('child', os.waitstatus_to_exitcode(status))\n"
        "y = torch.ones(2) + 1\n"
    )
    r = gradtrace("run", "--no-svg", "-o", tmp_path / "out", script)
    assert r.returncode == 0 and "child 7" in r.stdout, r.stderr
    assert "os._exit" not in r.stderr
    g = json.loads((tmp_path / "out" / "trace.json").read_text())
    assert g["graph"]["status"] == "ok" and "Tensor.add" in [n["name"] for n in g["nodes"] if n.get("kind") == "op"]


def test_os_exit_on_another_thread_ends_the_process_with_its_code_and_a_note(tmp_path):
    script = tmp_path / "thread_exit.py"
    script.write_text("import os, threading, torch\nx = torch.ones(2)\n"
                      "t = threading.Thread(target=os._exit, args=(5,))\nt.start()\nt.join()\n")
    r = gradtrace("run", "--no-svg", "-o", tmp_path / "out", script)
    assert r.returncode == 5
    assert "os._exit() on a thread other than the script's: the process ends without its trace" in r.stderr
