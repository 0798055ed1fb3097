"""The loss scaler as ``--stop-at nonfinite`` hears it: ``torch.amp.GradScaler.scale``
says the program scales its loss, and ``GradScaler.update`` ends a step, saying whether
the scaler skipped its update for a NaN or an Inf (:mod:`gradtrace.record.watch`). The
scaler computes what it computes untraced: the patches only listen."""

from __future__ import annotations

import functools

from .hidden import hidden

__all__ = ["install"]


def install(current) -> list:
    """Return ``(obj, name, replacement)`` patches that tell the watch of the recorder
    ``current()`` names (the calling thread's) about loss scaling; none without a
    GradScaler in this torch."""
    try:
        from torch.amp.grad_scaler import GradScaler
    except Exception:
        return []
    orig_scale, orig_update = GradScaler.scale, GradScaler.update

    @functools.wraps(orig_scale)
    def scale(self, *args, **kwargs):
        rec = current()
        if rec is not None and rec.watch is not None:
            rec.watch.loss_scaled()
        return orig_scale(self, *args, **kwargs)

    @functools.wraps(orig_update)
    def update(self, *args, **kwargs):
        rec = current()
        if rec is None or rec.watch is None:
            return orig_update(self, *args, **kwargs)
        skipped = _skipped(self)  # read before update clears it
        out = orig_update(self, *args, **kwargs)
        rec.watch.scaler_updated(skipped)
        return out

    return [(GradScaler, "scale", scale), (GradScaler, "update", update)]


def _skipped(scaler):
    """Whether ``scaler`` found a NaN/Inf in the gradients of the step ending now (and
    so skipped its update); None when it checked none or cannot be read."""
    try:
        with hidden():
            found = [v for state in scaler._per_optimizer_states.values()
                     for v in state["found_inf_per_device"].values()]
            return any(v.item() for v in found) if found else None
    except Exception:
        return None
