"""Summary statistics of a tensor: min, max, mean, norm, and NaN and Inf counts.

Small CPU tensors go through NumPy, whose per-call cost is a fraction of
torch's dispatcher; large and non-CPU tensors go through torch. On CUDA the
result stays on the device (no synchronisation per op) and is read at the end.
"""

from __future__ import annotations

import math

import numpy as np
import torch

STAT_KEYS = ("min", "max", "mean", "norm", "nan", "inf")
_NUMPY_MAX = 1 << 16
_NUMPY_DTYPES = {torch.float32, torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8}


def compute(t: torch.Tensor):
    """Return the statistics of ``t``: a 6-tuple of floats, a 6-element tensor
    (on a non-CPU device, read later with :func:`finalize`), or None where no
    statistics exist (meta, sparse, empty, quantized tensors)."""
    try:
        if t.is_meta or t.layout != torch.strided or t.is_quantized or t.numel() == 0:
            return None
        with torch.no_grad():
            t = t.detach()
            if t.is_complex():
                t = t.abs()
            if t.device.type == "cpu" and t.numel() <= _NUMPY_MAX and t.dtype in _NUMPY_DTYPES:
                return _numpy_stats(t.numpy())
            return _torch_stats(t)
    except Exception:
        return None


def _numpy_stats(a: np.ndarray):
    s = float(a.sum(dtype=np.float64))
    flat = a.ravel().astype(np.float64, copy=False)
    if math.isfinite(s):
        nan = inf = 0
        mn, mx = float(a.min()), float(a.max())
        norm = math.sqrt(float(np.dot(flat, flat)))
    else:
        nan = int(np.isnan(flat).sum())
        inf = int(np.isinf(flat).sum())
        finite = flat[np.isfinite(flat)]
        mn = float(finite.min()) if finite.size else float("nan")
        mx = float(finite.max()) if finite.size else float("nan")
        norm = float(np.sqrt(np.dot(flat, flat)))
    return (mn, mx, s / a.size, norm, nan, inf)


def _torch_stats(t: torch.Tensor):
    if t.dtype == torch.bool or not (t.is_floating_point()):
        t = t.to(torch.float64)
    elif t.dtype in (torch.float16, torch.bfloat16) or t.dtype.itemsize < 4:
        t = t.float()
    nan = torch.isnan(t)
    inf = torch.isinf(t)
    finite = ~(nan | inf)
    big = torch.finfo(t.dtype).max
    mn = torch.where(finite, t, big).amin()
    mx = torch.where(finite, t, -big).amax()
    out = torch.stack(
        [
            mn.double(),
            mx.double(),
            t.double().mean(),
            torch.linalg.vector_norm(t.double()),
            nan.sum().double(),
            inf.sum().double(),
        ]
    )
    if out.device.type == "cpu":
        return finalize(out)
    return out


def finalize(s):
    """Return ``s`` as a dict of plain numbers keyed by :data:`STAT_KEYS`, or None."""
    if s is None:
        return None
    if isinstance(s, torch.Tensor):
        s = s.tolist()
    mn, mx, mean, norm, nan, inf = s
    return {"min": mn, "max": mx, "mean": mean, "norm": norm, "nan": int(nan), "inf": int(inf)}
