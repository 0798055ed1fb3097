"""GT110 with history: where a NaN surfaces is not where a training run left its course;
the finding walks back to the update that blew a parameter up, or to the backward call
whose gradient norm jumped, and its fix speaks to that cause."""

import torch

import gradtrace
from gradtrace.analyze.checks import check_graph


def _mlp_run(steps, lr_jump_at=None, data_jump_at=None, seed=0, act=torch.nn.Tanh, last=None):
    """A small MLP regression loop traced with statistics (the last ``last`` steps kept
    when given); from ``lr_jump_at`` the learning rate is 1e6, from ``data_jump_at`` the
    inputs are 1e4 times larger."""
    torch.manual_seed(seed)
    with gradtrace.trace(last=last) as tr:
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), act(), torch.nn.Linear(16, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(32, 8)
        y = x.sum(1, keepdim=True)
        for step in range(steps):
            if step == lr_jump_at:
                opt.param_groups[0]["lr"] = 1e6
            if step == data_jump_at:
                x = x * 1e4
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return tr


def _gt110(tr):
    return [f for f in check_graph(tr.graph) if f.code == "GT110"]


def _turn(f):
    return next(o for o in f.ops if o.get("role") == "left its course")


def test_a_learning_rate_blow_up_is_traced_back_to_the_update_that_followed_it():
    tr = _mlp_run(2000, lr_jump_at=1500)
    first = _gt110(tr)[0]
    assert "after backward call bw:1500" in first.message
    assert _turn(first)["code"] == "opt.step()"


def test_the_fix_of_a_blow_up_speaks_to_the_learning_rate_not_to_the_op_where_the_nan_surfaced():
    first = _gt110(_mlp_run(30, lr_jump_at=20))[0]
    assert first.fix.startswith("the run left its course at the update") and "learning rate" in first.fix
    assert "clamp its input" not in first.fix


def test_the_update_names_the_argument_that_carried_the_learning_rate():
    first = _gt110(_mlp_run(30, lr_jump_at=20))[0]
    assert "alpha=-1000000.0" in first.message


def test_the_finding_names_the_learning_rate_raised_at_that_step():
    first = _gt110(_mlp_run(30, lr_jump_at=20))[0]
    assert "at this step SGD's learning rate (param group 0) went from 0.01 to 1e+06" in first.message
    assert "lower the learning rate (at this step SGD's learning rate" in first.fix


def test_a_jump_of_the_inputs_is_traced_back_to_the_backward_call_whose_gradient_norm_jumped():
    found = _gt110(_mlp_run(40, data_jump_at=25, seed=1, act=torch.nn.ReLU))
    assert found and all("the gradient norm jumped" in f.message and "backward call bw:25 " in f.message
                         for f in found)
    assert all(f.fix.startswith("the run left its course in backward call bw:25 ") for f in found)


def test_with_last_2_a_blow_up_in_a_dropped_step_is_traced_back_to_that_step_by_its_row():
    first = _gt110(_mlp_run(2000, lr_jump_at=1500, last=2))[0]
    assert "the update of step 1501 changed" in first.message and "went from 0.01 to 1e+06" in first.message
    assert first.fix.startswith("the run left its course at the update of step 1501")


def test_with_last_2_a_jump_of_the_inputs_in_a_dropped_step_names_that_step():
    found = _gt110(_mlp_run(40, data_jump_at=25, seed=1, act=torch.nn.ReLU, last=2))
    assert found and all("the gradient norm jumped" in f.message and "in step 26 " in f.message for f in found)


def test_a_nan_from_a_domain_error_in_a_steady_run_keeps_its_own_cause():
    torch.manual_seed(0)
    with gradtrace.trace() as tr:
        w = torch.nn.Parameter(torch.ones(4))
        opt = torch.optim.SGD([w], lr=0.1)
        for step in range(6):
            x = torch.full((4,), 2.0 if step < 5 else -1.0)
            loss = torch.log(x).sum() * w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    first = _gt110(tr)[0]
    assert not any(o.get("role") == "left its course" for o in first.ops)
    assert "before it" not in first.message and "torch.log" in first.message
