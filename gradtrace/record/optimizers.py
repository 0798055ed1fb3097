"""The optimizer steps of a recording: which optimizer stepped, after which op, and the
learning rate of each of its param groups then (torch's global optimizer hook, heard
while recording). A learning rate is read as the program set it: a number, or a CPU
tensor's value; anything else is recorded as unknown (None)."""

from __future__ import annotations

import threading
import weakref

import torch

from . import optimizer_hook
from .hidden import hidden

__all__ = ["OptimizerSteps"]


def _lr(v):
    # type(v), not isinstance: a proxy's __class__ would be the program's code to run
    t = type(v)
    if issubclass(t, bool):
        return None
    if issubclass(t, (int, float)):
        return float(v)
    if issubclass(t, torch.Tensor):
        with hidden():  # what a tensor subclass or a mode would see of reading it
            if v.numel() == 1 and v.device.type == "cpu":
                return float(v.detach().item())
    return None


class OptimizerSteps:
    """Records ``(seq of the next op, optimizer number, its type, [lr per param group])``
    into ``records.optimizer_steps`` at the end of every optimizer step on the tracing
    thread (``thread``)."""

    def __init__(self, records, thread: int):
        self.records = records
        self.thread = thread
        self._numbers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimizer -> its number
        self._hook = None

    def install(self) -> None:
        self._hook = optimizer_hook.listen(self._stepped)

    def remove(self) -> None:
        if self._hook is not None:
            self._hook()
            self._hook = None
        self._numbers = weakref.WeakKeyDictionary()

    def _stepped(self, optimizer, args, kwargs) -> None:
        if threading.get_ident() != self.thread:
            return
        try:
            n = self._numbers.get(optimizer)
            if n is None:
                n = self._numbers[optimizer] = len(self._numbers)
            lrs = [_lr(g.get("lr")) for g in optimizer.param_groups]
            self.records.optimizer_steps.append((self.records.next_seq(), n, type(optimizer).__name__, lrs))
        except Exception as e:
            self.records.note_unknown("optimizer step", e)
