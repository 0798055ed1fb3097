"""A row per step of a training run: ops, losses, the gradient norm, the parameter with the
largest gradient and the one the step changed most, NaN/Inf counts; kept at the head of
trace.json and printed by `gradtrace show DIR --steps`."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

import gradtrace
from gradtrace.analyze.step_rows import step_rows
from gradtrace.cli import main
from gradtrace.trace import load_steps


def _loop(steps=5, lr_jump_at=None, accumulate=1, values="stats"):
    torch.manual_seed(0)
    grads = []
    with gradtrace.trace(values=values) as tr:
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(16, 4)
        y = x.sum(1, keepdim=True)
        for step in range(steps):
            if step == lr_jump_at:
                opt.param_groups[0]["lr"] = 1e6
            opt.zero_grad()
            for _ in range(accumulate):
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
            grads.append(float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))))
            opt.step()
    return tr, grads


def test_a_loop_has_a_row_per_step():
    tr, _ = _loop(5)
    assert [r["step"] for r in step_rows(tr.graph)] == [1, 2, 3, 4, 5]


def test_the_rows_count_every_op_once():
    tr, _ = _loop(5)
    ops = sum(1 for _, d in tr.graph.nodes(data=True) if d.get("kind") == "op")
    assert sum(r["ops"] for r in step_rows(tr.graph)) == ops


def test_each_row_keeps_its_loss():
    tr, _ = _loop(3)
    losses = [d["stats"]["mean"] for _, d in tr.graph.nodes(data=True) if d.get("label") == "loss"]
    assert [r["losses"] for r in step_rows(tr.graph)] == [[v] for v in losses]


def test_the_gradient_norm_is_the_norm_of_every_grad_the_update_used():
    tr, grads = _loop(4)
    assert [r["grad_norm"] for r in step_rows(tr.graph)] == pytest.approx(grads, rel=1e-5)


def test_gradient_accumulation_is_one_row_with_its_backward_calls():
    tr, _ = _loop(3, accumulate=2)
    rows = step_rows(tr.graph)
    assert [len(r["backward"]) for r in rows] == [2, 2, 2] and len(rows[0]["losses"]) == 2


def test_the_first_step_that_changed_a_parameter_a_hundredfold_is_the_one_with_the_raised_learning_rate():
    tr, _ = _loop(8, lr_jump_at=4)
    rows = step_rows(tr.graph)[1:]  # step 1 also initialises the parameters
    assert next(r["step"] for r in rows if r["max_change"]["ratio"] >= 100) == 5


def test_steps_after_the_blow_up_count_the_tensors_made_with_nan_or_inf():
    tr, _ = _loop(10, lr_jump_at=4)
    rows = step_rows(tr.graph)
    assert rows[0]["nan"] == rows[0]["inf"] == 0
    assert any(r["nan"] or r["inf"] for r in rows[5:])


def test_a_trace_without_a_backward_call_has_no_rows():
    with gradtrace.trace() as tr:
        torch.ones(3) * 2
    assert step_rows(tr.graph) == []


def test_values_none_keeps_the_op_counts_and_no_figures():
    tr, _ = _loop(3, values="none")
    rows = step_rows(tr.graph)
    assert all(r["ops"] > 0 and r["grad_norm"] is None and r["losses"] == [None] for r in rows)


def test_the_head_rows_equal_the_rows_of_the_loaded_trace(tmp_path):
    tr, _ = _loop(10, lr_jump_at=4)
    tr.save(tmp_path / "t")
    rows, _ = load_steps(tmp_path / "t")
    assert json.dumps(rows) == json.dumps(step_rows(gradtrace.load(tmp_path / "t").graph))
    assert any(math.isnan(v) for r in rows for v in r["losses"])


def test_show_steps_prints_a_row_per_step(tmp_path):
    tr, _ = _loop(4)
    tr.save(tmp_path / "t")
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--steps", "--json"])
    assert [row["step"] for row in json.loads(r.output)] == [1, 2, 3, 4]


def test_show_ops_of_one_step_lists_only_that_steps_ops(tmp_path):
    tr, _ = _loop(4)
    tr.save(tmp_path / "t")
    third = step_rows(tr.graph)[2]
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--step", "3", "--json"])
    seqs = [row["seq"] for row in json.loads(r.output)]
    assert seqs == list(range(third["first_seq"], third["last_seq"] + 1))


def test_a_step_the_trace_does_not_have_is_a_one_line_error(tmp_path):
    tr, _ = _loop(2)
    tr.save(tmp_path / "t")
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--ops", "--step", "9"])
    assert r.exit_code == 2 and "step 9 is not in this trace: it has 2 step(s)" in r.output


def test_each_row_keeps_the_learning_rate_its_step_used():
    tr, _ = _loop(6, lr_jump_at=3)
    assert [r["lr"] for r in step_rows(tr.graph)] == [[0.01]] * 3 + [[1e6]] * 3


def test_initialising_a_new_parameter_is_no_change_of_what_the_model_learnt():
    torch.use_deterministic_algorithms(True)  # torch.empty fills a new parameter with NaN
    try:
        with gradtrace.trace() as tr:
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            x = torch.randn(8, 4)
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.use_deterministic_algorithms(False)
    assert math.isfinite(step_rows(tr.graph)[0]["max_change"]["ratio"])


def test_show_steps_prints_the_largest_update_to_weight_ratio(tmp_path):
    tr, _ = _loop(2)
    tr.save(tmp_path / "t")
    update = step_rows(tr.graph)[1]["max_update"]
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--steps"], terminal_width=250)
    assert "largest update/weight" in r.output
    line = next(x for x in r.output.splitlines() if x.startswith("│ 2 "))
    assert f"{update['tensor']} {update['ratio']:.4g}" in line


def test_show_steps_of_a_trace_older_than_update_ratios_prints_norm_changes(tmp_path):
    tr, _ = _loop(2)
    tr.save(tmp_path / "t")
    path = tmp_path / "t" / "trace.json"
    data = json.loads(path.read_text())
    for row in data["graph"]["steps"]:
        del row["max_update"]
    for node in data["nodes"]:
        node.pop("update", None)
    path.write_text(json.dumps(data))
    r = CliRunner().invoke(main, ["show", str(tmp_path / "t"), "--steps"], terminal_width=250)
    assert r.exit_code == 0, r.output
    assert "largest change" in r.output and "largest update/weight" not in r.output


def test_an_update_blown_up_by_the_learning_rate_has_a_ratio_near_that_rate():
    tr, grads = _loop(6, lr_jump_at=3)
    ratio = step_rows(tr.graph)[3]["max_update"]["ratio"]
    assert ratio > 1e3
