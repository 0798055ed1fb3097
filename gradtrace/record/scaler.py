"""The loss scaler (``torch.amp.GradScaler``) while recording: each ``update`` is
recorded (``records.loss_scales``: the scale the step used, whether the scaler skipped
its update for a NaN or an Inf, the scale it set), and ``--stop-at nonfinite`` hears
that the program scales its loss and where the scaler ends a step
(:mod:`gradtrace.record.watch`). The scaler computes what it computes untraced: the
patches only listen. Reading the scale and the found-inf flags waits for the device
once per update, as the scaler's own ``step`` has just done."""

from __future__ import annotations

import functools

from .hidden import hidden

__all__ = ["install"]


def install(current) -> list:
    """Return ``(obj, name, replacement)`` patches that record the loss scaling of the
    program for the recorder ``current()`` names (the calling thread's); none without a
    GradScaler in this torch."""
    try:
        from torch.amp.grad_scaler import GradScaler
    except Exception:
        return []
    orig_scale, orig_update = GradScaler.scale, GradScaler.update

    @functools.wraps(orig_scale)
    def scale(self, *args, **kwargs):
        rec = current()
        if rec is not None and rec.watch is not None and _enabled(self):
            rec.watch.loss_scaled()
        return orig_scale(self, *args, **kwargs)

    @functools.wraps(orig_update)
    def update(self, *args, **kwargs):
        rec = current()
        if rec is None or rec.is_quiet() or not _enabled(self):  # a disabled scaler scales nothing
            return orig_update(self, *args, **kwargs)
        skipped, scale = _skipped(self), _scale(self)  # read before update clears them
        out = orig_update(self, *args, **kwargs)
        try:
            rec.records.loss_scales.append((rec.records.next_seq(), scale, skipped, _scale(self)))
        except Exception as e:
            rec.note_unknown("loss scale", e)
        if rec.watch is not None:
            rec.watch.scaler_updated(skipped)
        return out

    return [(GradScaler, "scale", scale), (GradScaler, "update", update)]


def _enabled(scaler) -> bool:
    try:
        return bool(scaler.is_enabled())
    except Exception:
        return False


def _scale(scaler):
    """The scale of ``scaler`` as a number, or None (not yet made, or unreadable)."""
    try:
        s = getattr(scaler, "_scale", None)
        if s is None:
            return None
        with hidden():
            return float(s.item())
    except Exception:
        return None


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
