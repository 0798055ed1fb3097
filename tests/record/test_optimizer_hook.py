"""gradtrace hears optimizer steps through one hook of its own in torch's global
optimizer hooks: listeners may join and leave while a step is being heard (a --steps
window opening a recording) without breaking the program's opt.step()."""

import torch
from torch.optim import optimizer as optim_module

from gradtrace.record import optimizer_hook


def _sgd():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    return torch.optim.SGD([p], lr=0.1)


def test_a_listener_joining_while_a_step_is_heard_hears_the_next_step():
    opt, heard, stops = _sgd(), [], []

    def joiner(o, a, k):
        if not stops[1:]:
            stops.append(optimizer_hook.listen(lambda o, a, k: heard.append(len(stops))))

    stops.append(optimizer_hook.listen(joiner))
    opt.step()
    opt.step()
    for stop in stops:
        stop()
    assert heard == [2]


def test_a_listener_leaving_while_a_step_is_heard_hears_no_more_of_it():
    opt, heard = _sgd(), []
    stop_b = None

    def a(o, a_, k):
        heard.append("a")
        stop_b()

    stop_a = optimizer_hook.listen(a)
    stop_b = optimizer_hook.listen(lambda o, a_, k: heard.append("b"))
    opt.step()
    stop_a()
    assert heard == ["a"]


def test_a_listener_asking_to_be_last_hears_after_those_who_joined_later():
    opt, heard = _sgd(), []
    stops = [optimizer_hook.listen(lambda o, a, k: heard.append("last"), last=True),
             optimizer_hook.listen(lambda o, a, k: heard.append("first"))]
    opt.step()
    for stop in stops:
        stop()
    assert heard == ["first", "last"]


def test_when_the_last_listener_leaves_nothing_is_left_in_torchs_hooks():
    before = len(optim_module._global_optimizer_post_hooks)
    stop = optimizer_hook.listen(lambda o, a, k: None)
    during = len(optim_module._global_optimizer_post_hooks)
    stop()
    assert (during, len(optim_module._global_optimizer_post_hooks)) == (before + 1, before)
