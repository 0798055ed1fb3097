"""`--last N` / `gradtrace.trace(last=N)`, the flight recorder: the records of the last N
steps are kept in full, each older step leaves its row, the recording does not grow with
the run, and the program computes what it computes untraced."""

import json

import pytest
import torch
from helpers import cnn_run

import gradtrace
from gradtrace.analyze.step_rows import step_rows


def _train(steps, last=False, blow_up_at=None, mark=False, values="stats", sizes=None, evaluate=False):
    """A seeded MLP loop of ``steps`` steps, traced with ``last`` (None: the whole run,
    False: not traced);
    ``blow_up_at``: the step from which the learning rate is 1e8; ``mark``: a hand-written
    update and ``gradtrace.step()`` in place of an optimizer; ``sizes`` gets, after each
    step, how many tensor records and autograd-node outputs the recorder holds;
    ``evaluate``: after each update, a loss read out and an evaluation under no_grad."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 4), torch.randn(16, 1)

    def loop(tr=None):
        for step in range(steps):
            if step == blow_up_at:
                opt.param_groups[0]["lr"] = 1e8
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            if mark:
                with torch.no_grad():
                    for p in model.parameters():
                        p -= 0.05 * p.grad
                gradtrace.step()
            else:
                opt.step()
            if evaluate:
                loss.item()
                with torch.no_grad():
                    model(x).abs().mean().item()
            if sizes is not None:
                sizes.append((len(tr.recorder.records.tensors), len(tr.recorder.autograd.output_of)))

    if last is False:
        loop()
        return None, model
    with gradtrace.trace(values, last=last) as tr:
        loop(tr)
    return tr, model


def _backward_calls(G):
    return sum(1 for _, d in G.nodes(data=True) if d.get("kind") == "backward")


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_the_graph_holds_the_last_n_steps_only():
    tr, _ = _train(20, last=2)
    assert _backward_calls(tr.graph) == 2


def test_every_step_of_the_run_has_its_row():
    tr, _ = _train(20, last=2)
    assert [r["step"] for r in step_rows(tr.graph)] == list(range(1, 21))


def test_the_rows_of_dropped_steps_are_those_a_full_trace_gives():
    full = step_rows(_train(20, last=None)[0].graph)
    ring = step_rows(_train(20, last=2)[0].graph)
    assert _same(full, ring)


def test_the_rows_of_dropped_steps_hold_what_ran_after_their_update_as_a_full_trace_does():
    full = step_rows(_train(30, last=None, evaluate=True)[0].graph)
    ring = step_rows(_train(30, last=2, evaluate=True)[0].graph)
    assert _same(full, ring)


def test_the_kept_steps_are_numbered_as_the_run_counted_them():
    tr, _ = _train(20, last=2)
    assert tr.meta["first_step"] == 19


def test_the_tensor_records_do_not_grow_with_the_run():
    sizes = []
    _train(200, last=2, sizes=sizes)
    assert max(s[0] for s in sizes[180:]) == max(s[0] for s in sizes[20:40])  # at most N + BATCH steps


def test_the_autograd_nodes_known_do_not_grow_with_the_run():
    sizes = []
    _train(200, last=2, sizes=sizes)
    assert max(s[1] for s in sizes[180:]) == max(s[1] for s in sizes[20:40])


def test_a_ring_run_computes_what_the_untraced_run_computes():
    _, untraced = _train(30)
    _, traced = _train(30, last=2)
    assert all(torch.equal(a, b) for a, b in zip(untraced.parameters(), traced.parameters()))


def test_a_loop_without_an_optimizer_ends_its_steps_at_its_marks():
    tr, _ = _train(12, last=3, mark=True)
    assert _backward_calls(tr.graph) == 3 and [r["step"] for r in step_rows(tr.graph)] == list(range(1, 13))


def test_the_rows_show_the_learning_rate_blow_up_of_a_dropped_step():
    tr, _ = _train(30, last=2, blow_up_at=20)
    rows = step_rows(tr.graph)
    assert rows[20]["lr"] == [1e8] and rows[19]["lr"] == [0.05] and tr.meta["first_step"] == 29


def test_values_all_keeps_the_values_of_the_kept_steps_only():
    tr, _ = _train(40, last=2, values="all")
    short, _ = _train(4, last=2, values="all")
    assert len(tr.values) == len(short.values) > 0


def test_a_run_with_no_step_boundary_is_one_step_kept_whole():
    with gradtrace.trace(last=1) as tr:
        x = torch.ones(3, requires_grad=True)
        (x * 2).sum().backward()
        (x * 3).sum().backward()
    assert _backward_calls(tr.graph) == 2 and "earlier_steps" not in tr.meta


def test_the_dropped_rows_survive_saving_and_loading(tmp_path):
    tr, _ = _train(10, last=2)
    tr.save(tmp_path / "t", dot=False)
    assert _same(step_rows(gradtrace.load(tmp_path / "t").graph), step_rows(tr.graph))


@pytest.mark.parametrize("last", [0, -1, 1.5])
def test_last_must_be_a_whole_number_of_steps(last):
    with pytest.raises(ValueError, match="last must be"):
        gradtrace.trace(last=last)


def test_the_last_two_steps_of_a_300_step_cnn_run_are_kept_and_change_nothing():
    _, untraced = cnn_run(300)
    tr, traced = cnn_run(300, last=2)
    assert _backward_calls(tr.graph) == 2 and len(step_rows(tr.graph)) == 300
    assert untraced.keys() == traced.keys() and all(torch.equal(untraced[k], traced[k]) for k in untraced)


def test_a_window_and_a_ring_together_keep_the_windows_rows_and_its_last_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(16, 4)
    with gradtrace.trace(steps="5:", last=2) as tr:
        for _ in range(12):
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert [r["step"] for r in step_rows(tr.graph)] == list(range(5, 13)) and _backward_calls(tr.graph) == 2


def _gan(steps, last=None):
    """A seeded GAN loop: the discriminator's two backward calls and its update, then the
    generator's backward call and update, each iteration (the steps the graph finds and
    the optimizer steps the ring hears do not line up)."""
    torch.manual_seed(0)
    gen, disc = torch.nn.Linear(2, 4), torch.nn.Linear(4, 1)
    opt_g, opt_d = torch.optim.SGD(gen.parameters(), lr=0.01), torch.optim.SGD(disc.parameters(), lr=0.01)
    real = torch.randn(8, 4)
    with gradtrace.trace(last=last) as tr:
        for _ in range(steps):
            disc.zero_grad()
            out = disc(real)
            out.mean().backward()
            out.mean().item()
            fake = gen(torch.randn(8, 2))
            out = disc(fake.detach())
            (-out.mean()).backward()
            out.mean().item()
            opt_d.step()
            gen.zero_grad()
            out = disc(fake)
            out.mean().backward()
            out.mean().item()
            opt_g.step()
    return tr


def test_the_rows_of_a_ring_run_with_two_optimizers_are_those_a_full_trace_gives():
    assert _same(step_rows(_gan(12, last=2).graph), step_rows(_gan(12).graph))
