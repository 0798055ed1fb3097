"""``--time``: how long each op took. The wall time of the call on the CPU, and, for an
op with an input on CUDA, the GPU time between two CUDA events recorded around it on the
current stream, read once when the graph is built (one synchronisation for the whole
trace, none per op).

The interval is the op's call alone: what the recorder does before and after it is
outside. A backward call's time includes the gradient hooks gradtrace runs in it, and
the ops a backward call runs in Python (a custom Function's backward) are timed both on
their own and as part of the call."""

from __future__ import annotations

from time import perf_counter_ns

import torch

from .hidden import no_function_modes

__all__ = ["OpTimes", "read_times"]


class OpTimes:
    """Appends ``(seq, wall ns, start event, end event)`` to ``records.times`` for every
    op timed (the events None for an op with no CUDA input); ``event`` makes a timing
    event (``torch.cuda.Event`` by default)."""

    def __init__(self, records, event=None):
        self.records = records
        self._event = event

    def start(self, pre):
        """Start timing an op about to run on ``pre`` (the op path's inputs): return
        ``(start ns, start event or None)``."""
        ev = None
        try:
            with no_function_modes():  # a subclass or a mode would see the read; one C guard, per op
                cuda = any(t.is_cuda for _, t, _, _ in pre)
            if cuda:
                ev = self._new()
                ev.record()
        except Exception:  # no GPU time then; the op runs all the same
            ev = None
        return perf_counter_ns(), ev

    def stop(self, seq: int, started) -> None:
        """The op of call order ``seq`` returned; ``started`` is what :meth:`start` gave."""
        ns = perf_counter_ns() - started[0]
        end = None
        if started[1] is not None:
            try:
                end = self._new()
                end.record()
            except Exception:
                end = None
        self.records.times.append((seq, ns, started[1] if end is not None else None, end))

    def _new(self):
        if self._event is not None:
            return self._event()
        return torch.cuda.Event(enable_timing=True)


def read_times(times) -> dict:
    """``{seq: (wall ns, GPU ns or None)}`` of the records of :class:`OpTimes`, waiting
    once for the GPU when any op was timed there."""
    if torch.cuda.is_available() and any(start is not None for _, _, start, _ in times):
        torch.cuda.synchronize()
    out = {}
    for seq, ns, start, end in times:
        gpu = None
        if start is not None:
            try:
                gpu = round(start.elapsed_time(end) * 1e6)
            except Exception:  # an event that never completed
                gpu = None
        out[seq] = (ns, gpu)
    return out
