"""What the recorder does not repeat: per-process caches and the work a values="none"
trace skips, each without changing what is recorded."""

import gc
import weakref

import torch
from torch.overrides import handle_torch_function

import gradtrace
from gradtrace.record import hidden as hidden_mod
from gradtrace.record import ops
from gradtrace.record import saved as saved_mod


def _step(model, x):
    model(x).sum().backward()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_a_second_trace_classifies_no_torch_function_again(monkeypatch):
    model, x = _model(), torch.randn(3, 4)
    with gradtrace.trace(values="none"):
        _step(model, x)
    calls = []
    real = ops.spec_of
    monkeypatch.setattr(ops, "spec_of", lambda func: calls.append(func) or real(func))
    with gradtrace.trace(values="none"):
        _step(model, x)
    assert calls == []


def test_a_callable_holding_a_tensor_is_not_kept_after_its_trace():
    class Op:  # the program's own callable, handed to __torch_function__
        def __init__(self, t):
            self.t = t

        def __call__(self, x):
            return x + 1

    x = torch.ones(2)
    with gradtrace.trace(values="none") as tr:
        op = Op(torch.zeros(2))
        ref = weakref.ref(op.t)
        handle_torch_function(op, (x,), x)
        del op
    del tr
    gc.collect()
    assert ref() is None


def test_an_unhashable_callable_runs_and_is_counted_as_unknown():
    class Op:
        __hash__ = None

        def __call__(self, x):
            return x + 1

    x = torch.ones(2)
    with gradtrace.trace(values="none") as tr:
        y = handle_torch_function(Op(), (x,), x)
    assert torch.equal(y, torch.full((2,), 2.0))
    assert "op name" in {u["what"] for u in tr.graph.graph["unknown"]}


def test_a_torch_node_class_keeps_only_the_saved_fields_that_can_hold_a_tensor():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(5, 4, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    with gradtrace.trace(values="none"):
        y = torch.nn.functional.linear(x, w, b)
    assert set(saved_mod.SAVED_NAMES[type(y.grad_fn)]) == {"_saved_mat1", "_saved_mat2"}


def test_the_backward_hooks_of_a_none_trace_enter_no_hidden_block(monkeypatch):
    model, x = _model(), torch.randn(3, 4)
    entered = []
    real = hidden_mod.hidden.__enter__
    monkeypatch.setattr(hidden_mod.hidden, "__enter__", lambda self: entered.append(1) or real(self))
    with gradtrace.trace(values="none"):
        loss = model(x).sum()
        before = len(entered)
        loss.backward()
    # the backward call's own set-up and wrap-up only: no hook reads a gradient's values
    assert len(entered) - before == 2


def test_a_none_trace_still_records_the_gradient_reaching_each_leaf_and_the_root():
    model, x = _model(), torch.randn(3, 4)
    with gradtrace.trace(values="none") as tr:
        loss = model(x).sum()
        loss.backward()
    G = tr.graph
    params = {n for n, d in G.nodes(data=True) if d["kind"] == "tensor" and d.get("param_of")}
    reached = {v for _, v, k in G.edges(data="kind") if k == "grad"}
    assert len(params) == 4 and params <= reached
    ((_, _, weights),) = [(u, v, d) for u, v, d in G.edges(data=True) if d.get("kind") == "weights"]
    assert weights["received"]["shape"] == []
