"""A program that scales its loss: its step rows show the loss before scaling, the
gradient norms divided by the scale and the scale of each step, and a NaN/Inf the
scaler handled (it skipped that update and ran later ones) is an info finding, not an
error."""

import math

import torch
from helpers import overflowing_scaler_setup, scaled_loop

import gradtrace
from gradtrace.analyze.step_rows import step_rows


def _run(steps=6, nan_at=None, traced=True):
    """A loop with a loss scaler whose first three updates overflow and are skipped;
    ``nan_at``: the step from which the data holds a NaN. Returns the trace, or the
    untraced losses and gradient norms."""
    model, opt, scaler, x, y = overflowing_scaler_setup()
    seen = []

    def seen_after_backward(loss):
        scale = scaler.get_scale()
        seen.append((loss.item(), math.hypot(*(p.grad.double().norm().item() / scale for p in model.parameters()))))

    def loop():
        scaled_loop(model, opt, scaler, x, y, steps, nan_at, seen_after_backward)

    if not traced:
        loop()
        return seen
    with gradtrace.trace() as tr:
        loop()
    return tr


def test_a_step_ends_at_the_scalers_update():
    assert [r["scaler"]["skipped"] for r in step_rows(_run().graph)] == [True, True, True, False, False, False]


def test_the_rows_show_the_loss_before_scaling():
    assert [r["losses"][-1] for r in step_rows(_run().graph)] == [loss for loss, _ in _run(traced=False)]


def test_the_rows_show_the_gradient_norm_divided_by_the_scale():
    rows = step_rows(_run().graph)[3:]
    untraced = [norm for _, norm in _run(traced=False)][3:]
    assert all(math.isclose(r["grad_norm"], n, rel_tol=1e-5) for r, n in zip(rows, untraced))


def test_an_overflow_the_scaler_handled_is_an_info_finding():
    found = [f for f in gradtrace.check(_run()) if f.code == "GT110"]
    assert found and all(f.severity == "info" and "the loss scaler skipped the update after it" in f.message
                         for f in found)


def test_a_nan_the_scaler_never_got_past_stays_an_error_that_says_so():
    found = [f for f in gradtrace.check(_run(steps=12, nan_at=8)) if f.code == "GT110" and f.severity == "error"]
    assert found and "and every update after it (4 in all): lowering the scale did not cure it" in found[0].message


def test_the_summary_gives_each_calls_loss_before_scaling_and_its_unscaled_gradient_norm():
    from gradtrace.analyze.summary import summarize

    calls = summarize(_run().graph)["backward"][3:]
    untraced = _run(traced=False)[3:]
    assert [c["roots"][0]["value"] for c in calls] == [loss for loss, _ in untraced]
    assert all(math.isclose(c["grad_norm"], n, rel_tol=1e-5) for c, (_, n) in zip(calls, untraced))


def test_the_summary_counts_the_updates_the_scaler_skipped():
    from gradtrace.analyze.summary import summarize

    s = summarize(_run().graph)["scaler"]
    assert (s["updates"], s["skipped"], s["first_scale"], s["last_scale"]) == (6, 3, 2.0 ** 127, 2.0 ** 124)


def test_a_program_that_scales_no_loss_has_no_scaler_in_its_summary():
    from gradtrace.analyze.summary import summarize

    with gradtrace.trace() as tr:
        torch.nn.Linear(2, 1)(torch.ones(1, 2)).sum().backward()
    assert "scaler" not in summarize(tr.graph)
