"""`--stop-at nonfinite`: the run stops at the end of the step where the first NaN or Inf
appeared, with one line and exit code 3, and the trace of the steps up to it is written."""

import subprocess
import sys

import pytest
import torch
from helpers import overflowing_scaler_setup, scaled_loop
from torch.optim import optimizer as optim_module

import gradtrace
from gradtrace.analyze.step_rows import step_rows
from gradtrace.record.watch import StoppedAtNonfinite

BLOW_UP = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(16, 4)
y = x.sum(1, keepdim=True)
for step in range(200):
    if step == 20:
        opt.param_groups[0]["lr"] = 1e8
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("finished")
"""


def _run(tmp_path, source, *options):
    script = tmp_path / "train.py"
    script.write_text(source)
    return subprocess.run([sys.executable, "-m", "gradtrace", "run", "--no-svg", "-o", str(tmp_path / "out"),
                           *options, str(script)], capture_output=True, text=True)


def _first_bad_step(source):
    """The 0-based loop step whose values first hold a NaN or an Inf, run untraced."""
    seen = []
    hook = optim_module.register_optimizer_step_post_hook(
        lambda opt, a, k: seen.append(all(torch.isfinite(p).all() for g in opt.param_groups for p in g["params"])))
    orig = torch.nn.functional.mse_loss
    losses = []
    torch.nn.functional.mse_loss = lambda *a, **k: losses.append(orig(*a, **k)) or losses[-1]
    try:
        exec(compile(source, "train.py", "exec"), {"__name__": "__main__"})
    finally:
        torch.nn.functional.mse_loss = orig
        hook.remove()
    bad_loss = next(i for i, v in enumerate(losses) if not torch.isfinite(v))
    bad_param = next(i for i, ok in enumerate(seen) if not ok)
    return min(bad_loss, bad_param)


def test_the_run_stops_with_one_line_and_exit_code_3(tmp_path):
    r = _run(tmp_path, BLOW_UP, "--stop-at", "nonfinite")
    assert r.returncode == 3 and "finished" not in r.stdout
    assert r.stderr.splitlines()[0].startswith("gradtrace: stopped at the end of the step where the first NaN/Inf")


def test_the_trace_ends_with_the_step_where_the_first_nan_or_inf_appeared(tmp_path):
    _run(tmp_path, BLOW_UP, "--stop-at", "nonfinite")
    tr = gradtrace.load(tmp_path / "out")
    calls = sum(1 for _, d in tr.graph.nodes(data=True) if d.get("kind") == "backward")
    assert calls == _first_bad_step(BLOW_UP) + 1
    assert tr.meta["status"] == "error" and tr.meta["stopped_at"]["reason"] == "nonfinite"


def test_with_last_2_the_trace_keeps_the_stopping_step_and_the_two_before(tmp_path):
    r = _run(tmp_path, BLOW_UP, "--stop-at", "nonfinite", "--last", "2")
    G = gradtrace.load(tmp_path / "out").graph
    bad = _first_bad_step(BLOW_UP) + 1
    assert r.returncode == 3 and sum(1 for _, d in G.nodes(data=True) if d.get("kind") == "backward") == 3
    assert [row["step"] for row in step_rows(G)] == list(range(1, bad + 1)) and G.graph["first_step"] == bad - 2


DETERMINISTIC = """
import torch
torch.use_deterministic_algorithms(True)  # torch.empty then fills its memory with NaN
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(8, 4)
for _ in range(3):
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
print("finished")
"""


def test_the_nan_deterministic_mode_fills_new_parameters_with_does_not_stop_the_run(tmp_path):
    r = _run(tmp_path, DETERMINISTIC, "--stop-at", "nonfinite")
    assert r.returncode == 0 and "finished" in r.stdout


def test_a_value_computed_from_uninitialised_memory_still_stops_the_run(tmp_path):
    garbage_in = DETERMINISTIC.replace("model(x).pow(2)", "(model(x) + torch.empty(8, 1)).pow(2)")
    r = _run(tmp_path, garbage_in, "--stop-at", "nonfinite")
    assert r.returncode == 3 and "finished" not in r.stdout


def test_a_run_without_nan_finishes_as_it_would(tmp_path):
    r = _run(tmp_path, BLOW_UP.replace("1e8", "0.01"), "--stop-at", "nonfinite")
    assert r.returncode == 0 and "finished" in r.stdout and "stopped_at" not in gradtrace.load(tmp_path / "out").meta


def test_stop_at_needs_statistics(tmp_path):
    r = _run(tmp_path, BLOW_UP, "--stop-at", "nonfinite", "--values", "none")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--values stats" in r.stderr


def test_the_library_raises_out_of_the_block_past_except_exception():
    with pytest.raises(StoppedAtNonfinite):
        with gradtrace.trace(stop_at="nonfinite"):
            w = torch.ones(2, requires_grad=True)
            for i in range(5):
                try:
                    (w * (float("inf") if i == 2 else 1.0)).sum().backward()
                except Exception:
                    pass


def test_without_an_optimizer_a_step_ends_with_its_backward_call():
    with pytest.raises(StoppedAtNonfinite):
        with gradtrace.trace(stop_at="nonfinite") as tr:
            w = torch.ones(2, requires_grad=True)
            for i in range(5):
                (w * (float("nan") if i == 2 else 1.0)).sum().backward()
    assert sum(1 for _, d in tr.graph.nodes(data=True) if d.get("kind") == "backward") == 3


def test_with_marks_the_run_stops_at_the_mark_ending_the_step():
    with pytest.raises(StoppedAtNonfinite):
        with gradtrace.trace(stop_at="nonfinite") as tr:
            x = torch.ones(2)
            for i in range(5):
                x = x / (0.0 if i == 1 else 1.0)
                x = x * 1
                gradtrace.step()
    assert sum(1 for _, d in tr.graph.nodes(data=True) if d.get("category") == "step") == 2


def test_nothing_of_the_watch_is_left_in_torchs_optimizer_hooks():
    before = len(optim_module._global_optimizer_post_hooks)
    with gradtrace.trace(stop_at="nonfinite"):
        torch.ones(2) + 1
    assert len(optim_module._global_optimizer_post_hooks) == before


def _scaled_run(steps=12, nan_at=None, stop_at=None):
    """A loop with a loss scaler whose first scale is too large: its first three updates
    overflow and are skipped while the scaler lowers the scale; ``nan_at``: the step from
    which the data holds a NaN. Returns ``(parameters, trace or None)``."""
    model, opt, scaler, x, y = overflowing_scaler_setup()

    def loop():
        scaled_loop(model, opt, scaler, x, y, steps, nan_at)

    if stop_at is None:
        loop()
        return [p.detach().clone() for p in model.parameters()], None
    with gradtrace.trace(stop_at=stop_at) as tr:
        loop()
    return [p.detach().clone() for p in model.parameters()], tr


def test_updates_a_loss_scaler_skips_for_overflow_do_not_stop_the_run():
    untraced, _ = _scaled_run()
    traced, tr = _scaled_run(stop_at="nonfinite")
    assert tr.meta["status"] == "ok" and all(torch.equal(a, b) for a, b in zip(untraced, traced))


def test_a_nan_the_loss_scaler_cannot_cure_stops_the_run_after_its_skips_in_a_row():
    from gradtrace.record.watch import SKIPS

    with pytest.raises(StoppedAtNonfinite, match=f"skipped {SKIPS} updates in a row") as e:
        _scaled_run(steps=60, nan_at=10, stop_at="nonfinite")
    assert "Tensor.__setitem__" in str(e.value)


def test_the_loss_scaler_is_torchs_own_again_after_the_trace():
    scaler_class = torch.amp.grad_scaler.GradScaler
    before = (scaler_class.scale, scaler_class.update)
    _scaled_run(steps=2, stop_at="nonfinite")
    assert (scaler_class.scale, scaler_class.update) == before
