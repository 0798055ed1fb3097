"""Summary statistics of a tensor: min, max, mean, norm, and NaN and Inf counts.

This runs for every tensor version and gradient the recorder sees, so each size
class takes its cheapest exact route:

- tiny CPU tensors (up to 128 elements): ``tolist()`` and Python arithmetic,
  about 1-2 µs, a fraction of one NumPy or torch call;
- small CPU tensors: NumPy, whose per-call cost is a fraction of torch's dispatcher;
- large CPU tensors: torch, converting a cache-sized chunk at a time into a
  reused float64 buffer for the sum and the sum of squares, then ``aminmax``.

All three first take the float64 sum: when it is finite the tensor has no NaN
and no Inf (a float64 sum of finite float32/float16 values cannot overflow), so
the counts are zero without looking. Only a non-finite sum (or a float64 tensor
whose finite values overflow the sum) takes the slow, masking route.

On a non-CPU device (CUDA) the statistics stay on the device: each tensor's
reductions write straight into one row of a preallocated float64 buffer
(:data:`_ROWS` rows of six per thread and device), with no synchronisation and
ten kernels for a floating tensor (twelve for float64, four for an integer or
bool tensor). :func:`compute` returns a small handle, and :func:`finalize` reads
its row from one host copy of the buffer's written rows, taken once and taken
again only when rows were written after it. Handles hold their buffer (never a
tensor of the user's), so a buffer lives as long as a record that points into it.

Statistics are taken out of the user's sight (``hidden``): no function or
dispatch mode, subclass or profiler sees the recorder's own reductions. Tensors
that only their own subclass or transform can compute on (``is_plain``) get none.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from .hidden import hidden, is_plain, out_of_sight

__all__ = ["STAT_KEYS", "compute", "finalize"]

STAT_KEYS = ("min", "max", "mean", "norm", "nan", "inf")
_LIST_MAX = 128
_NUMPY_MAX = 4096
_NUMPY_DTYPES = frozenset(
    {torch.float32, torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8}
)
_LIST_DTYPES = _NUMPY_DTYPES | {torch.float16, torch.bfloat16, torch.bool}
_CHUNK = 1 << 17  # elements of float64 scratch per thread (1 MiB)
_local = threading.local()
_strided = torch.strided
_isfinite = math.isfinite
_f64 = torch.float64
_device_route_on_cpu = False  # tests set it to run the device route on CPU tensors
_Q_MIN = 1e-280  # a float64 sum of squares above this lost nothing to underflow that matters


def compute(t: torch.Tensor):
    """Return the statistics of ``t``: a 6-tuple of numbers on the CPU, a handle to
    a row of a device buffer on another device (read later with :func:`finalize`),
    or None where no statistics exist (meta, sparse, empty, quantized tensors)."""
    try:
        if not is_plain(t):
            return None
        with out_of_sight():  # hidden() would cost more than a small tensor's statistics
            return _compute(t)
    except Exception:
        return None


def _compute(t: torch.Tensor):
    """:func:`compute` of a plain tensor, out of the user's sight."""
    if t.layout != _strided or t.is_meta or t.is_quantized:
        return None
    n = t.numel()
    if n == 0:
        return None
    if t.is_cpu and not _device_route_on_cpu:
        dt = t.dtype
        if n <= _LIST_MAX and dt in _LIST_DTYPES:
            d = t.dim()
            if d == 1:
                v = t.tolist()
            elif d == 0:
                v = [t.item()]
            elif d == 2:
                v = [x for row in t.tolist() for x in row]
            else:
                v = t.reshape(-1).tolist()
            return _list_stats(v, n)
        if t.requires_grad:
            t = t.detach()
        if t.is_complex():
            t = t.abs()
            dt = t.dtype
        if n <= _NUMPY_MAX and dt in _NUMPY_DTYPES and not (t.is_neg() or t.is_conj()):
            return _numpy_stats(t.numpy())
        return _cpu_stats(t, n)
    if t.is_cuda and torch.cuda.is_current_stream_capturing():
        # Kernels enqueued now would join the user's CUDA graph, and its replays
        # would write into our buffer: no statistics for a capture.
        return None
    return _device_stats(t)


def _list_stats(v: list, n: int):
    s = sum(v)
    if _isfinite(s):
        mn, mx = min(v), max(v)
        return (float(mn), float(mx), s / n, math.hypot(*v), 0, 0)
    return _slow_list(v, n, s)


def _slow_list(v, n, s):
    nan = sum(1 for x in v if x != x)
    inf = sum(1 for x in v if x in (math.inf, -math.inf))
    seen = [x for x in v if x == x]  # min and max count an Inf, not a NaN
    mn = float(min(seen)) if seen else math.nan
    mx = float(max(seen)) if seen else math.nan
    mean = s / n
    # A float64 norm: NaN when any value is NaN, Inf when any value is infinite.
    norm = math.nan if nan else (math.inf if inf else math.hypot(*v))
    return (mn, mx, mean, norm, nan, inf)


def _numpy_stats(a: np.ndarray):
    with np.errstate(all="ignore"):  # the user's stderr gets no warning of ours
        return _numpy_stats_quiet(a)


def _numpy_stats_quiet(a: np.ndarray):
    flat = a.reshape(-1)
    s = float(flat.sum(dtype=np.float64))
    if _isfinite(s):
        f64 = flat.astype(np.float64, copy=False)
        mn, mx = float(flat.min()), float(flat.max())
        big = max(-mn, mx)
        if big < 1e150 and (big > 1e-150 or big == 0.0):
            norm = math.sqrt(float(np.dot(f64, f64)))
        else:  # the squares would overflow (or vanish in) float64: scale first
            scaled = f64 / big
            norm = big * math.sqrt(float(np.dot(scaled, scaled)))
        return (mn, mx, s / flat.size, norm, 0, 0)
    flat = flat.astype(np.float64, copy=False)
    nan = int(np.isnan(flat).sum())
    inf = int(np.isinf(flat).sum())
    seen = flat[~np.isnan(flat)]  # min and max count an Inf, not a NaN
    mn = float(seen.min()) if seen.size else math.nan
    mx = float(seen.max()) if seen.size else math.nan
    norm = math.sqrt(float(np.dot(flat, flat)))  # NaN with a NaN, else Inf with an Inf
    return (mn, mx, s / flat.size, norm, nan, inf)


def _cpu_stats(t: torch.Tensor, n: int):
    flat = t.reshape(-1)
    if t.dtype == _f64:
        s = flat.sum().item()
        q = torch.dot(flat, flat).item()
    else:
        # Float64 sums of float64 copies, made a cache-sized chunk at a time into a
        # reused buffer: twice as fast as ``sum(dtype=float64)`` plus a float64 norm.
        buf = getattr(_local, "buf", None)
        if buf is None:
            buf = _local.buf = torch.empty(_CHUNK, dtype=_f64)
        if n <= _CHUNK:
            d = buf[:n]
            d.copy_(flat)
            s = d.sum().item()
            q = torch.dot(d, d).item()
        else:
            parts = []
            for c in flat.split(_CHUNK):
                d = buf[: c.numel()]
                d.copy_(c)
                parts.append(d.sum())
                parts.append(torch.dot(d, d))
            s, q = torch.stack(parts).view(-1, 2).sum(0).tolist()
    if _isfinite(s):
        mn, mx = (float(m.item()) for m in torch.aminmax(flat))
        if _isfinite(q) and (q > _Q_MIN or mn == mx == 0.0):
            norm = math.sqrt(q)
        else:  # float64 values whose squares overflow (or vanish): scale them
            norm = _f64_norm(flat)
        return (mn, mx, s / n, norm, 0, 0)
    return tuple(_masked_stats(t))


def _masked_stats(t: torch.Tensor):
    """The general CPU route: NaN and Inf counted; min and max count an Inf (a -inf
    mask's min is -inf), not a NaN."""
    if not t.is_floating_point():
        t = t.to(_f64)
    isnan = torch.isnan(t)
    nan_n, inf_n = int(isnan.sum()), int(torch.isinf(t).sum())
    if nan_n == t.numel():
        mn = mx = math.nan
    else:
        mn = float(torch.where(isnan, math.inf, t).amin())
        mx = float(torch.where(isnan, -math.inf, t).amax())
    mean = float(t.mean(dtype=_f64))
    norm = math.nan if nan_n else (math.inf if inf_n else _f64_norm(t))
    return (mn, mx, mean, norm, nan_n, inf_n)


def _f64_norm(t: torch.Tensor) -> float:
    """The 2-norm of finite ``t`` in float64, scaled by its largest magnitude so
    that squares of huge (or tiny) float64 values neither overflow nor vanish."""
    t = t.to(_f64)
    big = float(t.abs().amax()) if t.numel() else 0.0
    if big == 0.0:
        return 0.0
    scaled = (t / big).reshape(-1)
    return big * math.sqrt(float(torch.dot(scaled, scaled)))


# --- the device route -------------------------------------------------------
#
# Row layout: min, max (of the values that are not NaN; +inf/-inf when there is none), the
# float64 sum, the count of non-finite values, the count of NaN, and the norm
# (of the values divided by max(|min|, |max|) for a float64 tensor, whose squares
# could overflow). The host turns a row into the six statistics (_row_stats).

_ROWS = 4096  # rows per buffer: 192 KiB of float64 per thread and device
_FUSED_MAX = 1 << 20  # up to this size the three sums share one reduction (32 B/element scratch)
_INF = math.inf
_COL_MIN, _COL_MAX, _COL_SUM, _COL_NONFINITE, _COL_NAN, _COL_NORM = range(6)


class _Buffer:
    """A device buffer of statistics rows, filled by one thread, and its host copy."""

    __slots__ = ("dev", "next", "done", "host", "host_rows")

    def __init__(self, device):
        # Zeros: an integer tensor's row leaves its NaN and non-finite counts unwritten.
        # Never an inference tensor, which nothing could write into outside inference mode.
        with torch.inference_mode(False):
            self.dev = torch.zeros((_ROWS, 6), dtype=_f64, device=device)
        self.next = 0  # rows taken
        self.done = 0  # rows whose kernels are all enqueued
        self.host = None  # NumPy copy of dev[:host_rows]
        self.host_rows = 0


class _Row:
    """What :func:`compute` returns on a device: a row of a buffer, read by :func:`finalize`.

    It holds the buffer (never the tensor), so the buffer lives while a record
    points into it."""

    __slots__ = ("buf", "row", "n", "scaled")

    def __init__(self, buf, row, n, scaled):
        self.buf, self.row, self.n, self.scaled = buf, row, n, scaled

    def __repr__(self):
        return f"<stats row {self.row} of {self.n} values>"


def _take_row(device):
    """The calling thread's buffer for ``device`` and a free row of it."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    b = bufs.get(device)
    if b is None or b.next == _ROWS:
        b = bufs[device] = _Buffer(device)
    r = b.next
    b.next = r + 1
    return b, r


def _device_stats(t: torch.Tensor):
    """Enqueue the statistics of ``t`` into a row of a device buffer and return its
    :class:`_Row` handle. Nothing here waits for the device or reads a value back:
    it runs on a CPU tensor too, which is how the tests check it."""
    t = t.detach()
    if t.is_complex():
        t = t.abs()
    b, r = _take_row(t.device)
    row = b.dev[r]
    if t.is_floating_point():
        scaled = t.dtype == _f64
        _float_row(t, row, t.numel(), scaled)
    else:
        scaled = False
        v = _flat_f64(t)
        torch.aminmax(v, out=(row[_COL_MIN], row[_COL_MAX]))
        torch.sum(v, 0, out=row[_COL_SUM])
        torch.linalg.vector_norm(v, out=row[_COL_NORM])
    b.done = r + 1
    return _Row(b, r, t.numel(), scaled)


def _float_row(x: torch.Tensor, row: torch.Tensor, n: int, scaled: bool) -> None:
    """Write the row of floating ``x``: 10 kernels (12 when ``scaled``), none waiting."""
    if n <= _FUSED_MAX:
        # The values, the non-finite indicator and the NaN indicator side by side
        # in float64, so that one reduction gives the sum and both counts.
        y = torch.empty((3, n), dtype=_f64, device=x.device)
        v, nonfinite, nan = y[0], y[1], y[2]
        v.view(x.shape).copy_(x)
    else:  # 16 B of scratch per element instead of 32, two kernels more
        v = _flat_f64(x)
        torch.sum(v, 0, out=row[_COL_SUM])
    # min and max count an Inf (a -inf mask's min is -inf), never a NaN
    u = torch.nan_to_num(v, nan=_INF, posinf=_INF, neginf=-_INF)
    torch.amin(u, out=row[_COL_MIN])
    if n <= _FUSED_MAX:
        torch.eq(torch.abs(u, out=nonfinite), _INF, out=nonfinite)
        torch.ne(v, v, out=nan)
        torch.sum(y, 1, out=row[_COL_SUM:_COL_NAN + 1])
    else:
        torch.sum(torch.eq(torch.abs(u, out=u), _INF, out=u), 0, out=row[_COL_NONFINITE])
        torch.sum(torch.ne(v, v, out=u), 0, out=row[_COL_NAN])
    torch.amax(torch.nan_to_num(v, nan=-_INF, posinf=_INF, neginf=-_INF, out=u), out=row[_COL_MAX])
    if scaled:
        # max(|min|, |max|): the host recomputes the same number from the row.
        big = torch.linalg.vector_norm(row[_COL_MIN:_COL_MAX + 1], ord=_INF)
        v = torch.div(v, big, out=u)
    torch.linalg.vector_norm(v, out=row[_COL_NORM])


def _flat_f64(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a flat float64 tensor: one copy, none for a contiguous float64 one."""
    return t.to(_f64, memory_format=torch.contiguous_format).view(-1)


def _to_host(t: torch.Tensor) -> np.ndarray:
    """One copy of ``t`` to the host, after every stream of its device is done."""
    dev = t.device
    if dev.type != "cpu":
        mod = getattr(torch, dev.type, None)
        sync = getattr(mod, "synchronize", None)
        if sync is not None:
            sync(dev)
    return t.to("cpu", copy=True).numpy()


def _read(h: _Row) -> list:
    """The row of ``h``, from the buffer's host copy (recopied if ``h`` is newer)."""
    b = h.buf
    if b.host is None or h.row >= b.host_rows:
        rows = b.done
        with hidden():
            b.host = _to_host(b.dev[:rows])
        b.host_rows = rows
    return b.host[h.row].tolist()


def _row_stats(h: _Row) -> tuple:
    mn, mx, s, nonfinite, nan, q = _read(h)
    nonfinite, nan = int(nonfinite), int(nan)
    if nan:
        norm = math.nan
    elif nonfinite:
        norm = math.inf
    elif h.scaled:
        big = max(abs(mn), abs(mx))
        norm = big * q if big else 0.0
    else:
        norm = q
    if nan == h.n:
        mn = mx = math.nan
    return (mn, mx, s / h.n, norm, nan, nonfinite - nan)


def finalize(s):
    """Return ``s`` (what :func:`compute` returned: a tuple of numbers, a device
    row handle, a tuple of 0-d tensors or a tensor) as a dict of plain numbers
    keyed by :data:`STAT_KEYS`, or None."""
    if s is None:
        return None
    if isinstance(s, _Row):
        s = _row_stats(s)
    elif isinstance(s, torch.Tensor):
        s = s.tolist()
    elif any(isinstance(v, torch.Tensor) for v in s):
        with hidden():
            s = torch.stack([torch.as_tensor(v).double().cpu() for v in s]).tolist()
        # a device tuple marks "no finite value" with +/-inf for min/max
        if s[0] == math.inf and s[1] == -math.inf:
            s[0] = s[1] = math.nan
    mn, mx, mean, norm, nan, inf = s
    return {"min": mn, "max": mx, "mean": mean, "norm": norm, "nan": int(nan), "inf": int(inf)}
