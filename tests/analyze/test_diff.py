"""`gradtrace diff` and the diff library: alignment, tolerances, the first divergence."""

import json

import torch
from click.testing import CliRunner

import gradtrace
from gradtrace.analyze.diff import compare_values, diff_graphs, tolerance
from gradtrace.cli import main
from gradtrace.outputs import write_run_outputs
from gradtrace.runner import run_script

PROGRAM = '''import torch

torch.manual_seed(0)
w = torch.randn(4, 3, requires_grad=True)
x = torch.randn(5, 4)
h = x @ w
h = torch.tanh(h)
scale = h * 2.0
loss = scale.pow(2).mean()
loss.backward()
print(loss.item())
'''


def _traced(tmp_path, name, text, values="all"):
    script = tmp_path / f"{name}.py"
    script.write_text(text)
    res = run_script(script, [], values=values, print_traceback=False)
    assert res.exit_code == 0
    out = tmp_path / name
    write_run_outputs(res.trace, out, depth=3, svg=False)
    return out, res.trace


def test_a_copy_with_one_line_changed_first_diverges_at_that_line(tmp_path):
    a, _ = _traced(tmp_path, "prog", PROGRAM)
    b, _ = _traced(tmp_path, "prog_changed", PROGRAM.replace("scale = h * 2.0", "scale = h * 2.5"))
    dot = tmp_path / "div.dot"
    r = CliRunner().invoke(main, ["diff", str(a), str(b), "--json", "--dot", str(dot)])
    assert r.exit_code == 1, r.output
    rep = json.loads(r.output[: r.output.rindex("}") + 1])
    first = rep["first_divergence"]
    assert (first["line"], first["code"], first["name"]) == (8, "scale = h * 2.0", "Tensor.mul")
    assert first["what"] == "output" and first["figures"]["basis"] == "values"
    assert first["inputs_agreed"] == ["h"]  # what reached the line was still the same
    assert rep["numerics"]["diverging"] > 0 and not rep["agrees"]
    assert "#f4a6a6" in dot.read_text()  # the diverging op is highlighted


def test_statistics_alone_find_the_same_first_divergence(tmp_path):
    a, _ = _traced(tmp_path, "prog", PROGRAM, values="stats")
    b, _ = _traced(tmp_path, "prog_changed", PROGRAM.replace("scale = h * 2.0", "scale = h * 2.5"),
                   values="stats")
    rep = gradtrace.diff(a, b)
    assert rep["first_divergence"]["line"] == 8
    assert rep["first_divergence"]["figures"]["basis"] == "stats"


def test_two_runs_of_one_seeded_program_agree_bit_for_bit(tmp_path):
    _, ta = _traced(tmp_path, "one", PROGRAM)
    _, tb = _traced(tmp_path, "two", PROGRAM)
    rep = gradtrace.diff(ta, tb)  # Trace objects work as well as folders
    assert rep["agrees"] and rep["first_divergence"] is None
    assert rep["numerics"]["exact"] and rep["numerics"]["grads_compared"] >= 2
    assert rep["structure"]["only_a_count"] == rep["structure"]["only_b_count"] == 0


def test_a_to_that_copies_in_one_run_and_aliases_in_the_other_then_is_written_is_named(tmp_path):
    prog = '''import torch
x = torch.ones(3)
y = x.to(DT)
y.add_(1)
z = x * 1
'''
    a, _ = _traced(tmp_path, "copying", prog.replace("DT", "torch.float64"))
    b, _ = _traced(tmp_path, "aliasing", prog.replace("DT", "torch.float32"))
    rep = gradtrace.diff(a, b)
    (al,) = rep["structure"]["aliasing"]
    assert al["copy"] == [True, False]
    assert al["meaning_changes"] and al["written_after"]["code"] == "y.add_(1)"
    assert rep["first_divergence"]["code"] == "z = x * 1"  # x was written through y in one run only


def test_default_tolerances_are_those_of_assert_close_and_the_looser_dtype_wins():
    assert tolerance("float32") == (1.3e-6, 1e-5)
    assert tolerance("float64") == (1e-7, 1e-7)
    assert tolerance("float32", "float64") == (1.3e-6, 1e-5)
    assert tolerance("bfloat16", "float32") == (1.6e-2, 1e-5)
    assert tolerance("int64") == (0.0, 0.0)
    assert tolerance("float32", rtol=0.1, atol=0.2) == (0.1, 0.2)


def test_compare_values_reports_max_errors_and_the_mismatched_fraction():
    b = torch.tensor([1.0, 2.0, 3.0, float("nan")])
    a = torch.tensor([1.0, 2.5, 3.0, float("nan")])
    c = compare_values(a, b, rtol=1.3e-6, atol=1e-5)
    assert c["max_abs"] == 0.5 and c["max_rel"] == 0.25
    assert c["mismatch"] == 0.25 and not c["agree"]  # NaN equals NaN; one element of four is off


def test_the_same_infinities_in_both_runs_statistics_agree():
    from gradtrace.analyze.diff.compare import compare_stats

    s = {"min": float("inf"), "max": float("inf"), "mean": float("inf"), "norm": float("inf"), "nan": 0, "inf": 4}
    assert compare_stats(s, dict(s), 4, 1.3e-6, 1e-5)["agree"]


def test_infinities_of_opposite_sign_in_the_statistics_diverge():
    from gradtrace.analyze.diff.compare import compare_stats

    a = {"min": 1.0, "max": float("inf"), "mean": float("inf"), "norm": float("inf"), "nan": 0, "inf": 1}
    b = dict(a, min=float("-inf"), max=1.0, mean=float("-inf"))
    assert not compare_stats(a, b, 4, 1.3e-6, 1e-5)["agree"]


def test_diff_graphs_reports_configuration_differences(tmp_path):
    _, ta = _traced(tmp_path, "one", PROGRAM)
    _, tb = _traced(tmp_path, "two", PROGRAM)
    A, B = ta.graph, tb.graph.copy()
    B.graph["math"] = dict(B.graph["math"], tf32_matmul=True)
    rep = diff_graphs(A, B, values_a=ta.values, values_b=tb.values)
    assert rep["config"]["math_differs"] == ["tf32_matmul"]
    assert rep["config"]["math"]["default_dtype"] == ["float32", "float32"]
