"""`gradtrace.step()`: a program says where its steps end, for loops that no backward
call and update mark (inference, evaluation), or to override the steps found."""

import threading

import torch

import gradtrace
from gradtrace.analyze.step_rows import step_rows
from gradtrace.graph.steps import find_steps


def _inference(batches=5):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    with gradtrace.trace() as tr, torch.no_grad():
        for _ in range(batches):
            out = model(torch.randn(3, 4))
            out.argmax(1)
            gradtrace.step()
    return tr


def test_an_inference_loop_has_a_step_per_mark():
    assert find_steps(_inference(5).graph).count == 5


def test_each_step_of_an_inference_loop_has_a_row():
    rows = step_rows(_inference(4).graph)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["backward"] == [] for r in rows)


def test_the_mark_is_an_op_of_category_step_at_the_users_line():
    tr = _inference(1)
    marks = [d for _, d in tr.graph.nodes(data=True) if d.get("name") == "gradtrace.step"]
    assert [(m["category"], m["code"]) for m in marks] == [("step", "gradtrace.step()")]


def test_marks_take_over_from_the_backward_calls():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        for i in range(4):
            (w * i).sum().backward()
            if i % 2 == 1:
                gradtrace.step()
    assert find_steps(tr.graph).count == 2


def test_ops_after_the_last_mark_are_one_more_unfinished_step():
    with gradtrace.trace() as tr:
        x = torch.ones(2)
        x = x + 1
        gradtrace.step()
        x * 2
    s = find_steps(tr.graph)
    assert (s.count, s.complete) == (2, 1)


def test_step_outside_a_trace_does_nothing():
    assert gradtrace.step() is None


def test_a_mark_on_another_thread_is_not_recorded():
    with gradtrace.trace() as tr:
        torch.ones(2) + 1
        t = threading.Thread(target=gradtrace.step)
        t.start()
        t.join()
    assert not any(d.get("category") == "step" for _, d in tr.graph.nodes(data=True))
