"""A data-parallel run against a single-device one: per-rank losses against the
full-batch loss, the all-reduced gradients against the full-batch gradients (and a
constant factor between them, the signature of a loss-reduction mismatch),
BatchNorm that is not synced, parameters without a gradient on some rank, DDP's
buckets, and the other ranks' outputs against the baseline's rows."""

from __future__ import annotations

from .align import align, tensor_map
from .compare import Comparer
from .runs import Run, model_path
from .setup import batch_shape
from .tolerances import tolerance

__all__ = ["compare_data_parallel"]


def compare_data_parallel(ra: Run, rb: Run, ranks, rtol, atol) -> dict:
    """Return the report's ``data_parallel`` section for baseline ``ra`` and B's ranks
    ``ranks`` (``[(graph, values)]``); its ``agrees`` is True when the all-reduced
    gradients agree and every rank had every gradient."""
    runs = [Run(g, v) for g, v in ranks]
    W = max(rb.world, len(runs))
    out = {"world_size": W, "ranks": [r.rank for r in runs],
           "batch_shapes": [batch_shape(r.G) for r in runs], "baseline_batch_shape": batch_shape(ra.G)}
    out["losses"] = _loss_entries(ra, runs, rtol, atol)
    base_g = ra.leaf_grads_by_backward()
    ranks_g = [r.leaf_grads_by_backward() for r in runs]
    tmaps = [tensor_map(ra, r, align(ra, r)[0]) for r in runs]
    grads, ratios = _gradient_entries(ra, runs[0], base_g, ranks_g[0], tmaps[0], rtol, atol)
    out["gradients"] = grads
    out["gradients_agree"] = all(g["agree"] for g in grads)
    out["constant_factor"] = _constant_factor(ratios, W)
    bns = set()
    for r in runs:
        for path, typ in r.modules.items():
            if typ and "BatchNorm" in typ and "SyncBatchNorm" not in typ:
                bns.add(f"{model_path(path)} ({typ})")
    out["batchnorm_not_synced"] = sorted(bns)
    no_grad = []
    for i, bg in enumerate(base_g):
        for r, rg, tm in zip(runs, ranks_g, tmaps):
            have = set(rg[i]) if i < len(rg) else set()
            for ta in bg:
                tb = tm.get(ta)
                if tb is None or tb not in have:
                    no_grad.append({"backward": i, "rank": r.rank,
                                    "param": r.param_name(tb) if tb else ra.param_name(ta)})
    out["no_grad_on_rank"] = no_grad
    out["collectives"] = [{"rank": r.rank, "count": len(r.collectives),
                           "buckets": [{"bucket": d.get("bucket"), "numel": d.get("numel"),
                                        "params": d.get("params")} for _, d in r.collectives]}
                          for r in runs]
    out["other_ranks_rows"] = [_rows_against_baseline(ra, r, rtol, atol) for r in runs[1:]]
    out["agrees"] = out["gradients_agree"] and not no_grad
    return out


def _losses(r: Run):
    """Per backward call: the root's value (a scalar loss), from its statistics."""
    out = []
    for bw in r.backwards:
        val = None
        for _, v, d in r.G.out_edges(bw, data=True):
            if d.get("kind") == "weights":
                s = r.G.nodes[v].get("stats") or {}
                if r.G.nodes[v].get("shape") in ([], [1]):
                    val = s.get("mean")
                break
        out.append(val)
    return out


def _close(x, y, r, a):
    return abs(x - y) <= 10 * (a + r * abs(y)) + 1e-6 * abs(y)


def _loss_entries(ra: Run, runs, rtol, atol) -> list:
    """Per backward call of the baseline: its loss, the ranks' losses, their mean and
    sum, and which of the two the baseline matches."""
    rank_losses = [_losses(r) for r in runs]
    losses = []
    for i, bl in enumerate(_losses(ra)):
        rl = [rs[i] if i < len(rs) else None for rs in rank_losses]
        known = [x for x in rl if x is not None]
        entry = {"backward": i, "baseline": bl, "ranks": rl,
                 "mean_of_ranks": sum(known) / len(known) if known else None,
                 "sum_of_ranks": sum(known) if known else None}
        if bl is not None and known:
            r_, a_ = tolerance("float32", None, rtol, atol)
            entry["matches"] = ("mean" if _close(entry["mean_of_ranks"], bl, r_, a_) else
                                "sum" if _close(entry["sum_of_ranks"], bl, r_, a_) else None)
        losses.append(entry)
    return losses


def _gradient_entries(ra: Run, r0: Run, base_g, g0s, tmap, rtol, atol):
    """Rank 0's all-reduced parameter gradients against the baseline's full-batch
    ones: ``(entries, ratios)``, ratios ``[(backward, norm ratio, agree)]``."""
    grads, ratios = [], []
    cmp = Comparer(ra, r0, rtol, atol)
    for i, bg in enumerate(base_g):
        g0 = g0s[i] if i < len(g0s) else {}
        for ta, ea in bg.items():
            tb = tmap.get(ta)
            if tb not in g0:
                continue
            eb = g0[tb]
            c = cmp.tensor(ta, tb, va=ea.get("value") or "-", vb=eb.get("value") or "-",
                           sa=ea.get("stats"), sb=eb.get("stats"))
            na, nb = (ea.get("stats") or {}).get("norm"), (eb.get("stats") or {}).get("norm")
            ratio = (na / nb) if na and nb else None
            if ratio is not None:
                ratios.append((i, ratio, c["agree"]))
            grads.append({"backward": i, "param": r0.param_name(tb), "basis": c["basis"],
                          "agree": c["agree"], "max_abs": c.get("max_abs"), "max_rel": c.get("max_rel"),
                          "mismatch": c.get("mismatch"), "norm_ratio": ratio})
    return grads, ratios


def _constant_factor(ratios, W):
    """One factor between the single-device and the all-reduced gradients, the same
    for every parameter of the first backward that disagrees; else None."""
    factor = None
    first_bad = next((i for i, _, ok in ratios if not ok), None)
    rs = sorted(x for i, x, _ in ratios if i == first_bad)
    if rs:
        med = rs[len(rs) // 2]
        if med > 0 and all(abs(x / med - 1) < 0.02 for x in rs) and abs(med - 1) > 0.02:
            factor = {"factor": med, "world_size": W, "backward": first_bad,
                      "near_world_size": abs(med - W) < 0.05 * W or abs(1 / med - W) < 0.05 * W}
            factor["text"] = (
                f"in backward {first_bad} the single-device gradients are {med:.4g}x the all-reduced ones"
                + (f", a factor near the world size ({W}): the signature of a loss-reduction or averaging "
                   f"mismatch (e.g. reduction='sum' per rank while DDP averages, or a loss already averaged "
                   f"over the global batch)" if factor["near_world_size"] else ""))
    return factor


def _rows_against_baseline(ra: Run, r: Run, rtol, atol) -> dict:
    """How many of rank ``r``'s outputs agree with their rows of the baseline's."""
    pairs, _ = align(ra, r)
    cmp = Comparer(ra, r, rtol, atol)
    n_ok = n_bad = 0
    for a, b in pairs:
        ob = dict(r.outputs.get(b, []))
        for pos, ta in ra.outputs.get(a, []):
            if pos in ob:
                c = cmp.tensor(ta, ob[pos])
                if c["basis"] == "rows":
                    n_ok += c["agree"]
                    n_bad += not c["agree"]
    return {"rank": r.rank, "rows_agree": n_ok, "rows_differ": n_bad}
