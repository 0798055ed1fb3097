"""Each optimizer step of a recording: which optimizer stepped, after which op, and the
learning rate of each param group then."""

import threading

import torch
from torch.optim import optimizer as optim_module

import gradtrace


def _steps(tr):
    return sorted((d for _, d in tr.graph.nodes(data=True) if d.get("kind") == "optimizer_step"),
                  key=lambda d: d["seq"])


def test_each_optimizer_step_keeps_the_learning_rate_of_each_param_group():
    with gradtrace.trace() as tr:
        a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
        opt = torch.optim.SGD([{"params": a.parameters()}, {"params": b.parameters(), "lr": 0.5}], lr=0.1)
        for i in range(2):
            (a(torch.ones(1, 2)) + b(torch.ones(1, 2))).sum().backward()
            opt.step()
            opt.param_groups[0]["lr"] = 0.01
    assert [d["lr"] for d in _steps(tr)] == [[0.1, 0.5], [0.01, 0.5]]


def test_two_optimizers_are_told_apart():
    with gradtrace.trace() as tr:
        g, d = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
        opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.SGD(d.parameters(), lr=0.1)
        d(g(torch.ones(1, 2)).expand(1, 2)).sum().backward()
        opt_d.step()
        opt_g.step()
    assert [(s["optimizer"], s["type"]) for s in _steps(tr)] == [(0, "SGD"), (1, "Adam")]


def test_the_step_comes_after_the_ops_of_the_update():
    with gradtrace.trace() as tr:
        w = torch.nn.Parameter(torch.ones(2))
        opt = torch.optim.SGD([w], lr=0.1)
        w.sum().backward()
        opt.step()
    ops = sorted(d["seq"] for _, d in tr.graph.nodes(data=True) if d.get("kind") == "op")
    assert _steps(tr)[0]["seq"] == ops[-1] + 1


def test_a_tensor_learning_rate_is_read_as_its_value():
    with gradtrace.trace() as tr:
        w = torch.nn.Parameter(torch.ones(2))
        opt = torch.optim.Adam([w], lr=torch.tensor(0.001))
        w.sum().backward()
        opt.step()
    assert _steps(tr)[0]["lr"] == [torch.tensor(0.001).item()]


def test_an_optimizer_step_on_another_thread_is_not_recorded():
    with gradtrace.trace() as tr:
        w = torch.nn.Parameter(torch.ones(2))
        opt = torch.optim.SGD([w], lr=0.1)
        w.grad = torch.ones(2)
        t = threading.Thread(target=opt.step)
        t.start()
        t.join()
    assert _steps(tr) == []


def test_nothing_is_left_in_torchs_optimizer_hooks():
    before = len(optim_module._global_optimizer_post_hooks)
    with gradtrace.trace():
        torch.ones(2) + 1
    assert len(optim_module._global_optimizer_post_hooks) == before


class _CountingLr(torch.Tensor):
    calls = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        _CountingLr.calls += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def _adam_with_a_subclass_lr(traced):
    _CountingLr.calls = 0
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([w], lr=torch.tensor(0.001).as_subclass(_CountingLr), foreach=False)
    w.grad = torch.ones(2)
    if traced:
        with gradtrace.trace() as tr:
            opt.step()
        return _CountingLr.calls, _steps(tr)[0]["lr"]
    opt.step()
    return _CountingLr.calls, None


def test_reading_a_learning_rate_is_invisible_to_its_tensor_subclass():
    untraced, _ = _adam_with_a_subclass_lr(False)
    traced, lr = _adam_with_a_subclass_lr(True)
    assert traced == untraced and lr == [torch.tensor(0.001).item()]
