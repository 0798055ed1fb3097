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

On a non-CPU device (CUDA) the result stays on the device (a tuple of 0-d
tensors, no synchronisation per op, a dozen kernel launches) and is read at the
end by :func:`finalize`.

Statistics are taken out of the user's sight (``hidden``): no function or
dispatch mode, subclass or profiler sees the recorder's own reductions. Tensors
that only their own subclass or transform can compute on (``is_plain``) get none.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from .hidden import hidden, is_plain

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


def compute(t: torch.Tensor):
    """Return the statistics of ``t``: a 6-tuple of numbers, or a 6-tuple of 0-d
    tensors on a non-CPU device (read later with :func:`finalize`), or None where
    no statistics exist (meta, sparse, empty, quantized tensors)."""
    try:
        if not is_plain(t):
            return None
        with hidden():
            if t.layout != _strided or t.is_meta or t.is_quantized:
                return None
            n = t.numel()
            if n == 0:
                return None
            if t.is_cpu:
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
            t = t.detach()
            if t.is_complex():
                t = t.abs()
            return _device_stats(t)
    except Exception:
        return None


def _list_stats(v: list, n: int):
    s = sum(v)
    if _isfinite(s):
        mn, mx = min(v), max(v)
        return (float(mn), float(mx), s / n, math.hypot(*v), 0, 0)
    return _slow_list(v, n, s)


def _slow_list(v, n, s):
    nan = sum(1 for x in v if x != x)
    inf = sum(1 for x in v if x in (math.inf, -math.inf))
    finite = [x for x in v if _isfinite(x)]
    mn = float(min(finite)) if finite else math.nan
    mx = float(max(finite)) if finite else math.nan
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
        if big < 1e150:
            norm = math.sqrt(float(np.dot(f64, f64)))
        else:  # the squares would overflow float64 (and NumPy would warn): scale first
            scaled = f64 / big
            norm = big * math.sqrt(float(np.dot(scaled, scaled)))
        return (mn, mx, s / flat.size, norm, 0, 0)
    flat = flat.astype(np.float64, copy=False)
    nan = int(np.isnan(flat).sum())
    inf = int(np.isinf(flat).sum())
    finite = flat[np.isfinite(flat)]
    mn = float(finite.min()) if finite.size else math.nan
    mx = float(finite.max()) if finite.size else math.nan
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
        mn, mx = torch.aminmax(flat)
        if _isfinite(q):
            norm = math.sqrt(q)
        else:  # float64 values whose squares overflow: let torch scale them
            norm = torch.linalg.vector_norm(flat).item()
        return (float(mn.item()), float(mx.item()), s / n, norm, 0, 0)
    return tuple(_masked_stats(t))


def _masked_stats(t: torch.Tensor):
    """The general route: NaN and Inf counted, and left out of min and max."""
    if not t.is_floating_point():
        t = t.to(_f64)
    nan = torch.isnan(t)
    inf = torch.isinf(t)
    finite = torch.isfinite(t)
    mn = torch.where(finite, t, math.inf).amin()
    mx = torch.where(finite, t, -math.inf).amax()
    mean = t.mean(dtype=_f64)
    norm = torch.linalg.vector_norm(t, dtype=_f64)
    if t.device.type == "cpu":
        nan_n, inf_n = int(nan.sum()), int(inf.sum())
        fin = nan_n + inf_n < t.numel()
        return (float(mn) if fin else math.nan, float(mx) if fin else math.nan, float(mean),
                float(norm), nan_n, inf_n)
    return (mn, mx, mean, norm, nan.sum(), inf.sum())


def _device_stats(t: torch.Tensor):
    """Statistics that stay on the device: no synchronisation, read by finalize."""
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if not t.is_floating_point():
        t = t.to(_f64)
    return _masked_stats(t)


def finalize(s):
    """Return ``s`` as a dict of plain numbers keyed by :data:`STAT_KEYS`, or None."""
    if s is None:
        return None
    if isinstance(s, torch.Tensor):
        s = s.tolist()
    elif any(isinstance(v, torch.Tensor) for v in s):
        with hidden():
            s = torch.stack([torch.as_tensor(v).double().cpu() for v in s]).tolist()
        # a device tuple marks "no finite value" with +/-inf for min/max
        if s[0] == math.inf and s[1] == -math.inf:
            s[0] = s[1] = math.nan
    mn, mx, mean, norm, nan, inf = s
    return {"min": mn, "max": mx, "mean": mean, "norm": norm, "nan": int(nan), "inf": int(inf)}
