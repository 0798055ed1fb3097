"""What each update did to a parameter: the statistics of ``w' - w``, the change one run
of writes made to it, from which the step rows read the update-to-weight ratio
``|w' - w| / |w|``.

A parameter is a leaf tensor that requires grad; an update is an in-place op, after the
recording's first backward call, that writes one or its memory (``add_``,
``_foreach_addcdiv_``, ``_fused_adam_``, ``p -= lr * p.grad``, ``p.data.sub_``). Before
it the parameter's value is copied, out of the user's sight; the copy is held while the
parameter's writes go on and let go as soon as they end:

- when an update begins on another parameter without this one (an optimizer that
  updates one parameter at a time, torch's default on the CPU, holds one copy);
- when the optimizer step ends (a foreach or fused optimizer, which writes all its
  parameters in each op, holds a copy of those while its step runs);
- at the next op run with grad enabled, a backward call, ``gradtrace.step()``, or the
  end of the recording (a hand-written update).

A copy is taken only where the device has four times its size free (the memory
available on the CPU; on CUDA, free memory and what torch's allocator holds unused; read
at most every half second, not once a parameter):
an update it would not fit is counted as unknown (``update: not enough free memory``),
never a reason for the program to run out of memory.

Then ``w' - w`` is taken (in float32 for a 16-bit parameter), its statistics recorded
as those of any value, and the difference let go. The first write of a stretch compares
against the value before it, whatever wrote it (LBFGS, which writes its parameters
several times a step between forward passes, leaves an update per stretch). Nothing is
recorded under ``values="none"``.
"""

from __future__ import annotations

import threading
import time

import torch

from . import optimizer_hook, stats
from .hidden import hidden, is_plain

__all__ = ["Updates", "fits"]

_HALF = (torch.float16, torch.bfloat16)


_READ_EVERY = 0.5  # seconds one reading of free memory serves: about a step, not a parameter
_free_read: dict = {}  # device -> (monotonic time, free bytes or None)


def fits(nbytes: int, device) -> bool:
    """True when ``device`` has four times ``nbytes`` free (True where that cannot be read)."""
    now = time.monotonic()
    read = _free_read.get(device)
    if read is None or now - read[0] > _READ_EVERY:
        read = _free_read[device] = (now, _free(device))
    return read[1] is None or 4 * nbytes <= read[1]


def _free(device):
    """The bytes ``device`` has free (on CUDA, with what torch's allocator holds unused), or None."""
    try:
        if device.type == "cpu":
            with open("/proc/meminfo", encoding="ascii") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) \
                - torch.cuda.memory_allocated(device)
    except Exception:
        pass
    return None


class Updates:
    """Records ``(version after, version before, statistics of the difference)`` into
    ``records.updates`` for every update of a parameter (see the module text)."""

    def __init__(self, records, tensors, thread: int):
        self.records, self.tensors, self.thread = records, tensors, thread
        self.held: dict = {}  # id(parameter) -> (its info, the version before, the copy)
        self.armed = False  # a backward call has been recorded: writes from now on are updates
        self._stop = None

    def install(self) -> None:
        """Hear the ends of optimizer steps (before the listeners that may stop the run)."""
        self._stop = optimizer_hook.listen(self._optimizer_ended)

    def remove(self) -> None:
        """Stop hearing optimizer steps, and record the updates still open."""
        if self._stop is not None:
            self._stop()
            self._stop = None
        self.finish()

    def before(self, pre) -> None:
        """An in-place op is about to run on ``pre`` (the op path's
        ``(pos, tensor, info, version)`` inputs): copy each parameter it writes that no
        update holds yet, and end the updates of the parameters it does not write."""
        if not self.armed:
            if not self.records.backwards:
                return
            self.armed = True
        try:
            written, new = set(), []
            for pos, t, info, _ in pre:
                if not (pos == 0 or (type(pos) is str and pos.startswith("0."))):
                    continue
                param = self._parameter(t, info)
                if param is None:
                    continue
                key = id(param[0])
                written.add(key)
                if key not in self.held:
                    new.append(param)
            if not new:
                return
            for key in [k for k in self.held if k not in written]:
                self._end(key)
            new = [(p, info) for p, info in new if is_plain(p)]
            if not new:  # a subclass's own tensors: only its own code may compute on them
                return
            with hidden(), torch.no_grad():
                if not fits(sum(p.nbytes for p, _ in new), new[0][0].device):
                    self.records.note_unknown("update: not enough free memory to copy the parameters it writes")
                    return
                for p, info in new:
                    self.held[id(p)] = (info, info.node, p.detach().clone())
        except Exception as e:
            self.records.note_unknown("update", e)

    def _parameter(self, t, info):
        """``(tensor, info)`` of the parameter on ``t``'s memory (``t`` itself, or the
        parameter ``t`` is a ``.data`` or a view of), or None."""
        if info.rg and t.is_leaf:
            return t, info
        s = info.s
        if s is None:
            return None
        by_id = self.tensors.by_id
        for ref in s.tensors:
            u = ref()
            if u is None or u is t:
                continue
            ui = by_id.get(id(u))
            if ui is not None and ui.ref is ref and ui.rg and u.is_leaf:
                return u, ui
        return None

    def finish(self) -> None:
        """End every update held; raises nothing."""
        for key in list(self.held):
            self._end(key)

    def _end(self, key) -> None:
        info, before, copy = self.held.pop(key)
        p = info.ref()
        if p is None or info.node == before:  # gone, or not written after all
            return
        try:
            with hidden(), torch.no_grad():
                now = p.detach()
                if now.shape != copy.shape or now.dtype != copy.dtype or now.device != copy.device:
                    return  # re-pointed at other memory (``p.data = ...``): no difference to take
                diff = now.float().sub_(copy) if now.dtype in _HALF else torch.sub(now, copy)
                st = stats.compute(diff)
            self.records.updates.append((info.node, before, st))
        except Exception as e:
            self.records.note_unknown("update", e)

    def _optimizer_ended(self, optimizer, args, kwargs) -> None:
        if self.held and threading.get_ident() == self.thread:
            self.finish()
