"""Accuracy against a float64 reference run: is run B as close to the float64 run as
baseline A is (the judgement of PyTorch's own accuracy checks)."""

from __future__ import annotations

import torch

from .align import align, tensor_map
from .runs import LIST_LIMIT, UNINITIALIZED_OPS, Run

__all__ = ["REFERENCE_MULTIPLIER", "REFERENCE_TOL", "accuracy_vs_reference"]

REFERENCE_MULTIPLIER = 2.0  # torch._dynamo.utils.same: res_error <= 2 * ref_error + tol / 10
REFERENCE_TOL = 1e-4


def _rmse(x, ref):
    return float(torch.sqrt(torch.mean((x.double() - ref.double()) ** 2))) if ref.numel() else 0.0


def accuracy_vs_reference(R, values_r, A, values_a, B, values_b, names=("cpu64", "A", "B")) -> dict:
    """Judge run B's accuracy against the float64 run R, relative to baseline A's: per
    tensor, ``rmse(B, R) <= 2 * rmse(A, R) + 1e-5`` (torch._dynamo's ``same`` with an
    fp64 reference). Uses full values where all three runs kept them, else the
    statistics (min, max, mean, norm) as a proxy. Returns ``{reference, baseline,
    target, checked, failed, as_accurate, verdict, basis, worst, failures}``."""
    rr, ra, rb = Run(R, values_r), Run(A, values_a), Run(B, values_b)
    pa, _ = align(rr, ra)
    pb, _ = align(rr, rb)
    ma, mb = tensor_map(rr, ra, pa), tensor_map(rr, rb, pb)
    checks = []

    def vec(r, node, value_key=None, stats=None):
        v = r.values.get(value_key or node)
        if v is not None:
            return v.double().flatten(), "values"
        s = stats if stats is not None else r.G.nodes[node].get("stats")
        if not s or s.get("nan") or s.get("inf"):
            return None, None
        return torch.tensor([s["min"], s["max"], s["mean"], s["norm"]], dtype=torch.float64), "stats"

    def check(what, ref_node, a_node, b_node, ea=None, eb=None, er=None):
        x_r, b1 = vec(rr, ref_node, (er or {}).get("value"), (er or {}).get("stats"))
        x_a, b2 = vec(ra, a_node, (ea or {}).get("value"), (ea or {}).get("stats"))
        x_b, b3 = vec(rb, b_node, (eb or {}).get("value"), (eb or {}).get("stats"))
        if x_r is None or x_a is None or x_b is None:
            return
        basis = "values" if b1 == b2 == b3 == "values" else "stats"
        if basis == "stats":
            x_r, _ = vec(rr, ref_node, "-", (er or {}).get("stats"))
            x_a, _ = vec(ra, a_node, "-", (ea or {}).get("stats"))
            x_b, _ = vec(rb, b_node, "-", (eb or {}).get("stats"))
            if x_r is None or x_a is None or x_b is None:
                return
        if x_r.shape != x_a.shape or x_r.shape != x_b.shape:
            return
        ea_, eb_ = _rmse(x_a, x_r), _rmse(x_b, x_r)
        ok = eb_ <= REFERENCE_MULTIPLIER * ea_ + REFERENCE_TOL / 10
        checks.append({"what": what, "label": rr.G.nodes[ref_node].get("label"), "basis": basis,
                       "rmse_baseline": ea_, "rmse_target": eb_, "ok": ok, "ref": ref_node})

    for n, d in rr.ops:
        if d.get("name", "").rsplit(".", 1)[-1] in UNINITIALIZED_OPS:
            continue
        for _, t in rr.outputs.get(n, []):
            if t in ma and t in mb and rr.G.nodes[t].get("dtype", "").startswith(("float", "complex")):
                check("output", t, ma[t], mb[t])
    lr, la, lb = rr.leaf_grads_by_backward(), ra.leaf_grads_by_backward(), rb.leaf_grads_by_backward()
    for i, g in enumerate(lr):
        for t, e in g.items():
            ta, tb = ma.get(t), mb.get(t)
            if i < len(la) and i < len(lb) and ta in la[i] and tb in lb[i]:
                check("leaf_grad", t, ta, tb, la[i][ta], lb[i][tb], e)
    return _judgement(checks, names)


def _judgement(checks, names) -> dict:
    """The verdict on the per-tensor ``checks`` and the figures behind it."""
    bad = [c for c in checks if not c["ok"]]
    worst = max(checks, key=lambda c: c["rmse_target"] / (c["rmse_baseline"] + 1e-30), default=None)
    ref, base, tgt = names
    if not checks:
        verdict = f"no tensors could be compared with the {ref} reference"
    elif not bad:
        verdict = f"the {tgt} run is as accurate as the {base} run ({len(checks)} tensors within " \
                  f"{REFERENCE_MULTIPLIER:g}x the {base} run's RMSE to {ref})"
    else:
        verdict = f"the {tgt} run is less accurate than the {base} run: {len(bad)} of {len(checks)} " \
                  f"tensors are further from {ref} than {REFERENCE_MULTIPLIER:g}x the {base} run's RMSE"
    return {"reference": ref, "baseline": base, "target": tgt, "checked": len(checks), "failed": len(bad),
            "as_accurate": bool(checks) and not bad, "verdict": verdict,
            "basis": sorted({c["basis"] for c in checks}),
            "worst": worst, "failures": bad[:LIST_LIMIT]}
