"""What the recorder writes: record layouts, and the lists and tables that hold them.

Records are plain tuples of plain values (numbers, strings, ``None``, tuples of those):
the cyclic garbage collector stops tracking such a tuple after its first pass, where a
namedtuple or an object would be walked again by every collection of a long run.
Position constants name the fields; each kind has one constructor.

- an op: ``op_record(...)``, positions ``OP_*``;
- a tensor version: ``tensor_record(...)``, positions ``T_*``;
- an edge: ``(u, v, kind, pos)``, or ``(u, v, attrs)`` with ``attrs`` a flat tuple
  ``(key, value, key, value, ...)``, a tuple of pairs, or a dict where a value is
  filled in later.
"""

from __future__ import annotations

__all__ = [
    "OP_BACKWARD", "OP_CATEGORY", "OP_DIRECT", "OP_EXTRA", "OP_FILE", "OP_GRAD", "OP_LINE", "OP_MODULE",
    "OP_NAME", "OP_SCALARS", "OP_SEQ", "Records", "T_NODE", "T_TID", "op_record", "tensor_record", "with_autocast",
    "with_extra",
]

(OP_SEQ, OP_NAME, OP_CATEGORY, OP_FILE, OP_LINE, OP_MODULE, OP_GRAD, OP_SCALARS, OP_BACKWARD, OP_EXTRA,
 OP_DIRECT) = range(11)
T_NODE, T_TID = 0, 1


def op_record(seq, name, category, file, line, module, grad, scalars, bw, extra, direct) -> tuple:
    """The record of one op: call order, qualified name, category, the user's file and
    line, the innermost module's path, grad mode, the non-tensor arguments as a flat
    ``(position, value, ...)`` tuple, the backward call it ran in, extra attributes
    (a dict or None) and whether the user called it directly."""
    return (seq, name, category, file, line, module, grad, scalars, bw, extra, direct)


def tensor_record(node, tid, ver, shape, dtype, device, stride, sid, offset, rg, leaf, fid, stats) -> tuple:
    """The record of one tensor version: node id, tensor id, version, shape, dtype,
    device, stride, storage id, storage offset, requires_grad, is_leaf, grad_fn id and
    statistics (None where not taken)."""
    return (node, tid, ver, shape, dtype, device, stride, sid, offset, rg, leaf, fid, stats)


def with_extra(extra, more):
    """An op record's extra attributes with ``more`` (a dict or None) added."""
    if more is None:
        return extra
    return {**extra, **more} if extra else more


def with_autocast(extra, ac):
    """An op record's extra attributes with ``autocast`` (the regions enabled when the
    op ran, a shared dict) added where one is."""
    if ac is None:
        return extra
    return {**extra, "autocast": ac} if extra else {"autocast": ac}


class Records:
    """Everything one recording writes, appended to while the program runs and read
    once, when the graph is built (``gradtrace.graph.build``)."""

    def __init__(self):
        self.ops: list = []  # op records in call order; None while an op is running
        self.ops_from = 0  # the call order of ops[0] (the flight recorder lets go of older ones)
        self.tensors: list = []  # tensor records, one per version
        self.edges: list = []
        self.storages: dict = {}  # "s:N" -> (device, nbytes, origin)
        self.numpy: dict = {}  # "np:N" -> attributes
        self.fns: dict = {}  # "fn:N" -> attributes
        self.backwards: dict = {}  # "bw:N" -> attributes
        self.collectives: dict = {}  # "c:N" -> attributes
        self.grad_reads: list = []  # reads of .grad on non-leaf tensors
        self.optimizer_steps: list = []  # (seq of the next op, optimizer number, type, [lr per group])
        self.loss_scales: list = []  # (seq of the next op, scale, skipped, new scale): GradScaler.update
        self.updates: list = []  # (version after, version before, statistics of the difference): updates.py
        self.times: list = []  # (seq, wall ns, start event, end event): timing.py, --time only
        self.unknown: dict = {}  # (what, error type) -> [count, first message, first op]
        self.current_op = None  # the op node being recorded (grad_fn attribution)
        self._counts = {"np": 0, "fn": 0, "bw": 0, "c": 0}

    def next_seq(self) -> int:
        """The call order of the next op."""
        return self.ops_from + len(self.ops)

    def op_at(self, seq: int):
        """The record of op ``seq``; None while it runs, or once it is let go of."""
        i = seq - self.ops_from
        return self.ops[i] if 0 <= i < len(self.ops) else None

    def set_op(self, seq: int, record) -> None:
        """Fill in the record of op ``seq`` (a slot :meth:`next_seq` gave), unless it was let go of."""
        i = seq - self.ops_from
        if i >= 0:
            self.ops[i] = record

    def drop_ops(self, end: int) -> None:
        """Let go of the records of the ops before call order ``end``."""
        if end > self.ops_from:
            del self.ops[:end - self.ops_from]
            self.ops_from = end

    def next_id(self, prefix: str) -> str:
        """A new node id of kind ``prefix`` (``np``, ``fn``, ``bw``, ``c``): ``fn:7``."""
        n = self._counts[prefix]
        self._counts[prefix] = n + 1
        return f"{prefix}:{n}"

    def note_unknown(self, what: str, exc: BaseException | None = None) -> None:
        """Count something the recorder could not read (the trace says so, per reason)."""
        key = (what, type(exc).__name__ if exc is not None else None)
        entry = self.unknown.get(key)
        if entry is None:
            msg = f"{type(exc).__name__}: {exc}".split("\n")[0][:300] if exc is not None else None
            self.unknown[key] = [1, msg, self.current_op or (f"op:{self.next_seq() - 1}" if self.ops else None)]
        else:
            entry[0] += 1
