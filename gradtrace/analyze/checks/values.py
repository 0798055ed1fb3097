"""GT110: the first NaN or Inf, in forward and in backward."""

from __future__ import annotations

import os

from ...graph.query import UNINITIALISED
from ..scaling import RAN, RECOVERED, is_scaled_product, scaler_note, scaler_updates
from . import fixes as fx
from .findings import code_of, finding, has_bad, register, statement_of, stats_text
from .history import turn_before

__all__ = []



@register(
    "GT110", "error", "first NaN or Inf",
    "y = torch.log(x - 1)  # x has a 1: the first -inf, and NaN where x < 1",
    "The first op whose output has NaN/Inf while its inputs had none is where the bad values "
    "came from; everything after it only propagates them. In backward, the first gradient with "
    "NaN/Inf (nearest the loss) names the op whose derivative produced it.",
    "Guard the op's domain (clamp before log/sqrt/div, add an epsilon), lower the learning rate, "
    "or use a numerically stable form (log_softmax, logsumexp, BCEWithLogits). When an update blew a "
    "parameter up, or the gradient norm jumped a hundredfold, before the first NaN, the finding names "
    "that step instead: the cause, not where the NaN surfaced.",
)
def _gt110(q):
    def has(s, what):
        return any(has_bad(s, w) for w in what)

    # Forward: the first op whose output has NaN (error) / Inf (warning) from finite inputs,
    # where the bad values go on to matter: a -inf mask that softmax turns into zeros, or a
    # log of 0 on the branch torch.where throws away, is deliberate and goes nowhere.
    firsts = {}
    updates = scaler_updates(q.G)
    kept = q.G.graph.get("values", "stats") != "none"
    for what in ("nan", "inf") if kept else ():
        for op in _made_bad(q, what):
            d = q.N[op]
            if d.get("phase") == "backward" or d["category"] in ("backward", "grad_mode") \
                    or d["name"] in UNINITIALISED or what in (d.get("args") or "").lower():
                continue  # uninitialised memory, or the value was passed in (a -inf mask)
            bad = [t for t in q.outputs(op) if has_bad(q.N[t].get("stats"), what)]
            ins = q.inputs(op)
            if bad and not any(q.N[t].get("stats") is None or has(q.N[t]["stats"], ("nan", "inf")) for t in ins) \
                    and any(_matters(q, t) for t in bad):
                firsts.setdefault(op, []).append((what, bad[0]))
                break
    for op, hits in sorted(firsts.items(), key=lambda kv: q.seq(kv[0])):
        d, t = q.N[op], hits[0][1]
        kinds = " and ".join("NaN" if w == "nan" else "Inf" for w, _ in hits)
        ins = q.inputs(op)
        ins_text = "; ".join(f"{q.name(i)}: {stats_text(q.N[i].get('stats'))}" for i in ins[:4])
        mod = f" in module {d['module']}" if d.get("module") else ""
        turn = turn_before(q, q.seq(op))
        handled, note = _scaling(q, updates, op)
        yield finding(q, "GT110",
                 f"first {kinds} in forward: {d['name']} ({q.where(op)}){mod} made {q.name(t)} "
                 f"({stats_text(q.N[t].get('stats'))}) from finite inputs" + (f" ({ins_text})" if ins_text else "")
                 + _before(turn) + note,
                 [(op, "first " + kinds)] + _turn_ops(turn), [(t, kinds)] + [(i, "input") for i in ins] + _turn_tensors(turn),
                 severity="info" if handled else "error" if hits[0][0] == "nan" else "warning",
                 fix=_SCALED_FIX if handled else turn.fix if turn else _nan_fix(q, op))
    # Backward: in the first call with one, the bad gradient nearest the loss.
    seen = set()
    for what in ("nan", "inf"):
        for bw in q.backwards:
            bad = [(t, d) for t, d in q.out["grad"][bw] if q.kind_of(t) == "tensor" and has_bad(d.get("stats"), what)]
            if not bad:
                continue
            t, gd = max(bad, key=lambda x: q.seq(q.producer(x[0])) if q.producer(x[0]) else -1)
            if (bw, t) in seen:
                break
            seen.add((bw, t))
            p = q.producer(t)
            c = next((o for o in q.uses(q.N[t]["tid"]) if q.N[o].get("grad_enabled", True)
                      and q.N[o]["category"] not in ("backward", "grad_mode") and q.seq(o) > q.seq(p)), None)
            bop = q.N[bw].get("op")
            kinds = " and ".join(k for k, w in (("NaN", "nan"), ("Inf", "inf")) if has_bad(gd.get("stats"), w))
            at = f", made by the derivative of {q.N[c]['name']} ({q.where(c)})" if c else ""
            turn = turn_before(q, q.bw_seq(bw))
            handled, note = _scaling(q, updates, bop)
            yield finding(q, "GT110",
                     f"first {kinds} in backward (call at {q.where(bop)}): the gradient reaching "
                     f"{q.name(t)} ({stats_text(gd.get('stats'))}){at}" + _before(turn) + note,
                     ([(c, "derivative")] if c else []) + ([(p, "produced")] if p else []) + [(bop, "backward")]
                     + _turn_ops(turn), [(t, "bad gradient")] + _turn_tensors(turn), [bw],
                     severity="info" if handled else "error" if what == "nan" else "warning",
                     fix=_SCALED_FIX if handled else turn.fix if turn else (_nan_fix(q, c) if c else None))
            break


_SCALED_FIX = ("nothing to fix: the loss scaler skips an update whose scaled gradients overflow and lowers the "
               "scale (a smaller init_scale skips fewer updates at the start)")


def _scaling(q, updates, op) -> tuple:
    """``(handled, text)``: whether a loss scaler handled a NaN/Inf made at ``op`` (it
    skipped the update after it and ran later ones, or ``op`` is its own scaled product
    and the update ran), and what the finding says of it ("" in a program that scales
    no loss)."""
    if not updates or op is None:
        return False, ""
    note = scaler_note(updates, q.seq(op))
    if note is None:
        return False, ""
    outcome, text = note
    return outcome == RECOVERED or (outcome == RAN and is_scaled_product(q.N[op])), f"; {text}"


def _before(turn) -> str:
    return f"; before it, {turn.text}" if turn else ""


def _turn_ops(turn) -> list:
    return [(turn.op, "left its course")] if turn and turn.op else []


def _turn_tensors(turn) -> list:
    return [(turn.tensor, "blew up")] if turn and turn.tensor else []


def _matters(q, t) -> bool:
    """True when the NaN/Inf in tensor ``t`` reaches something: a backward call's root, a
    value the program reads (``.item()``, ``print``), or the end of its data flow (a
    result no op uses). False when every op that reads it, and every bad value made from
    it, gives finite values (a mask's -inf that softmax turns into zeros)."""
    stack, seen, roots = [t], set(), q.inn["weights"]
    while stack and len(seen) < 4096:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in roots:
            return True
        users = q.consumers(t)
        nxt = [v for v, _ in q.out["next_version"].get(t, ())]
        if not users and not nxt:
            return True
        for c in users:
            outs = q.outputs(c)
            if not outs and q.N[c]["category"] not in ("backward", "grad_mode"):
                return True  # read out of torch: the program has the bad value
            stack.extend(o for o in outs if has_bad(q.N[o].get("stats"), "nan") or has_bad(q.N[o].get("stats"), "inf"))
        stack.extend(v for v in nxt if has_bad(q.N[v].get("stats"), "nan") or has_bad(q.N[v].get("stats"), "inf"))
    return len(seen) >= 4096


def _made_bad(q, what):
    """The ops with an output whose statistics count ``what`` (``nan``/``inf``), in call
    order: the only ops the forward search needs to look at, found from the few bad
    tensors rather than by walking every op of a long trace."""
    bad = getattr(q, "_bad_tensors", None)
    if bad is None:  # one pass over the nodes for both kinds
        bad = q._bad_tensors = {"nan": [], "inf": []}
        for t, d in q.N.items():
            s = d.get("stats")
            if s and (s.get("nan") or s.get("inf")) and d.get("kind") == "tensor":
                for w in ("nan", "inf"):
                    if s.get(w):
                        bad[w].append(t)
    found = {op for t in bad[what] for op, keyed in q._pred[t].items()
             if q.N[op].get("kind") == "op" and any(e.get("kind") == "output" for e in keyed.values())}
    return sorted(found, key=q.seq)


def _nan_fix(q, op):
    d = q.N[op]
    if d.get("lib_file"):
        lib = f"{os.path.basename(d['lib_file'])}:{d.get('lib_line')}"
        return (f"{d['name']} runs inside library code ({lib}), reached from {statement_of(q, op)} ({q.where(op)}): "
                "check what your code passes to it (NaN/Inf or out-of-range inputs, a learning rate, a "
                "loss scale) rather than the library's line")
    new = fx.guarded(code_of(q, op), q.N[op]["name"])
    if new:
        return f"`{new}` keeps {q.N[op]['name']} away from 0 ({q.where(op)})"
    return (f"guard the domain of {q.N[op]['name']} in {statement_of(q, op)} ({q.where(op)}): clamp its input, add "
            "an epsilon, or use a stable form (log_softmax, logsumexp, BCEWithLogits)")


