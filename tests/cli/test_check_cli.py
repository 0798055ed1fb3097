"""`gradtrace check`: scripts and saved traces, exit codes, JSON, select/ignore."""

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from gradtrace.cli import main

BAD = """
import torch
x = torch.ones(1, requires_grad=True)
y = x * x
x.data *= 100
y.backward()
"""

CLEAN = """
import sys
import torch
x = torch.ones(2, requires_grad=True)
(x * float(sys.argv[1])).sum().backward()
print("grad", x.grad.tolist())
"""

INFO = """
import torch
x = torch.zeros(2, 3)
r = x[0, :]
r += 1
"""


@pytest.fixture
def scripts(tmp_path):
    out = {}
    for name, text in (("bad", BAD), ("clean", CLEAN), ("info", INFO)):
        p = tmp_path / f"{name}.py"
        p.write_text(textwrap.dedent(text))
        out[name] = str(p)
    return out


def invoke(*args):
    return CliRunner().invoke(main, ["check", *args])


def test_error_finding_in_a_script_exits_1_and_prints_file_line_code(scripts):
    r = invoke(scripts["bad"])
    assert r.exit_code == 1, r.output
    first = r.output.splitlines()[0]
    assert first.startswith(scripts["bad"] + ":5: GT102 error: ") and "x.data *= 100" in r.output
    assert r.output.rstrip().endswith("1 finding: 1 error")


def test_clean_script_exits_0_and_passes_its_args(scripts):
    r = invoke(scripts["clean"], "3")
    assert r.exit_code == 0, r.output
    assert "grad [3.0, 3.0]" in r.output and "0 findings" in r.output


def test_info_only_exits_0(scripts):
    r = invoke(scripts["info"])
    assert r.exit_code == 0 and "GT103 info" in r.output


def test_json_output_lists_findings(scripts):
    r = invoke("--json", scripts["bad"])
    assert r.exit_code == 1
    data = json.loads(r.output)
    assert [d["code"] for d in data] == ["GT102"] and data[0]["line"] == 5 and data[0]["ops"]


def test_ignore_drops_the_error_and_the_exit_code(scripts):
    assert invoke("--ignore", "GT102", scripts["bad"]).exit_code == 0
    r = invoke("--select", "GT103,GT101", "--select", "GT104", scripts["bad"])
    assert r.exit_code == 0 and "0 findings" in r.output


def test_the_fix_line_names_the_users_own_line(scripts):
    r = invoke(scripts["bad"])
    fix = next(line for line in r.output.splitlines() if line.strip().startswith("fix:"))
    assert "move `x.data *= 100` after the backward call at line 6 (`y.backward()`)" in fix


def test_ignore_comment_on_the_line_silences_the_finding_and_the_exit_code(tmp_path):
    p = tmp_path / "silenced.py"
    p.write_text(BAD.replace("x.data *= 100", "x.data *= 100  # gradtrace: ignore[GT102]"))
    r = invoke(str(p))
    assert r.exit_code == 0 and "0 findings" in r.output


def test_unknown_code_is_a_one_line_error_exit_2(scripts):
    r = invoke("--select", "GT999", scripts["bad"])
    assert r.exit_code == 2 and "unknown check code 'GT999'" in r.output


def test_saved_trace_folder_is_checked_without_rerunning(scripts, tmp_path):
    out = tmp_path / "trace"
    assert invoke("-o", str(out), scripts["bad"]).exit_code == 1
    assert (out / "trace.json").exists()
    (tmp_path / "bad.py").unlink()  # the folder is enough
    r = invoke(str(out))
    assert r.exit_code == 1 and "GT102 error" in r.output


def test_options_may_follow_a_trace_folder(scripts, tmp_path):
    out = tmp_path / "trace"
    invoke("-o", str(out), scripts["bad"])
    r = invoke(str(out), "--ignore", "GT102", "--json")
    assert r.exit_code == 0 and json.loads(r.output) == []
    r = invoke(str(out), "--json", "extra")
    assert r.exit_code == 2 and "unexpected argument after the trace folder: extra" in r.output


def test_dot_output_marks_the_finding_nodes(scripts, tmp_path):
    dot = tmp_path / "g.dot"
    invoke("--dot", str(dot), scripts["bad"])
    assert "#cc0000" in dot.read_text()


def test_dot_output_names_the_finding_code_on_its_node(scripts, tmp_path):
    dot = tmp_path / "g.dot"
    invoke("--dot", str(dot), scripts["bad"])
    assert "GT102" in dot.read_text()


def test_missing_target_and_folder_without_trace_exit_2(tmp_path):
    r = invoke(str(tmp_path / "nope.py"))
    assert r.exit_code == 2 and "not found" in r.output
    r = invoke(str(tmp_path))
    assert r.exit_code == 2 and "trace.json" in r.output


def test_list_shows_every_code():
    r = invoke("--list")
    assert r.exit_code == 0 and "GT101" in r.output and "GT112" in r.output


def test_help_has_an_example():
    r = invoke("--help")
    assert r.exit_code == 0 and "Example:" in r.output and "gradtrace check" in r.output


def test_real_process_exit_codes_are_0_1_2(scripts, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "gradtrace", "check", *args],
                              capture_output=True, text=True, timeout=120)

    assert run(scripts["clean"], "1").returncode == 0
    bad = run(scripts["bad"])
    assert bad.returncode == 1 and "1 finding: 1 error" in bad.stdout
    missing = run(str(tmp_path / "missing.py"))
    assert missing.returncode == 2 and missing.stderr.startswith("gradtrace: error: script not found")


def test_check_of_a_script_refuses_an_impossible_output_folder_before_running(tmp_path):
    (tmp_path / "s.py").write_text("import torch\nopen(__file__ + '.ran', 'w').close()\n")
    r = subprocess.run([sys.executable, "-m", "gradtrace", "check", "-o", "/proc/no/such", str(tmp_path / "s.py")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "cannot write the trace folder" in r.stderr
    assert not (tmp_path / "s.py.ran").exists()


def test_check_of_a_script_starts_its_findings_on_a_line_of_their_own(tmp_path):
    (tmp_path / "s.py").write_text("import torch\ntorch.ones(1)\nprint('no newline', end='')\n")
    with open(tmp_path / "stdout.txt", "w") as f:
        subprocess.run([sys.executable, "-m", "gradtrace", "check", str(tmp_path / "s.py")], stdout=f,
                       stderr=subprocess.PIPE, timeout=300)
    assert (tmp_path / "stdout.txt").read_text().startswith("no newline\n0 findings")
