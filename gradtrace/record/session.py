"""One recording from start to stop: the recorder on torch's mode stack, torch patched
and module hooks installed while it runs, and nothing of it left behind once it stops
(whatever the program did, a KeyboardInterrupt inside the recorder included)."""

from __future__ import annotations

import weakref

import torch

from . import distributed, modestack, patches
from .hidden import restore_thread_state, thread_state
from .mode import Recorder
from .source import scope_items

__all__ = ["Session", "start", "sweep_ended"]


class Session:
    """A running recording: ``recorder`` is its mode; :meth:`stop` ends it."""

    def __init__(self, recorder: Recorder, named_before: list, state):
        self.recorder = recorder
        self._named_before = named_before
        self._state = state

    def stop(self) -> list:
        """End the recording; return what failed while ending it (``Type: message``
        lines, for the trace). Nothing here raises: each step is kept apart, so the
        user's own exception is what the user gets."""
        rec = self.recorder
        rec.closed = True
        problems = []
        for step in (lambda: modestack.remove(rec), rec.modules.remove, lambda: patches.detach(rec),
                     lambda: rec.updates is not None and rec.updates.remove(),  # before the ring's last cut
                     lambda: rec.watch is not None and rec.watch.remove(), rec.optimizers.remove,
                     lambda: rec.ring is not None and rec.ring.remove(),
                     rec.callers.clear,  # callers hold the traced code's module globals
                     lambda: distributed.release(rec.process_groups),  # after the globals: DDP models let go first
                     rec.copies.wait):  # values copied from a GPU without waiting, once, now
            try:
                step()
            except Exception as e:
                problems.append(f"{type(e).__name__}: {e}")
        try:
            if restore_thread_state(self._state):
                problems.append("an interrupt inside the recorder had left torch functions disabled; "
                                "switched back on")
        except Exception as e:
            problems.append(f"{type(e).__name__}: {e}")
        try:
            rec.labels.named_before(self._named_before)
        except Exception as e:
            problems.append(f"{type(e).__name__}: {e}")
        self._named_before = ()
        try:
            rec.unwire()
        except Exception as e:
            problems.append(f"{type(e).__name__}: {e}")
        return problems


def start(values: str, values_max: int | None, frame, stop_at: str | None = None, level: int | None = None,
          last: int | None = None, dropped=None, updates: bool = True, time: bool = False) -> Session:
    """Start recording on this thread; ``frame`` is the code entering the trace (the
    tensors it has named already are named by those names); ``stop_at="nonfinite"``
    stops the program at the end of the step where the first NaN/Inf appeared
    (:mod:`gradtrace.record.watch`); ``level``: the place on torch's mode stack (a
    recording started mid-run goes where the trace was entered, under the modes the
    program entered since); ``last``: keep the records of the last N steps only, handing
    each older step's records to ``dropped`` (:mod:`gradtrace.record.ring`); ``updates``:
    record what each update did to a parameter (:mod:`gradtrace.record.updates`); ``time``:
    how long each op took (:mod:`gradtrace.record.timing`). Return the session."""
    sweep_ended()
    named_before = _tensors_named_in(frame)
    state = thread_state()
    rec = Recorder(values, values_max, stop_at, last, dropped, updates, time)
    patches.attach(rec)
    try:
        rec.optimizers.install()  # before the watch: a step that stops the run has its row
        if rec.updates is not None:  # before the watch, too: and its updates
            rec.updates.install()
        if rec.watch is not None:
            rec.watch.install()
        if rec.ring is not None:  # after the watch: a step that stops the run stays in the ring
            rec.ring.install()
        rec.modules.install()
        if level is None:
            rec.__enter__()
        else:
            modestack.push_at(rec, level)
            distributed.attach_built(rec)  # a window opening mid-run: DDP models built before it
    except BaseException:
        modestack.remove(rec)
        if rec.watch is not None:
            rec.watch.remove()
        if rec.ring is not None:
            rec.ring.remove()
        rec.optimizers.remove()
        if rec.updates is not None:
            rec.updates.remove()
        rec.modules.remove()
        patches.detach(rec)
        raise
    return Session(rec, named_before, state)


def _tensors_named_in(frame) -> list:
    """``[(weak reference, name)]`` of the tensors bound to names in ``frame`` (its
    locals, then its module's globals) as a trace starts: a tensor made before the
    trace has no assignment in it to be named by."""
    found, seen = [], set()
    try:
        for name, v in scope_items(frame):
            # issubclass of the type: isinstance would ask a proxy's __class__ (user code)
            if issubclass(type(v), torch.Tensor) and not name.startswith("_") and id(v) not in seen:
                seen.add(id(v))
                found.append((weakref.ref(v), name))
    except Exception:  # an odd frame or a tensor without weak references: no names
        return found
    return found


def sweep_ended() -> None:
    """Take off torch's mode stack the recorders torch put back after their trace ended
    (its ``_pop_mode_temporarily`` generator closed after a signal)."""
    modestack.sweep(_ended)


def _ended(mode) -> bool:
    return isinstance(mode, Recorder) and mode.closed
