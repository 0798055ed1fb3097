"""``--steps A:B``: record only steps A to B-1 of a run (steps from 1).

Outside the window nothing of the recorder is installed: no function mode on torch's
stack, no module hooks, no patches. What counts the steps meanwhile is torch's global
optimizer hook (one call per optimizer step) and ``gradtrace.step()``: a step ends after
an optimizer step, or, once the program has called ``gradtrace.step()``, at each call.
The recording starts when step A-1 ends (at once for A = 1) and stops when step B-1
ends, each time at the place the step ended.
"""

from __future__ import annotations

from . import optimizer_hook

__all__ = ["StepWindow", "parse_steps"]


def parse_steps(text) -> tuple[int, int]:
    """``(first, end)`` of a window written ``A:B`` (steps A to B-1, from 1), ``A:`` (from
    A on) or ``A`` (step A alone); ``end`` is 0 for no end. Raises ``ValueError`` (one
    line) for anything else."""
    s = str(text).strip()
    head, sep, tail = s.partition(":")
    try:
        first = int(head)
        end = (int(tail) if tail.strip() else 0) if sep else first + 1
    except ValueError:
        raise ValueError(f"--steps wants A:B (steps A to B-1, counted from 1), A: or A, not {text!r}") from None
    if first < 1 or (end and end <= first):
        raise ValueError(f"--steps {text}: steps count from 1, and B must be greater than A")
    return first, end


class StepWindow:
    """Counts a run's steps and calls ``opened()`` when step ``first`` begins and
    ``closed()`` when step ``end - 1`` ends (``end`` 0: never).

    A step's end is heard in two parts: it is counted first, and the window opens or
    closes last, after the recording has heard that end too (the ``--stop-at`` watch may
    stop the run there: the step is counted all the same)."""

    def __init__(self, first: int, end: int, opened, closed):
        self.first, self.end = first, end
        self.ended = 0  # steps that have ended
        self.marked = False  # the program calls gradtrace.step(): its marks alone end steps
        self.recording = False
        self._opened, self._closed = opened, closed
        self._hooks = ()

    def install(self) -> None:
        """Start counting; the window opens now when it starts at step 1."""
        self._hooks = (optimizer_hook.listen(self._optimizer_counted),
                       optimizer_hook.listen(self._optimizer_settled, last=True))
        if self.first == 1:
            self._open()

    def remove(self) -> None:
        for stop in self._hooks:
            stop()
        self._hooks = ()

    def mark(self) -> None:
        """``gradtrace.step()`` was called: count the step that ended (then :meth:`settle`)."""
        self.marked = True
        self.ended += 1

    def settle(self) -> None:
        """Open or close the window where the step just counted asks for it."""
        if self.recording and self.end and self.ended >= self.end - 1:
            self.recording = False
            self._closed()
        elif not self.recording and self.ended == self.first - 1:
            self._open()

    def _optimizer_counted(self, optimizer, args, kwargs) -> None:
        if not self.marked:
            self.ended += 1

    def _optimizer_settled(self, optimizer, args, kwargs) -> None:
        if not self.marked:
            self.settle()

    def _open(self) -> None:
        self.recording = True
        self._opened()
