"""`--steps A:B` / `gradtrace.trace(steps=...)`: only steps A to B-1 of a run are
recorded, and outside them nothing of gradtrace is on torch's mode stack or in its
module hooks; the program computes what it computes untraced."""

import subprocess
import sys

import pytest
import torch
from helpers import cnn_run
from torch.nn.modules import module as nn_module
from torch.overrides import TorchFunctionMode

import gradtrace
from gradtrace.analyze.step_rows import step_rows
from gradtrace.record.watch import StoppedAtNonfinite


def _train(steps=8, window=None, seen=None, around=None):
    """A seeded MLP loop; ``seen`` gets, per step, torch's function-mode stack depth and
    the number of global forward hooks during its forward; ``around`` is a context
    manager entered around each step's body."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 4), torch.randn(16, 1)

    def body():
        if seen is not None:
            seen.append((torch._C._len_torch_function_stack(), len(nn_module._global_forward_hooks)))
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def loop():
        for _ in range(steps):
            if around is not None:
                with around():
                    body()
            else:
                body()

    if window is None:
        loop()
        return None, model
    with gradtrace.trace(steps=window) as tr:
        loop()
    return tr, model


def _backward_calls(tr):
    return sum(1 for _, d in tr.graph.nodes(data=True) if d.get("kind") == "backward")


def test_only_the_windows_steps_are_recorded():
    tr, _ = _train(8, "3:6")
    assert _backward_calls(tr) == 3


def test_the_step_rows_are_numbered_as_the_run_counted_them():
    tr, _ = _train(8, "3:6")
    assert [r["step"] for r in step_rows(tr.graph)] == [3, 4, 5]


def test_outside_the_window_nothing_of_gradtrace_is_on_the_mode_stack():
    seen = []
    _train(8, "3:6", seen)
    assert [depth for depth, _ in seen] == [0, 0, 1, 1, 1, 0, 0, 0]


def test_outside_the_window_no_module_hook_of_gradtrace_is_installed():
    seen = []
    _train(8, "3:6", seen)
    hooks = [n for _, n in seen]
    assert hooks[0] == hooks[1] == hooks[5] == hooks[7] and hooks[2] > hooks[0]


def test_a_windowed_run_computes_what_the_untraced_run_computes():
    _, untraced = _train(8)
    _, traced = _train(8, "3:6")
    for a, b in zip(untraced.parameters(), traced.parameters()):
        assert torch.equal(a, b)


def test_a_window_from_step_1_opens_at_once():
    tr, _ = _train(5, "1:3")
    assert _backward_calls(tr) == 2 and "first_step" in tr.meta


def test_a_window_the_run_never_reaches_records_nothing():
    tr, _ = _train(4, "10:12")
    assert _backward_calls(tr) == 0 and tr.meta["steps_seen"] == 4 and "first_step" not in tr.meta


def test_marks_count_the_steps_of_a_loop_without_an_optimizer():
    with gradtrace.trace(steps="2:3") as tr:
        x = torch.ones(3)
        for i in range(4):
            x = x * (i + 2)
            gradtrace.step()
    muls = [d for _, d in tr.graph.nodes(data=True) if d.get("name") == "Tensor.mul"]
    assert [m["args"] for m in muls] == ["3"]


class _Counting(TorchFunctionMode):
    calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        _Counting.calls += 1
        return func(*args, **(kwargs or {}))


def test_a_users_mode_entered_around_each_step_keeps_its_place():
    _Counting.calls = 0
    _, untraced = _train(6, around=_Counting)
    calls = _Counting.calls
    _Counting.calls = 0
    _, traced = _train(6, "2:4", around=_Counting)
    assert _Counting.calls == calls and torch._C._len_torch_function_stack() == 0
    assert all(torch.equal(a, b) for a, b in zip(untraced.parameters(), traced.parameters()))


def test_a_window_that_is_not_a_to_b_is_a_one_line_error(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    r = subprocess.run([sys.executable, "-m", "gradtrace", "run", "--steps", "5:2", str(script)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "B must be greater than A" in r.stderr


def test_steps_of_the_library_take_a_pair():
    with pytest.raises(ValueError, match="steps count from 1"):
        gradtrace.trace(steps=(0, 3))


def test_a_window_watched_for_nan_opens_and_closes_inside_the_optimizers_step():
    _, untraced = _train(8)
    torch.manual_seed(0)
    with gradtrace.trace(steps="3:6", stop_at="nonfinite") as tr:
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = torch.randn(16, 4), torch.randn(16, 1)
        for _ in range(8):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert _backward_calls(tr) == 3 and tr.meta["status"] == "ok"
    assert all(torch.equal(a, b) for a, b in zip(untraced.parameters(), model.parameters()))


def test_a_nan_in_the_windows_last_step_stops_the_run_there():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=1.0)
    steps = 0
    with pytest.raises(StoppedAtNonfinite):
        with gradtrace.trace(steps="2:4", stop_at="nonfinite"):
            for i in range(6):
                steps += 1
                loss = (p * (float("inf") if i == 2 else 1.0)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
    assert steps == 3


def test_the_step_that_stopped_the_run_is_counted_among_the_steps_seen():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(StoppedAtNonfinite):
        with gradtrace.trace(steps="2:9", stop_at="nonfinite") as tr:
            for i in range(8):
                loss = model(torch.ones(1, 2) * (float("inf") if i == 3 else 1.0)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
    assert tr.meta["steps_seen"] == 4 and [r["step"] for r in step_rows(tr.graph)] == [2, 3, 4]


def test_a_mark_that_stopped_the_run_is_counted_among_the_steps_seen():
    with pytest.raises(StoppedAtNonfinite):
        with gradtrace.trace(steps="2:9", stop_at="nonfinite") as tr:
            x = torch.ones(2)
            for i in range(8):
                x = x / (0.0 if i == 2 else 1.0)
                gradtrace.step()
    assert tr.meta["steps_seen"] == 3


def test_the_last_two_steps_of_a_300_step_cnn_run_are_recorded_and_change_nothing():
    _, untraced = cnn_run(300)
    tr, traced = cnn_run(300, steps="299:")
    assert [r["step"] for r in step_rows(tr.graph)] == [299, 300] and tr.meta["steps_seen"] == 300
    assert untraced.keys() == traced.keys() and all(torch.equal(untraced[k], traced[k]) for k in untraced)
