"""``--stop-at nonfinite``: stop the run at the end of the step where the first NaN or Inf
appeared in a value, a gradient or a parameter after its update.

The statistics the recorder takes anyway say it (their NaN and Inf counts): on the CPU
at once, on a device when the step ends (one read of the step's statistics rows). A
step ends after an optimizer step, at ``gradtrace.step()``, and, in a program that has
stepped no optimizer and marked no step, after each backward call. There the run is
stopped by :class:`StoppedAtNonfinite`, raised into the program: the trace ends with it
(status ``error``, graph attribute ``stopped_at``) and is written.
"""

from __future__ import annotations

from . import optimizer_hook, stats
from .records import OP_FILE, OP_LINE, OP_NAME

__all__ = ["StoppedAtNonfinite", "Watch"]


class StoppedAtNonfinite(BaseException):
    """Raised into the traced program at the end of the step where the first NaN or Inf
    appeared (``gradtrace run --stop-at nonfinite``); ``where`` says what and where. A
    BaseException, so that ``except Exception`` in the program does not swallow it."""

    def __init__(self, where: str):
        super().__init__(f"stopped at the end of the step where the first NaN/Inf appeared: {where}")
        self.where = where


class Watch:
    """Looks at the statistics of every value and gradient the recorder records, and
    stops the run when a step ends with a NaN or an Inf among them."""

    def __init__(self, records):
        self.records = records
        self.first = None  # (what, tensor node, op node) of the first NaN/Inf seen: a `what`, then where
        self.pending: list = []  # device statistics not read yet: (handle, what, node, op)
        self.optimizer_stepped = False
        self.marked = False
        self._hook = None

    def install(self) -> None:
        """Hear every optimizer step's end (torch's global hook), until :meth:`remove`."""
        self._hook = optimizer_hook.listen(self._optimizer_stepped)

    def remove(self) -> None:
        if self._hook is not None:
            self._hook()
            self._hook = None

    def saw(self, s, what: str, node) -> None:
        """Note statistics ``s`` (what :func:`gradtrace.record.stats.compute` returned) of
        ``what`` (``value``, ``gradient``) at tensor node ``node``."""
        if self.first is not None or s is None:
            return
        if type(s) is tuple:
            if s[4] or s[5]:
                self.first = (what, node, self.records.current_op)
        else:
            self.pending.append((s, what, node, self.records.current_op))

    def step_ended(self, by: str) -> None:
        """A step ended (``by``: ``optimizer``, ``mark``, ``backward``); raise
        :class:`StoppedAtNonfinite` when it held a NaN or an Inf."""
        if by == "mark":
            self.marked = True
        elif by == "backward" and (self.optimizer_stepped or self.marked):
            return  # the step goes on to its update
        self._read_pending()
        if self.first is not None:
            raise StoppedAtNonfinite(self._where())

    def _optimizer_stepped(self, optimizer, args, kwargs) -> None:
        self.optimizer_stepped = True
        if not self.marked:
            self.step_ended("optimizer")

    def _read_pending(self) -> None:
        pending, self.pending = self.pending, []
        for h, what, node, op in pending:
            if self.first is not None:
                return
            s = stats.finalize(h)
            if s and (s["nan"] or s["inf"]):
                self.first = (what, node, op)

    def _where(self) -> str:
        what, node, op = self.first
        try:
            r = self.records.ops[int(op[3:])] if op else None
        except (ValueError, IndexError, TypeError):
            r = None
        at = f" made by {r[OP_NAME]} at {r[OP_FILE]}:{r[OP_LINE]}" if r else ""
        return f"a {what} with NaN/Inf{at}"
