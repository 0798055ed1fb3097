"""What each update did to a parameter (tensor attribute ``update``): the statistics of
``w' - w``, so that the step rows give the update-to-weight ratio ``|w' - w| / |w|`` of
every optimizer (per-parameter, foreach, fused) and of hand-written updates, matching
what the program itself would measure, at the cost of one parameter's copy at a time
for a per-parameter optimizer."""

import pytest
import torch
from click.testing import CliRunner
from helpers import overflowing_scaler_setup, same_bits, scaled_loop

import gradtrace
from gradtrace.analyze.step_rows import step_rows
from gradtrace.cli import main
from gradtrace.graph.names import name_of
from gradtrace.record.updates import Updates

_OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, foreach=False),
    "adamw_foreach": lambda ps: torch.optim.AdamW(ps, lr=0.01, foreach=True),
    "adam_fused": lambda ps: torch.optim.Adam(ps, lr=0.01, fused=True),
}


def _train(optimizer, steps=3, traced=True, values="stats", **trace_kwargs):
    """A seeded MLP trained ``steps`` steps; returns (trace or None, model, the program's
    own ``|w' - w| / |w|`` per step and parameter name, measured untraced)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = _OPTIMIZERS[optimizer](model.parameters())
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    ratios = []

    def loop():
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    if not traced:
        for _ in range(steps):
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ratios.append({n: ((p.detach() - before[n]).norm() / before[n].norm()).item()
                           for n, p in model.named_parameters()})
        return None, model, ratios
    with gradtrace.trace(values, **trace_kwargs) as tr:
        loop()
    return tr, model, ratios


def _recorded_ratios(G):
    """``[{parameter name: |w' - w| / |w|}]`` per update round, in call order."""
    N = G._node
    rounds: dict = {}
    for n, d in N.items():
        upd = d.get("update")
        if upd:
            name = name_of(d).split(".", 1)[1]  # "Sequential.0.weight" -> "0.weight"
            seen = rounds.setdefault(name, [])
            seen.append((d["version"], upd["stats"]["norm"] / N[upd["from"]]["stats"]["norm"]))
    names = sorted(rounds)
    count = len(rounds[names[0]])
    return [{n: sorted(rounds[n])[i][1] for n in names} for i in range(count)]


@pytest.mark.parametrize("optimizer", sorted(_OPTIMIZERS))
def test_each_update_ratio_is_what_the_program_measures(optimizer):
    tr, _, _ = _train(optimizer)
    _, _, truth = _train(optimizer, traced=False)
    got = _recorded_ratios(tr.graph)
    assert len(got) == len(truth) == 3
    for g, t in zip(got, truth):
        assert g.keys() == t.keys()
        for name in t:
            assert g[name] == pytest.approx(t[name], rel=1e-5), name


@pytest.mark.parametrize("optimizer", sorted(_OPTIMIZERS))
def test_the_step_row_names_the_largest_update_ratio(optimizer):
    tr, _, _ = _train(optimizer)
    _, _, truth = _train(optimizer, traced=False)
    rows = step_rows(tr.graph)
    for row, t in zip(rows, truth):
        name, ratio = max(t.items(), key=lambda kv: kv[1])
        assert row["max_update"]["tensor"] == f"Sequential.{name}"
        assert row["max_update"]["ratio"] == pytest.approx(ratio, rel=1e-5)


@pytest.mark.parametrize("optimizer", sorted(_OPTIMIZERS))
def test_tracing_updates_leaves_the_training_bit_identical(optimizer):
    _, traced, _ = _train(optimizer)
    _, untraced, _ = _train(optimizer, traced=False)
    for a, b in zip(traced.parameters(), untraced.parameters()):
        assert same_bits(a, b)


def test_a_fused_optimizer_writes_new_versions_autograd_cannot_see():
    tr, model, _ = _train("adam_fused", steps=1)
    G = tr.graph
    fused = next(n for n, d in G.nodes(data=True) if d.get("kind") == "op" and d["name"].endswith("_fused_adam_"))
    writes = [(u, v, d) for u, v, d in G.edges(data=True) if d.get("kind") == "next_version" and d.get("op") == fused]
    written = {name_of(G.nodes[v]) for _, v, _ in writes}
    assert {f"Sequential.{n}" for n, _ in model.named_parameters()} <= written
    assert all(d["visible"] is False for _, _, d in writes)


def test_fused_gradients_are_not_written_without_a_grad_scale():
    tr, _, _ = _train("adam_fused", steps=1)
    G = tr.graph
    fused = next(n for n, d in G.nodes(data=True) if d.get("kind") == "op" and d["name"].endswith("_fused_adam_"))
    grads = {u for u, v, d in G.edges(data=True)
             if v == fused and d.get("kind") == "input" and str(d.get("pos")).startswith("1.")}
    assert len(grads) == 4  # the op read the four gradients
    assert not any(d.get("kind") == "next_version" for g in grads for _, _, d in G.out_edges(g, data=True))


def _hand_written(style, steps=3):
    torch.manual_seed(0)
    w = torch.randn(4, 1, requires_grad=True)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    truth = []
    with gradtrace.trace() as tr:
        for _ in range(steps):
            loss = ((x @ w - y) ** 2).mean()
            loss.backward()
            before = w.detach().clone()
            if style == "no_grad":
                with torch.no_grad():
                    w -= 0.1 * w.grad
            else:
                w.data.sub_(0.1 * w.grad.data)
            truth.append(((w.detach() - before).norm() / before.norm()).item())
            w.grad = None
            gradtrace.step()
    return tr, truth


@pytest.mark.parametrize("style", ["no_grad", "data"])
def test_a_hand_written_update_has_its_ratio(style):
    tr, truth = _hand_written(style)
    rows = step_rows(tr.graph)
    assert [r["max_update"]["tensor"] for r in rows] == ["w"] * 3
    assert [r["max_update"]["ratio"] for r in rows] == pytest.approx(truth, rel=1e-6)


def test_no_update_is_recorded_without_statistics():
    tr, _, _ = _train("sgd", values="none")
    assert not any("update" in d for _, d in tr.graph.nodes(data=True))
    assert all(r["max_update"] is None for r in step_rows(tr.graph))


def test_no_update_is_recorded_when_asked_not_to():
    tr, _, _ = _train("adamw_foreach", updates=False)
    assert not any("update" in d for _, d in tr.graph.nodes(data=True))
    assert all(r["max_update"] is None and r["max_change"] for r in step_rows(tr.graph))


def test_gradtrace_run_without_update_ratios_records_none(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import torch\n"
                      "m = torch.nn.Linear(3, 1)\n"
                      "opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
                      "for _ in range(2):\n"
                      "    m(torch.ones(2, 3)).sum().backward()\n"
                      "    opt.step()\n")
    kept = {}
    for flag in ((), ("--no-update-ratios",)):
        out = tmp_path / ("off" if flag else "on")
        r = CliRunner().invoke(main, ["run", "--no-svg", "-o", str(out), *flag, str(script)])
        assert r.exit_code == 0, r.output
        kept[flag] = sum(1 for _, d in gradtrace.load(out).graph.nodes(data=True) if "update" in d)
    assert kept == {(): 4, ("--no-update-ratios",): 0}


def test_initialisation_and_loading_are_no_updates():
    torch.manual_seed(0)
    with gradtrace.trace() as tr:
        model = torch.nn.Linear(4, 2)
        model.load_state_dict(torch.nn.Linear(4, 2).state_dict())
        torch.nn.init.zeros_(model.bias)
    assert not any("update" in d for _, d in tr.graph.nodes(data=True))


def test_a_per_parameter_optimizer_holds_one_copy_at_a_time(monkeypatch):
    held = []
    before = Updates.before

    def spy(self, pre):
        before(self, pre)
        held.append(len(self.held))

    monkeypatch.setattr(Updates, "before", spy)
    _train("adamw")
    assert held and max(held) == 1


def test_lbfgs_leaves_an_update_per_stretch_of_writes():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=3)
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    with gradtrace.trace() as tr:
        opt.step(closure)
    G = tr.graph
    # each iteration writes each parameter once, then evaluates the closure (a forward pass)
    written = {v for _, v, d in G.edges(data=True) if d.get("kind") == "next_version"
               and G.nodes[v].get("is_leaf") and G.nodes[v].get("requires_grad")}
    updated = {n for n, d in G.nodes(data=True) if "update" in d}
    assert len(written) >= 4 and updated == written
    for n in updated:
        assert G.nodes[G.nodes[n]["update"]["from"]]["tid"] == G.nodes[n]["tid"]


def test_a_fused_step_a_loss_scaler_skips_writes_nothing():
    model, _, scaler, x, y = overflowing_scaler_setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    with gradtrace.trace() as tr:
        scaled_loop(model, opt, scaler, x, y, steps=5)
    G = tr.graph
    fused = sorted((d["seq"], n) for n, d in G.nodes(data=True)
                   if d.get("kind") == "op" and d["name"].endswith("_fused_adam_"))
    wrote = [any(d.get("kind") == "next_version" and d.get("op") == n for _, _, d in G.edges(data=True))
             for _, n in fused]
    assert wrote == [False, False, False, True, True]  # the scaler skipped its first three steps


def test_an_update_that_would_not_fit_in_free_memory_is_unknown(monkeypatch):
    monkeypatch.setattr("gradtrace.record.updates.fits", lambda nbytes, device: False)
    tr, trained, _ = _train("adamw_foreach")
    G = tr.graph
    assert not any("update" in d for _, d in G.nodes(data=True))
    assert any(u["what"].startswith("update: not enough free memory") for u in G.graph["unknown"])
    _, untraced, _ = _train("adamw_foreach", traced=False)
    assert all(same_bits(a, b) for a, b in zip(trained.parameters(), untraced.parameters()))


def test_free_memory_is_read_on_the_cpu():
    from gradtrace.record.updates import fits

    assert fits(1, torch.device("cpu")) and not fits(1 << 60, torch.device("cpu"))
