"""Comparing one tensor of run A with its counterpart in run B: by full values when
both runs kept them (:func:`compare_values`), by statistics otherwise
(:func:`compare_stats`), by rows when B is one data-parallel rank of A's batch
(:class:`Comparer`)."""

from __future__ import annotations

import math

import torch

from ...graph.query import numel
from .runs import Run
from .tolerances import tolerance

__all__ = ["Comparer", "compare_stats", "compare_values"]


def compare_values(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> dict:
    """Return the max absolute and relative error and the mismatched fraction of ``a``
    against ``b`` (``|a - b| > atol + rtol * |b|``, NaNs equal to NaNs): ``{max_abs,
    max_rel, mismatch, agree, n}``."""
    if a.is_complex() or b.is_complex():
        a, b = a.to(torch.complex128), b.to(torch.complex128)
    else:
        a, b = a.to(torch.float64), b.to(torch.float64)
    if a.numel() == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "mismatch": 0.0, "agree": True, "n": 0}
    diff = (a - b).abs()
    both_nan = torch.isnan(a) & torch.isnan(b)
    same = (a == b) | both_nan
    diff = torch.where(same, torch.zeros_like(diff), diff)
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    babs = b.abs()
    tol = atol + rtol * torch.where(torch.isnan(babs), torch.zeros_like(babs), babs)
    bad = diff > tol
    rel = torch.where(babs > 0, diff / babs, torch.where(diff > 0, torch.full_like(diff, math.inf), diff))
    return {"max_abs": float(diff.max()), "max_rel": float(rel.max()), "mismatch": float(bad.double().mean()),
            "agree": not bool(bad.any()), "n": a.numel()}


def compare_stats(sa: dict, sb: dict, numel: int, rtol: float, atol: float) -> dict:
    """Compare two tensors by their statistics (a lower bound on their difference);
    return ``{max_abs, max_rel, mismatch: None, agree, n}`` (and a ``note`` when their
    NaN/Inf counts differ)."""
    if sa.get("nan") != sb.get("nan") or sa.get("inf") != sb.get("inf"):
        return {"max_abs": math.inf, "max_rel": math.inf, "mismatch": None, "agree": False, "n": numel,
                "note": f"NaN/Inf counts differ ({sa.get('nan')}/{sa.get('inf')} vs {sb.get('nan')}/{sb.get('inf')})"}

    def f(x):
        return 0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    def delta(k):  # an Inf both runs hold is no difference (inf - inf would be NaN)
        x, y = f(sa.get(k)), f(sb.get(k))
        return 0.0 if x == y else abs(x - y)

    def size(x):
        return abs(x) if math.isfinite(x) else 0.0

    scale = max(size(f(sa.get(k))) for k in ("min", "max")) if sa else 0.0
    scale = max(scale, *(size(f(sb.get(k))) for k in ("min", "max")))
    n = max(int(numel or 1), 1)
    deltas = [delta(k) for k in ("min", "max", "mean")]
    deltas.append(delta("norm") / math.sqrt(n))
    max_abs = max(deltas)
    tol = atol + rtol * scale
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    return {"max_abs": max_abs, "max_rel": rel, "mismatch": None, "agree": max_abs <= tol, "n": n}


class Comparer:
    """Compares tensor nodes of run ``ra`` with run ``rb``'s at tolerances ``rtol``,
    ``atol`` (None: the dtypes' defaults), each pair once."""

    def __init__(self, ra: Run, rb: Run, rtol, atol):
        self.ra, self.rb, self.rtol, self.atol = ra, rb, rtol, atol
        self.cache = {}

    def tensor(self, ta, tb, va=None, vb=None, sa=None, sb=None, uninit=False, tol_dtype=None):
        """Compare tensor node ``ta`` of A with ``tb`` of B. ``va``/``vb`` name values
        (defaults: the nodes), ``sa``/``sb`` give statistics (defaults: the nodes').
        ``tol_dtype`` names the dtype whose tolerance applies (default: the looser of
        the two). Returns the comparison: nodes, label, dtypes, shapes, tolerances,
        ``basis`` and the figures of :func:`compare_values` or :func:`compare_stats`."""
        key = (ta, tb, va, vb, tol_dtype)
        if key in self.cache and sa is None:
            return self.cache[key]
        da, db = self.ra.G.nodes[ta], self.rb.G.nodes[tb]
        shape_a, shape_b = list(da.get("shape") or []), list(db.get("shape") or [])
        if tol_dtype is not None:
            r, a = tolerance(tol_dtype, None, self.rtol, self.atol)
        else:
            r, a = tolerance(self.ra.precision(ta), self.rb.precision(tb), self.rtol, self.atol)
        res = {"a": ta, "b": tb, "label": da.get("label") or db.get("label") or self.ra.label(ta),
               "dtype": db.get("dtype"),
               "dtype_a": da.get("dtype"), "shape": shape_b, "shape_a": shape_a, "rtol": r, "atol": a}
        xa = self.ra.values.get(va or ta)
        xb = self.rb.values.get(vb or tb)
        sa = sa if sa is not None else da.get("stats")
        sb = sb if sb is not None else db.get("stats")
        if uninit:
            res.update(basis="uninitialized", agree=True)
        elif shape_a == shape_b:
            if xa is not None and xb is not None and tuple(xa.shape) == tuple(xb.shape):
                res.update(basis="values", **compare_values(xb, xa, r, a))
            elif sa and sb:
                # symmetric in its figures; A first so its note reads "A's counts vs B's"
                res.update(basis="stats", **compare_stats(sa, sb, numel(shape_b), r, a))
            else:
                res.update(basis="none", agree=True)
        elif self.is_batch_split(shape_a, shape_b):
            res.update(self._rows(xa, xb, shape_b[0], r, a))
        else:
            res.update(basis="shape", agree=False, max_abs=None, max_rel=None, mismatch=None,
                       note=f"shape {shape_a} vs {shape_b}")
        self.cache[key] = res
        return res

    def _rows(self, xa, xb, n, r, a) -> dict:
        """B's value ``xb`` against its rank's ``n`` rows of A's ``xa``, split
        contiguously or strided: whichever agrees, else the closer."""
        W, k = self.rb.world, self.rb.rank
        if xa is None or xb is None:
            return {"basis": "batch-split", "agree": True}
        best = None
        for how, rows in (("contiguous", xa[k * n:(k + 1) * n]), ("strided", xa[k::W])):
            if tuple(rows.shape) != tuple(xb.shape):
                continue
            c = compare_values(xb, rows, r, a)
            c["split"] = how
            if best is None or (c["agree"] and not best["agree"]) or c["max_abs"] < best["max_abs"]:
                best = c
        if best is None:
            return {"basis": "batch-split", "agree": True}
        return {"basis": "rows", **best}

    def is_batch_split(self, sa, sb) -> bool:
        """Return whether shape ``sb`` is one data-parallel rank's share of ``sa``'s
        first dimension."""
        W = self.rb.world
        return (W > 1 and len(sa) == len(sb) and len(sa) > 0 and sa[1:] == sb[1:]
                and sb[0] * W == sa[0])


