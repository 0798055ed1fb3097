"""The flight recorder (``--last N``): the records of a run's last N steps, in a ring.

At the end of each step (an optimizer step, or ``gradtrace.step()`` once the program
calls it) the records so far are marked; once N + ``BATCH`` steps are marked, the
oldest ``BATCH`` fall off together (one graph to build for their rows, not one per
step), and when the recording stops, every step before the last N: their records, and
those of the step after them (a step's last ops, a ``loss.item()`` or an evaluation under
``no_grad``, may run after the optimizer step that ended it here), are handed as a
``Records`` of their own to ``dropped`` (the trace turns them into the steps' rows), and
the dropped steps' records are let go. What the steps still kept name of
the dropped step's records (a parameter's version the next step reads, its storage, an
autograd node) is carried on, as is the current version of every live tensor: a
later op can only read those. The recording then holds N steps and what they read,
however long the run.

Op records keep their call order (``records.ops_from`` is that of the first kept).
"""

from __future__ import annotations

from itertools import islice

from . import optimizer_hook
from .records import OP_BACKWARD, Records

__all__ = ["BATCH", "Ring"]

BATCH = 8  # steps dropped at once: the ring holds at most N + BATCH steps

_LISTS = ("tensors", "edges", "grad_reads", "optimizer_steps", "loss_scales", "updates", "times")
_DICTS = ("storages", "numpy", "fns", "backwards", "collectives")


class Ring:
    """Keeps the records of the last ``last`` steps of ``records`` (see the module
    text); ``dropped(records, end)`` is called with the records of the steps that fall
    off and of the step after them, and where the last of those that fall off ends (the
    call order of its last op, plus one). ``tensors``, ``labels``, ``autograd`` and ``copies`` are the recorder's registries,
    pruned with it."""

    def __init__(self, records: Records, tensors, labels, autograd, copies, last: int, dropped):
        self.records, self.last = records, last
        self._tensors, self._labels, self._autograd, self._copies = tensors, labels, autograd, copies
        self._dropped = dropped
        self.marked = False  # the program calls gradtrace.step(): its marks alone end steps
        self._marks: list = []  # the lengths of the records at each kept step's end
        self._stop = None

    def install(self) -> None:
        """Hear the ends of optimizer steps (after every other listener)."""
        self._stop = optimizer_hook.listen(self._optimizer_ended, last=True)

    def remove(self) -> None:
        """Stop hearing steps, and drop every step before the last ``last``."""
        if self._stop is not None:
            self._stop()
            self._stop = None
        if len(self._marks) > self.last:
            self._drop(len(self._marks) - self.last)

    def step_marked(self) -> None:
        """``gradtrace.step()`` was called: a step ended."""
        self.marked = True
        self.step_ended()

    def step_ended(self) -> None:
        """A step ended: mark it, and let the oldest steps fall off once ``BATCH`` are past ``last``."""
        self._marks.append(self._lengths())
        if len(self._marks) >= self.last + BATCH:
            self._drop(len(self._marks) - self.last)

    def _optimizer_ended(self, optimizer, args, kwargs) -> None:
        if not self.marked:
            self.step_ended()

    def _lengths(self) -> tuple:
        r = self.records
        return (r.next_seq(), *(len(getattr(r, k)) for k in _LISTS), *(len(getattr(r, k)) for k in _DICTS))

    def _drop(self, count: int) -> None:
        """Let the ``count`` oldest steps fall off."""
        r = self.records
        mark, self._marks = self._marks[count - 1], self._marks[count:]
        ops_end, ends = mark[0], dict(zip(_LISTS + _DICTS, mark[1:]))
        after = self._marks[0] if self._marks else self._lengths()
        segment = self._segment(after[0], dict(zip(_LISTS + _DICTS, after[1:])))
        # What a later op or edge may still name: the live tensors' current versions
        # and whatever the records after the dropped step refer to.
        named = self._tensors.live_ids()
        for e in islice(r.edges, ends["edges"], None):
            named.add(e[0])
            named.add(e[1])
        for u in islice(r.updates, ends["updates"], None):
            named.add(u[0])
            named.add(u[1])
        carried = [t for t in r.tensors[:ends["tensors"]] if t[0] in named]
        r.drop_ops(ops_end)
        r.tensors[:ends["tensors"]] = carried
        for k in _LISTS[1:]:
            del getattr(r, k)[:ends[k]]
        for t in r.tensors:
            named.add(t[7])  # storage
            named.add(t[11])  # autograd node
        for op in r.ops:
            if op is not None and op[OP_BACKWARD]:
                named.add(op[OP_BACKWARD])
        removed = {}
        for k in _DICTS:
            d = getattr(r, k)
            old = [key for key in islice(d, ends[k]) if key not in named]
            for key in old:
                del d[key]
            removed[k] = len(old)
        shift = {"tensors": ends["tensors"] - len(carried), **{k: ends[k] for k in _LISTS[1:]}, **removed}
        self._marks = [(m[0], *(v - shift[k] for k, v in zip(_LISTS + _DICTS, m[1:]))) for m in self._marks]
        self._prune_registries(r)
        self._dropped(segment, ops_end)

    def _segment(self, ops_end: int, ends: dict) -> Records:
        """A copy of the records up to ``ends`` (with what they carried from before)."""
        r = self.records
        seg = Records()
        seg.ops = [op for op in r.ops[:ops_end - r.ops_from] if op is not None]
        for k in _LISTS:
            setattr(seg, k, getattr(r, k)[:ends[k]])
        for k in _DICTS:
            setattr(seg, k, dict(islice(getattr(r, k).items(), ends[k])))
        used = {t[7] for t in seg.tensors}
        seg.storages.update((sid, r.storages[sid]) for sid in used if sid in r.storages)
        return seg

    def _prune_registries(self, r: Records) -> None:
        """Names, autograd nodes and kept values no longer in the records."""
        tids = {t[1] for t in r.tensors}
        self._labels.keep_only(tids)
        self._autograd.keep_only(set(r.fns))
        if self._copies is not None and self._copies.values:
            keys = {t[0] for t in r.tensors}
            keys.update(e[2]["value"] for e in r.edges if len(e) == 3 and type(e[2]) is dict and "value" in e[2])
            self._copies.keep_only(keys)
