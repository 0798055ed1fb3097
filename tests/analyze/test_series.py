"""A run's backward calls as a whole: a training loop's calls are one line of the
summary, and its loss and gradient norm are drawn over the run."""

import math

import pytest
import torch
from click.testing import CliRunner

import gradtrace
from gradtrace.analyze.series import backward_runs, series_lines, sparkline
from gradtrace.analyze.summary import format_summary, summarize
from gradtrace.cli import main


def _train(steps=6, blow_up_at=None, values="stats"):
    """A small regression loop; from step ``blow_up_at`` the learning rate is 1e6."""
    torch.manual_seed(0)
    with gradtrace.trace(values=values) as tr:
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(16, 4)
        y = x.sum(1, keepdim=True)
        for step in range(steps):
            if step == blow_up_at:
                opt.param_groups[0]["lr"] = 1e6
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return tr, model


def test_a_training_loops_backward_calls_are_one_run():
    tr, _ = _train()
    runs = backward_runs(summarize(tr.graph)["backward"])
    assert [len(r) for r in runs] == [6]


def test_the_summary_prints_a_run_of_calls_on_one_line():
    tr, _ = _train()
    s = summarize(tr.graph)
    grads = s["backward"][0]["grads"]
    assert [line for line in format_summary(s).splitlines() if line.startswith("backward")] == [
        f"backward bw:0 … bw:5 Tensor.backward (6 calls): loss [] w=implicit 1; gradients recorded: {grads} each"]


def test_calls_on_different_roots_are_separate_runs():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        for _ in range(2):
            a = (w * 2).sum()
            a.backward()
        b = (w * 3).sum()
        b.backward()
    assert [len(r) for r in backward_runs(summarize(tr.graph)["backward"])] == [2, 1]


def test_a_call_that_raised_is_a_run_of_its_own():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        for _ in range(2):
            loss = (w * 2).sum()
            loss.backward(retain_graph=True)
        with pytest.raises(RuntimeError):
            loss.backward()
            loss.backward()
    entries = summarize(tr.graph)["backward"]
    assert entries[-1]["error"] and [len(r) for r in backward_runs(entries)][-1] == 1


def test_each_call_keeps_its_loss_value():
    tr, _ = _train(steps=3)
    values = [b["roots"][0]["value"] for b in summarize(tr.graph)["backward"]]
    losses = [d["stats"]["mean"] for _, d in tr.graph.nodes(data=True) if d.get("label") == "loss"]
    assert values == losses and len(values) == 3


def test_each_call_keeps_the_norm_of_all_the_parameters_gradients():
    torch.manual_seed(0)
    with gradtrace.trace() as tr:
        model = torch.nn.Linear(5, 3)
        loss = model(torch.randn(7, 5)).pow(2).sum()
        loss.backward()
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]).double())
    got = summarize(tr.graph)["backward"][0]["grad_norm"]
    assert got == pytest.approx(float(expected), rel=1e-6)


def test_values_none_keeps_no_loss_value_or_gradient_norm():
    tr, _ = _train(steps=3, values="none")
    b = summarize(tr.graph)["backward"][0]
    assert b["roots"][0]["value"] is None and b["grad_norm"] is None
    assert series_lines(summarize(tr.graph)["backward"]) == []


def test_the_loss_line_names_the_first_call_whose_loss_is_not_finite():
    tr, _ = _train(steps=12, blow_up_at=6)
    entries = summarize(tr.graph)["backward"]
    first_bad = next(b["id"] for b in entries if not math.isfinite(b["roots"][0]["value"]))
    loss_line = series_lines(entries)[0]
    assert loss_line.startswith("loss over 12 backward calls: ") and loss_line.endswith(f"first NaN/Inf at {first_bad}")


def test_the_gradient_norm_line_follows_the_loss_line():
    tr, _ = _train(steps=4)
    lines = series_lines(summarize(tr.graph)["backward"])
    assert [line.split(" over ")[0] for line in lines] == ["loss", "gradient norm"]


def test_a_rising_series_is_drawn_with_rising_bars():
    line, log = sparkline([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert line == "▁▂▃▄▅▆▇█" and not log


def test_nan_and_inf_are_drawn_as_marks():
    line, _ = sparkline([1.0, math.nan, 2.0, math.inf])
    assert line == "▁!█!"


def test_values_spanning_orders_of_magnitude_are_drawn_on_a_log_scale():
    line, log = sparkline([1.0, 10.0, 100.0, 1000.0, 10000.0])
    assert log and line == "▁▃▅▆█"


def test_a_long_series_is_drawn_in_at_most_the_width_asked():
    line, _ = sparkline([float(i) for i in range(1000)], width=40)
    assert len(line) <= 40 and line[0] == "▁" and line[-1] == "█"


def test_a_bucket_holding_a_nan_is_drawn_as_a_mark():
    line, _ = sparkline([1.0] * 99 + [math.nan], width=10)
    assert line.endswith("!") and line.count("!") == 1


def test_the_run_report_prints_the_run_and_the_loss_over_it(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import torch\nw = torch.ones(3, requires_grad=True)\n"
                      "for i in range(5):\n    loss = (w * (i + 1)).sum()\n    loss.backward()\n")
    r = CliRunner().invoke(main, ["run", "-o", str(tmp_path / "out"), "--no-svg", str(script)])
    grads = summarize(gradtrace.load(tmp_path / "out").graph)["backward"][0]["grads"]
    assert f"backward bw:0 … bw:4 (Tensor.backward): 5 calls on loss w=implicit 1; {grads} gradients each" in r.output
    assert "loss over 5 backward calls: ▁▃▅▆█  3 → 15 (min 3, max 15)" in r.output


def test_the_gradient_norm_is_of_the_accumulated_grad_when_calls_accumulate():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        for i in range(3):
            (w * (i + 1)).sum().backward()
    norms = [b["grad_norm"] for b in summarize(tr.graph)["backward"]]
    assert norms == pytest.approx([math.sqrt(3) * k for k in (1, 3, 6)])
