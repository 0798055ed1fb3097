"""A row of figures per step of a training run (the steps of
:mod:`gradtrace.graph.steps`): what ``gradtrace show DIR --steps`` prints and the trace
keeps at the head of ``trace.json``, so that a long run reads as a table of steps.

Each row: ``step`` (from 1; a trace of ``--steps A:B`` numbers them as the run did,
from A; a trace of ``--last N`` begins with the rows its older steps left), ``ops``, ``first_seq``/``last_seq`` (the call order of
its first and last op), ``backward`` (its backward calls), ``losses`` (the value of each
call's first root when it has one element), ``grad_norm`` (the norm of the leaves'
``.grad`` after the step's last backward call, what its update used),
``max_grad`` (the parameter with the largest gradient norm then: ``{tensor, norm}``),
``max_change`` (the parameter whose norm the step's writes changed most, relatively:
``{tensor, ratio}``, ``|after - before| / before``), ``max_update`` (the parameter with
the largest update-to-weight ratio: ``{tensor, ratio, norm}``, ``|w' - w| / |w|`` over
each update the recorder saw (:mod:`gradtrace.record.updates`), ``norm`` that of
``w' - w``; absent from older traces), ``lr`` (the learning rate of each
param group at the step's optimizer steps, each optimizer's last), ``scaler`` (in a
program that scales its loss: ``{scale, skipped}`` of the step's last
``GradScaler.update``; its losses are then the losses before scaling, and its gradient
norms divided by the scale), and ``nan``/``inf``: how many tensor
versions the step made with a NaN or an Inf (``torch.empty``'s garbage aside). Figures that need statistics are null
in a trace without them.
"""

from __future__ import annotations

import math

from ..graph.names import name_of
from ..graph.query import UNINITIALISED
from ..graph.steps import MARK, find_steps, first_step
from .scaling import loss_root, scaler_updates

__all__ = ["first_step", "step_rows"]


def _norm(stats):
    v = stats.get("norm") if stats else None
    return v if isinstance(v, (int, float)) else None


def _rows(G, steps) -> dict:
    """``{step: row}`` with the op counts and call-order range of every step."""
    rows = {}
    N = G._node
    for op, k in steps.step_of.items():
        seq = N[op]["seq"]
        row = rows.get(k)
        if row is None:
            rows[k] = {"step": k, "ops": 1, "first_seq": seq, "last_seq": seq, "backward": [], "losses": [],
                       "grad_norm": None, "max_grad": None, "max_change": None, "max_update": None, "lr": [],
                       "nan": 0, "inf": 0}
        else:
            row["ops"] += 1
            row["first_seq"] = min(row["first_seq"], seq)
            row["last_seq"] = max(row["last_seq"], seq)
    return rows


def _backward_figures(G, steps, rows, scaled: bool) -> None:
    """Each step's backward calls, their losses (``scaled``: before loss scaling), and
    the gradients after its last call."""
    N, succ = G._node, G._succ
    calls = sorted(((N[d["op"]]["seq"], bw) for bw, d in N.items()
                    if d.get("kind") == "backward" and d.get("op") in steps.step_of))
    for _, bw in calls:
        row = rows[steps.step_of[N[bw]["op"]]]
        row["backward"].append(bw)
        grads, loss = [], None
        for v, keyed in succ[bw].items():
            for e in keyed.values():
                kind = e.get("kind")
                if kind == "leaf_grad":
                    grads.append((_norm(e.get("stats")), v))
                elif kind == "weights" and loss is None:
                    loss = _value(N[loss_root(G, v) if scaled else v])
        row["losses"].append(loss)
        known = [(n, v) for n, v in grads if n is not None]
        if grads and len(known) == len(grads):
            row["grad_norm"] = math.hypot(*(n for n, _ in known))
            n, v = max(known, key=lambda x: x[0] if math.isfinite(x[0]) else math.inf)
            row["max_grad"] = {"tensor": name_of(N[v]), "norm": n}
        else:
            row["grad_norm"] = row["max_grad"] = None


def _value(d):
    st, shape = d.get("stats"), d.get("shape")
    if not st or shape is None or math.prod(shape) != 1:
        return None
    return st.get("mean")


def _changes(G, steps, rows) -> None:
    """Each step's largest relative change of a parameter's norm, by the writes in it."""
    N, pred = G._node, G._pred
    for b, d in N.items():
        if d.get("kind") != "tensor" or not d.get("version") or d.get("param_kind") != "parameter":
            continue
        for a, keyed in pred[b].items():
            for e in keyed.values():
                op = e.get("op") if e.get("kind") == "next_version" else None
                if op not in steps.step_of or N[op]["name"].startswith(_INIT):
                    continue
                before, after = _norm(N[a].get("stats")), _norm(d.get("stats"))
                if before is None or after is None or before == 0 or _uninitialised(G, a):
                    continue
                ratio = abs(after - before) / before if math.isfinite(after) else math.inf
                row = rows[steps.step_of[op]]
                best = row["max_change"]
                if best is None or ratio > best["ratio"]:
                    row["max_change"] = {"tensor": name_of(d), "ratio": ratio}


_INIT = "torch.nn.init."  # initialisation, not a change of what the model learnt


def _updates(G, steps, rows) -> None:
    """Each step's largest update-to-weight ratio: ``|w' - w| / |w|`` of the updates
    (tensor attribute ``update``) its ops made; a weight of norm 0 has no ratio."""
    N, pred = G._node, G._pred
    for b, d in N.items():
        upd = d.get("update")
        if not upd or d.get("kind") != "tensor":
            continue
        op = next((e.get("op") for keyed in pred[b].values() for e in keyed.values()
                   if e.get("kind") == "next_version"), None)
        a = upd.get("from")
        if op not in steps.step_of or N[op]["name"].startswith(_INIT) or a not in N or _uninitialised(G, a):
            continue
        norm, weight = _norm(upd.get("stats")), _norm(N[a].get("stats"))
        if norm is None or not weight:
            continue
        ratio = norm / weight if math.isfinite(weight) else math.nan
        row = rows[steps.step_of[op]]
        best = row["max_update"]
        if best is None or _above(ratio, best["ratio"]):
            row["max_update"] = {"tensor": name_of(d), "ratio": ratio, "norm": norm}


def _above(a: float, b: float) -> bool:
    """``a > b``, NaN above everything: an update that made a weight NaN is the largest."""
    return a != a or (b == b and a > b)


def _uninitialised(G, t) -> bool:
    """Whether tensor version ``t`` is what ``torch.empty`` returned, or the first version
    of a tensor on that memory (``nn.Parameter(torch.empty(...))``): its first write is
    initialisation, whatever the garbage's norm."""
    if _made_by_empty(G, t):
        return True
    d = G._node[t]
    sid = d.get("storage")
    if d.get("version") != 0 or sid not in G._pred:
        return False
    return any(u != t and G._node[u].get("version") == 0 and _made_by_empty(G, u) for u in G._pred[sid])


def _made_by_empty(G, t) -> bool:
    return any(G._node[u].get("name") in UNINITIALISED and any(e.get("kind") == "output" for e in keyed.values())
               for u, keyed in G._pred[t].items())


def _learning_rates(G, steps, rows) -> None:
    """Each step's learning rates: per param group, of each optimizer's last step in it."""
    N = G._node
    last: dict = {}  # step -> {optimizer: lrs}
    for d in sorted((d for d in N.values() if d.get("kind") == "optimizer_step"), key=lambda d: d["seq"]):
        k = _step_ended_by(steps, d)
        if k is not None and isinstance(d.get("lr"), list):
            last.setdefault(k, {})[d.get("optimizer")] = d["lr"]
    for k, by_optimizer in last.items():
        rows[k]["lr"] = [v for n in sorted(by_optimizer, key=str) for v in by_optimizer[n]]


def _step_ended_by(steps, d):
    """The step an optimizer step or a scaler update (node attributes ``d``) ended: the
    step of the op before it (the update's own last op), or None."""
    return steps.step_of.get(f"op:{d['seq'] - 1}")


def _loss_scales(updates, steps, rows) -> None:
    """Each step's loss scale: the scale of its last ``GradScaler.update`` (of
    ``updates``) and whether the scaler skipped that update."""
    for d in updates:
        k = _step_ended_by(steps, d)
        if k is not None:
            rows[k]["scaler"] = {"scale": d.get("scale"), "skipped": d.get("skipped")}
    for row in rows.values():  # the gradients the backward calls left were scaled
        scale = (row.get("scaler") or {}).get("scale")
        if scale and math.isfinite(scale) and row["grad_norm"] is not None:
            row["grad_norm"] /= scale
            if row["max_grad"]:
                row["max_grad"]["norm"] /= scale


def _nonfinite(G, steps, rows) -> None:
    """How many tensor versions each step made with a NaN or an Inf (not counting
    uninitialised memory: ``torch.empty``'s garbage may hold either)."""
    N, pred = G._node, G._pred
    for t, d in N.items():
        st = d.get("stats")
        if not st or not (st.get("nan") or st.get("inf")) or d.get("kind") != "tensor":
            continue
        op = next((u for u, keyed in pred[t].items() if u in steps.step_of
                   and any(e.get("kind") == "output" for e in keyed.values())), None)
        if op is None or N[op]["name"] in UNINITIALISED:
            continue
        row = rows[steps.step_of[op]]
        row["nan"] += 1 if st.get("nan") else 0
        row["inf"] += 1 if st.get("inf") else 0


def step_rows(G) -> list:
    """Return one row per step of trace ``G`` (see the module text), in step order: the
    rows of the steps a ``--last N`` trace no longer holds (graph attribute
    ``earlier_steps``), then those of its graph; none of its graph when it has neither a
    backward call nor a ``gradtrace.step()`` mark (its one step is the whole program,
    which the summary already describes)."""
    earlier = list(G.graph.get("earlier_steps") or ())  # --last: the steps not kept
    if not any(d.get("kind") == "backward" or d.get("category") == MARK for d in G._node.values()):
        return earlier
    steps = find_steps(G, data=False)
    offset = first_step(G, steps) - 1
    if earlier:  # what ran before the last dropped row's last op is in that row
        cut = earlier[-1]["last_seq"]
        steps.step_of = {n: k for n, k in steps.step_of.items() if G._node[n]["seq"] > cut}
    rows = _rows(G, steps)
    updates = scaler_updates(G)
    _backward_figures(G, steps, rows, bool(updates))
    _changes(G, steps, rows)
    _updates(G, steps, rows)
    _learning_rates(G, steps, rows)
    _loss_scales(updates, steps, rows)
    _nonfinite(G, steps, rows)
    for r in rows.values():
        r["step"] += offset
    return earlier + [rows[k] for k in sorted(rows)]

