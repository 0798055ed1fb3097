"""Where a run left its course before its first NaN or Inf.

The op where a NaN surfaces is rarely its cause in a training run: a learning rate
raised a millionfold makes the next update blow the weights up, the next forward pass
overflows, and the NaN appears in an innocent ``linear``. Walking back through the
run, two events mark the turn, whichever came first:

- an update (a write of a parameter after the first backward call) that multiplied its
  norm by :data:`JUMP` or more, or made it NaN or Inf (the op, its line, the backward
  call it followed);
- a backward call whose gradient norm (the leaves' ``.grad`` after it) is :data:`JUMP`
  times or more the median of the calls before it.

An update that blew a parameter up is named with the learning rate its optimizer step
used when that was raised tenfold or more since the optimizer's previous step.

A run kept with ``--last N`` holds its older steps as rows only (graph attribute
``earlier_steps``): the walk starts there, with the same two marks read from the rows,
and names the step (its ops are gone).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["JUMP", "Turn", "turn_before"]

JUMP = 100.0  # a change by this factor in one step is no longer training's own course
_MIN_CALLS = 3  # backward calls before one whose gradient norm can be called a jump
_LR_JUMP = 10.0  # a learning rate raised this much between two steps is named as the cause


@dataclass
class Turn:
    """Where the run left its course: the op (an update, or a backward call's op; None
    in a step the trace no longer holds), its call order, the text of what happened, and
    the fix that speaks to it."""

    op: str | None
    seq: int
    text: str
    fix: str
    tensor: str | None = None


def _norm(d):
    s = d.get("stats") if d else None
    v = s.get("norm") if s else None
    return v if isinstance(v, (int, float)) else None


def _bad(s) -> bool:
    return bool(s) and bool(s.get("nan") or s.get("inf"))


def _after_call(q, seq) -> str:
    """``after backward call bw:N`` for the last backward call before op ``seq``, or ""."""
    last = None
    for bw in q.backwards:
        if q.bw_seq(bw) < seq:
            last = bw
        else:
            break
    return f" after backward call {last}" if last else ""


def _update_turn(q, before: int):
    """The first update (after the first backward call, before op ``before``) that blew
    a parameter up, as a Turn; initialisation (``torch.empty`` then ``kaiming_uniform_``)
    is no update."""
    if not q.backwards:
        return None
    start = q.bw_seq(q.backwards[0])
    best = None
    for tid, versions in q.versions.items():
        if len(versions) < 2 or q.N[versions[0]].get("param_kind") != "parameter":
            continue
        for a, b in zip(versions, versions[1:]):
            op = next((e.get("op") for v, e in q.out["next_version"].get(a, ()) if v == b), None)
            if op is None or op not in q.N or not start < q.seq(op) < before or (best and q.seq(op) >= best[0]):
                continue
            na, nb = _norm(q.N[a]), _norm(q.N[b])
            if na is None or nb is None or not math.isfinite(na):
                continue
            blown = not math.isfinite(nb) or _bad(q.N[b].get("stats"))
            if blown or (na > 0 and nb / na >= JUMP):
                best = (q.seq(op), op, b, na, nb)
                break
    if best is None:
        return None
    seq, op, t, na, nb = best
    d = q.N[op]
    factor = "to NaN/Inf" if not math.isfinite(nb) or _bad(q.N[t].get("stats")) else f"by {nb / na:.3g}"
    args = f" (arguments: {d['args']})" if d.get("args") else ""
    where = f"{d['name']} at {q.where(op)}{_after_call(q, seq)}"
    raised = _lr_raised(q, seq)
    text = f"the update {where} changed {q.name(t)}'s norm {factor} ({na:.4g} -> {nb:.4g}){args}" + (
        f"; at this step {raised}" if raised else "")
    return Turn(op, seq, text, _update_fix(f"{where} ({_statement(q, op)})", f"at this step {raised}" if raised
                                           else None), t)


def _update_fix(where: str, raised) -> str:
    """The fix of a turn at the update ``where``; ``raised``: the learning rate raised there."""
    why = raised or "or find what raised it before this step: a scheduler, an edit of param_groups, a loss scale"
    return (f"the run left its course at the update {where}, not where the NaN surfaced: lower the learning "
            f"rate ({why}), or clip gradients before the step (torch.nn.utils.clip_grad_norm_)")


def _gradient_fix(where: str) -> str:
    """The fix of a turn at a gradient that jumped in ``where``."""
    return (f"the run left its course in {where}, not where the NaN surfaced: clip gradients "
            "(torch.nn.utils.clip_grad_norm_) or lower the learning rate, and look at what "
            "changed in the step before it (its data, the learning rate, a loss scale)")


def _lr_raised(q, seq: int):
    """``SGD's learning rate (param group 0) went from 0.01 to 1e+06`` when the
    optimizer step that ran the update at op ``seq`` had a learning rate ten times or
    more its previous step's, else None."""
    steps = sorted((d for d in q.N.values() if d.get("kind") == "optimizer_step"), key=lambda d: d["seq"])
    after = next((i for i, d in enumerate(steps) if d["seq"] > seq), None)
    if after is None:
        return None
    d = steps[after]
    prev = next((p for p in reversed(steps[:after]) if p.get("optimizer") == d.get("optimizer")), None)
    raised = _raised(prev.get("lr") if prev else None, d.get("lr"))
    return f"{d.get('type') or 'the optimizer'}'s {raised}" if raised else None


def _raised(before, after):
    """``learning rate (param group 0) went from 0.01 to 1e+06`` when a param group's
    learning rate in ``after`` is ten times or more that in ``before`` (lists), else None."""
    if not isinstance(before, list) or not isinstance(after, list):
        return None
    for g, (a, b) in enumerate(zip(before, after)):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 and b / a >= _LR_JUMP:
            return f"learning rate (param group {g}) went from {a:.4g} to {b:.4g}"
    return None


def _gradient_turn(q, before: int):
    """The first backward call (before op ``before``) whose gradient norm jumped, as a Turn."""
    earlier = []
    for bw in q.backwards:
        seq = q.bw_seq(bw)
        if seq >= before:
            return None
        grads = q.out["leaf_grad"].get(bw, ())
        norms = [_norm(e) for _, e in grads]
        if not norms or None in norms:
            continue
        total = math.hypot(*norms)
        if len(earlier) >= _MIN_CALLS:
            med = statistics.median(earlier)
            if not math.isfinite(total) or (med > 0 and total / med >= JUMP):
                t, top = max(grads, key=lambda x: _norm(x[1]) if math.isfinite(_norm(x[1])) else math.inf)
                op = q.N[bw].get("op")
                where = f"backward call {bw} at {q.where(op)}"
                text = (f"the gradient norm jumped to {total:.4g} in {where} (median of the calls before: "
                        f"{med:.4g}), most of it in {q.name(t)}'s gradient (norm {_norm(top):.4g})")
                return Turn(op, seq, text, _gradient_fix(where), t)
        earlier.append(total)
    return None


def _statement(q, op) -> str:
    code = q.N[op].get("code")
    return f"`{code}`" if code else q.N[op]["name"]


def turn_before(q, seq: int):
    """Return the :class:`Turn` where the run first left its course before op ``seq``
    (an update that blew a parameter up, or a jump of the gradient norm, whichever came
    first), or None when nothing did (the NaN has a cause of its own there)."""
    if q.G.graph.get("values", "stats") == "none":
        return None
    dropped = _row_turn(q.G.graph.get("earlier_steps") or ())
    if dropped is not None:
        return dropped
    found = [t for t in (_update_turn(q, seq), _gradient_turn(q, seq)) if t is not None]
    return min(found, key=lambda t: t.seq) if found else None


def _row_turn(rows):
    """The first step row (of the steps a ``--last N`` trace no longer holds) whose
    gradient norm jumped :data:`JUMP` times over the median of the steps before, or
    whose update multiplied a parameter's norm by as much (the backward call comes first
    in a step), as a Turn; or None."""
    norms = []
    for i, row in enumerate(rows):
        turn = _row_gradient_turn(row, norms) or _row_update_turn(rows[i - 1] if i else None, row)
        if turn is not None:
            return turn
        if isinstance(row.get("grad_norm"), (int, float)):
            norms.append(row["grad_norm"])
    return None


def _row_gradient_turn(row, norms):
    total, step = row.get("grad_norm"), row.get("step")
    if not isinstance(total, (int, float)) or len(norms) < _MIN_CALLS:
        return None
    med = statistics.median(norms)
    if math.isfinite(total) and not (med > 0 and total / med >= JUMP):
        return None
    top = (row.get("max_grad") or {}).get("tensor")
    text = (f"the gradient norm jumped to {total:.4g} in step {step} (median of the steps before: {med:.4g})"
            + (f", most of it in {top}'s gradient" if top else "") + " (the step is no longer kept: --last)")
    return Turn(None, row.get("first_seq") or 0, text, _gradient_fix(f"step {step}"))


def _row_update_turn(before, row):
    change, step = row.get("max_change"), row.get("step")
    ratio = change.get("ratio") if change else None
    if not isinstance(ratio, (int, float)) or (math.isfinite(ratio) and ratio + 1 < JUMP):
        return None
    raised = _raised((before or {}).get("lr"), row.get("lr"))
    raised = f"the {raised}" if raised else None
    factor = "to NaN/Inf" if not math.isfinite(ratio) else f"by {ratio + 1:.3g}"
    text = (f"the update of step {step} changed {change.get('tensor')}'s norm {factor} (step {step} is no "
            "longer kept: --last)" + (f"; at this step {raised}" if raised else ""))
    return Turn(None, row.get("last_seq") or 0, text,
                _update_fix(f"of step {step}", f"at step {step} {raised}" if raised else None))
