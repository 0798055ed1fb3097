"""The numbers of two runs, tensor by tensor: every aligned op's outputs and in-place
writes, and every gradient per backward call (:func:`compare_numerics`), and the
first of them that diverges, with its op, source line and inputs
(:func:`first_divergence`)."""

from __future__ import annotations

from .compare import Comparer
from .runs import LIST_LIMIT, UNINITIALIZED_OPS, Run
from .tolerances import PRECISION_ORDER

__all__ = ["compare_numerics", "first_divergence"]


def compare_numerics(ra: Run, rb: Run, pairs, tmap, cmp: Comparer):
    """Compare every aligned output, write and gradient; return ``(section, items)``:
    the report's ``numerics`` section and every comparison in program order."""
    items = _forward_items(ra, rb, pairs, cmp) + _gradient_items(ra, rb, tmap, cmp)
    counts = {}
    for it in items:
        counts[it["basis"]] = counts.get(it["basis"], 0) + 1
    items.sort(key=lambda x: x["order"])
    diverging = [it for it in items if not it["agree"]]
    compared = [it for it in items if it["basis"] in ("values", "stats", "rows", "shape")]
    worst = max((it["max_abs"] for it in compared if it.get("max_abs") is not None), default=0.0)
    out = {
        "compared": len(compared), "by_basis": counts, "diverging": len(diverging),
        "agreeing": sum(1 for it in compared if it["agree"]),
        "max_abs": worst,
        "exact": all((it.get("max_abs") or 0.0) == 0.0 for it in compared),
        "diverging_items": [_item_text(ra, rb, it) for it in diverging[:LIST_LIMIT]],
        "grads_compared": sum(1 for it in compared if it["what"] in ("grad", "leaf_grad")),
    }
    return out, items


def _forward_items(ra: Run, rb: Run, pairs, cmp: Comparer) -> list:
    """The comparisons of every aligned op's outputs and in-place writes."""
    items = []
    dp = rb.world > 1
    local = set()  # B tensors computed from this rank's share of the batch
    for a, b in pairs:
        da = ra.G.nodes[a]
        uninit = da.get("name", "").rsplit(".", 1)[-1] in UNINITIALIZED_OPS
        outs_b = dict(rb.outputs.get(b, []))
        dep = False
        if dp:
            ia = dict(ra.inputs.get(a, []))
            for pos, tb in rb.inputs.get(b, []):
                ta = ia.get(pos)
                if tb in local or (ta is not None and cmp.is_batch_split(ra.G.nodes[ta].get("shape") or [],
                                                                         rb.G.nodes[tb].get("shape") or [])):
                    dep = True
                    break
            if dep:
                local.update(outs_b.values())
                local.update(v for _, v in rb.writes.get(b, []) if not _is_state(rb, v))
        casts = (da.get("autocast"), rb.G.nodes[b].get("autocast"))
        for pos, ta in ra.outputs.get(a, []):
            tb = outs_b.get(pos)
            if tb is None:
                continue
            lowered = _autocast_lowered(ra.G.nodes[ta].get("dtype"), rb.G.nodes[tb].get("dtype"), *casts,
                                        inputs=(_input_dtypes(ra, a), _input_dtypes(rb, b)))
            c = cmp.tensor(ta, tb, uninit=uninit and ra.G.nodes[ta].get("version") == 0,
                           tol_dtype=lowered["tolerance_of"] if lowered else None)
            if lowered:
                c = dict(c, autocast=lowered)
            if dep and c["basis"] in ("values", "stats"):
                c = dict(c, basis="rank-local", agree=True)  # a reduction over this rank's rows
            items.append({"order": (da["seq"], 0), "what": "output", "op_a": a, "op_b": b, "pos": pos, **c})
        outs_a = {t for _, t in ra.outputs.get(a, [])}
        for (_, va), (_, vb) in zip(ra.writes.get(a, []), rb.writes.get(b, [])):
            if va in outs_a:
                continue  # an in-place op's output is the version it wrote: compared once, above
            c = cmp.tensor(va, vb)
            if dep and vb in local and c["basis"] in ("values", "stats"):
                c = dict(c, basis="rank-local", agree=True)
            items.append({"order": (da["seq"], 0), "what": "write", "op_a": a, "op_b": b, **c})
    return items


def _gradient_items(ra: Run, rb: Run, tmap, cmp: Comparer) -> list:
    """The comparisons of the gradients of backward calls in order; within a call,
    nearest the loss first."""
    items = []
    dp = rb.world > 1
    for i, bwa in enumerate(ra.backwards):
        if i >= len(rb.backwards):
            break
        bwb = rb.backwards[i]
        op_seq = ra.G.nodes[ra.G.nodes[bwa].get("op")]["seq"] if ra.G.nodes[bwa].get("op") in ra.G else 0
        for kind, src_a, src_b in (("grad", ra.grads, rb.grads), ("leaf_grad", ra.leaf_grads, rb.leaf_grads)):
            ga, gb = src_a.get(bwa, {}), src_b.get(bwb, {})
            for ta, ea in ga.items():
                tb = tmap.get(ta)
                if tb is None or tb not in gb:
                    continue
                eb = gb[tb]
                if kind == "grad" and dp:
                    continue  # a rank's local gradients, before the all-reduce: section 4 compares
                c = dict(cmp.tensor(ta, tb, va=ea.get("value") or "-", vb=eb.get("value") or "-",
                                    sa=ea.get("stats"), sb=eb.get("stats")))
                prod = ra.producer.get(ta)
                sub = 1 + (10**7 - (ra.seq.get(prod, 0) if prod else 0)) / 10**8 if kind == "grad" else 2
                c["label"] = ra.param_name(ta) if kind == "leaf_grad" else c.get("label")
                items.append({"order": (op_seq, sub), "what": kind, "backward": bwa, "tensor_op": prod,
                              "bw_op": ra.G.nodes[bwa].get("op"), **c})
    return items


def _is_state(r: Run, t) -> bool:
    """A parameter or buffer of a module (or another leaf that requires grad)."""
    d = r.G.nodes[t]
    if d.get("is_leaf") and d.get("requires_grad"):
        return True
    lab = d.get("label") or ""
    return "." in lab and lab.rsplit(".", 1)[0] in r.modules


def _autocast_lowered(dtype_a, dtype_b, cast_a, cast_b, inputs=((), ())):
    """When autocast gave one run's output a lower dtype than the other run's, judge
    it at the precision the program asked for: ``{"side": "a"|"b", "device", "dtype",
    "tolerance_of"}``, ``tolerance_of`` the looser of the other run's dtype and the
    dtypes the op's inputs had before autocast cast them; else None (also for an op
    that only passed on a dtype its inputs already had). Autocast's rounding is then
    the difference reported, at the op inside the region that cast."""
    if dtype_a == dtype_b:
        return None
    for i, (side, mine, other, cast) in enumerate((("a", dtype_a, dtype_b, cast_a), ("b", dtype_b, dtype_a, cast_b))):
        devices = [dev for dev, dt in (cast or {}).items() if dt == mine]
        other_cast = cast_b if side == "a" else cast_a
        asked = [d for d in inputs[i] if d != mine and d in PRECISION_ORDER]
        if devices and asked and other not in (other_cast or {}).values():
            looser = min(asked + [d for d in (other,) if d in PRECISION_ORDER], key=PRECISION_ORDER.index)
            return {"side": side, "device": devices[0], "dtype": mine, "tolerance_of": looser}
    return None


def _input_dtypes(r: Run, op) -> list:
    return [r.G.nodes[t].get("dtype") for _, t in r.inputs.get(op, [])]


def _item_text(ra, rb, it):
    keep = ("what", "label", "dtype", "dtype_a", "shape", "shape_a", "basis", "max_abs", "max_rel",
            "mismatch", "rtol", "atol", "note", "split", "a", "b", "autocast")
    d = {k: it.get(k) for k in keep if k in it}
    if it.get("op_a"):
        d["op"] = ra.op_text(it["op_a"])
    elif it.get("what") == "leaf_grad" and it.get("bw_op") in ra.G:
        d["op"] = ra.op_text(it["bw_op"])
        d["backward"] = it.get("backward")
    elif it.get("tensor_op"):
        d["op"] = ra.op_text(it["tensor_op"])
        d["backward"] = it.get("backward")
    return d


def first_divergence(ra: Run, rb: Run, items, pairs, cmp: Comparer, tmap):
    """Return the report's ``first_divergence`` section: the first item of ``items``
    that does not agree, with its op in both runs, its figures and (an op output) how
    its inputs compared; None when every item agrees."""
    first = next((it for it in items if not it["agree"]), None)
    if first is None:
        return None
    out = {"what": first["what"], "figures": _item_text(ra, rb, first)}
    op = first.get("op_a") or (first.get("bw_op") if first["what"] == "leaf_grad" else None) \
        or first.get("tensor_op")
    if op in ra.G:
        out.update(ra.op_text(op))
        pb = dict(pairs).get(op)
        out["op_b"] = rb.op_text(pb) if pb else None
        casts = [ra.G.nodes[op].get("autocast"), rb.G.nodes[pb].get("autocast") if pb else None]
        out["autocast"] = casts if any(casts) else None
    if first.get("op_a"):
        ins = []
        ib = dict(rb.inputs.get(first["op_b"], []))
        for pos, ta in ra.inputs.get(first["op_a"], []):
            tb = ib.get(pos)
            if tb is None:
                continue
            c = cmp.tensor(ta, tb)
            label = ra.label(ta)
            if label == out["figures"].get("label"):  # an in-place op's input: the same name, one version earlier
                label = f"{label} (before this op)"
            ins.append({"pos": pos, "label": label, "shape": c.get("shape"), "basis": c.get("basis"),
                        "agree": c.get("agree"), "max_abs": c.get("max_abs")})
        out["inputs"] = ins
        out["inputs_agreed"] = [i["label"] for i in ins if i["agree"]]
    else:
        out["backward"] = first.get("backward")
        out["tensor"] = first.get("a")
        out["label"] = first.get("label")
    out["nodes_a"] = [n for n in (first.get("op_a") or first.get("tensor_op"), first.get("a")) if n]
    out["nodes_b"] = [n for n in (first.get("op_b"), first.get("b")) if n]
    return out
