"""``--stop-at nonfinite``: stop the run at the end of the step where the first NaN or Inf
appeared in a value, a gradient or a parameter after its update.

The statistics the recorder takes anyway say it (their NaN and Inf counts): on the CPU
at once, on a device when the step ends (one read of the step's statistics rows). A
step ends after an optimizer step, at ``gradtrace.step()``, and, in a program that has
stepped no optimizer and marked no step, after each backward call. There the run is
stopped by :class:`StoppedAtNonfinite`, raised into the program: the trace ends with it
(status ``error``, graph attribute ``stopped_at``) and is written.

A program that scales its loss (``torch.amp.GradScaler``) expects NaN and Inf: a scale
too large overflows the scaled loss or its gradients, and the scaler skips that update
and lowers the scale. Once the program has called ``scaler.scale``, NaN and Inf in
values and gradients are the scaler's to handle; the run is stopped when a parameter
holds one after its update, or when the scaler has skipped :data:`SKIPS` steps in a row
(lowering the scale did not cure it: the NaN/Inf is the program's).
"""

from __future__ import annotations

from . import optimizer_hook, stats
from .records import OP_FILE, OP_LINE, OP_NAME

__all__ = ["SKIPS", "StoppedAtNonfinite", "Watch"]

SKIPS = 20  # updates in a row a loss scaler skipped: the NaN/Inf is not the scale's


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
        # (what, tensor node, op node) of the first NaN/Inf seen: a `what`, then where;
        # of any tensor, and of a parameter (a leaf that requires grad)
        self.first = self.first_param = None
        self.pending: list = []  # device statistics not read yet: (handle, what, node, op, parameter)
        self.optimizer_stepped = False
        self.marked = False
        self.scaled = False  # the program scales its loss (a GradScaler)
        self.skips = 0  # updates the scaler skipped in a row
        self.skips_first = None  # the first NaN/Inf of those steps
        self.garbage_op = None  # the last op whose results are uninitialised memory (see Tensors)
        self._hook = None

    def install(self) -> None:
        """Hear every optimizer step's end (torch's global hook), until :meth:`remove`."""
        self._hook = optimizer_hook.listen(self._optimizer_stepped)

    def remove(self) -> None:
        if self._hook is not None:
            self._hook()
            self._hook = None

    def saw(self, s, what: str, node, parameter: bool = False) -> None:
        """Note statistics ``s`` (what :func:`gradtrace.record.stats.compute` returned) of
        ``what`` (``value``, ``gradient``) at tensor node ``node`` (``parameter``: a
        value of a leaf that requires grad)."""
        if self.first_param is not None or s is None or (self.first is not None and not parameter):
            return
        if type(s) is tuple:
            if s[4] or s[5]:
                self._found((what, node, self.records.current_op), parameter)
        else:
            self.pending.append((s, what, node, self.records.current_op, parameter))

    def step_ended(self, by: str) -> None:
        """A step ended (``by``: ``optimizer``, ``mark``, ``backward``); raise
        :class:`StoppedAtNonfinite` when it held a NaN or an Inf (in a program that
        scales its loss: in a parameter)."""
        if by == "mark":
            self.marked = True
        elif by == "backward" and (self.optimizer_stepped or self.marked or self.scaled):
            return  # the step goes on to its update
        self._read_pending()
        found = self.first_param if self.scaled else self.first
        if found is not None:
            raise StoppedAtNonfinite(self._where(found))

    def loss_scaled(self) -> None:
        """The program scaled a loss (``GradScaler.scale``)."""
        self.scaled = True

    def scaler_updated(self, skipped) -> None:
        """The loss scaler ended a step (``GradScaler.update``; ``skipped``: whether it
        skipped the update, None when unknown): the NaN/Inf of the step are forgiven
        unless a parameter holds one or the scaler has skipped :data:`SKIPS` in a row."""
        self._read_pending()
        if self.first_param is not None:
            raise StoppedAtNonfinite(self._where(self.first_param))
        if skipped:
            self.skips_first = self.skips_first if self.skips else self.first
            self.skips += 1
        elif skipped is not None:
            self.skips, self.skips_first = 0, None
        if self.skips >= SKIPS:
            where = f" (the first: {self._where(self.skips_first)})" if self.skips_first else ""
            raise StoppedAtNonfinite(f"the loss scaler skipped {self.skips} updates in a row: lowering the "
                                     f"scale did not cure the NaN/Inf{where}")
        self.first = None

    def _found(self, found, parameter: bool) -> None:
        if self.first is None:
            self.first = found
        if parameter and self.first_param is None:
            self.first_param = found

    def _optimizer_stepped(self, optimizer, args, kwargs) -> None:
        self.optimizer_stepped = True
        if not self.marked:
            self.step_ended("optimizer")

    def _read_pending(self) -> None:
        pending, self.pending = self.pending, []
        for h, what, node, op, parameter in pending:
            if self.first_param is not None:
                return
            if self.first is not None and not parameter:
                continue
            s = stats.finalize(h)
            if s and (s["nan"] or s["inf"]):
                self._found((what, node, op), parameter)

    def _where(self, found) -> str:
        what, node, op = found
        try:
            r = self.records.op_at(int(op[3:])) if op else None
        except (ValueError, IndexError, TypeError):
            r = None
        at = f" made by {r[OP_NAME]} at {r[OP_FILE]}:{r[OP_LINE]}" if r else ""
        return f"a {what} with NaN/Inf{at}"
