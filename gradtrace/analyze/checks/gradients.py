"""GT106, GT107, GT108, GT112: where gradients went, decided from what autograd did in
the run (which leaf a gradient reached, what was in .grad when an update used it)."""

from __future__ import annotations

import bisect
import linecache
import re
from collections import defaultdict

from . import fixes as fx
from .findings import WRITES, code_of, finding, names_of, register, statement_of
from .graph import plain_name

__all__ = []

_CUTS = {"Tensor.detach": "detach()", "torch.detach": "detach()", "Tensor.data": ".data"}


def _rg(q, t):
    return bool(q.N[t].get("requires_grad"))


def _acc_of(q):
    """tid -> its AccumulateGrad node."""
    acc = getattr(q, "_acc", None)
    if acc is None:
        acc = q._acc = {q.N[t]["tid"]: fn for fn, t, _ in q.edges["accumulates"]}
    return acc


def _attached_later(q, c, fn):
    """True when the autograd node ``fn`` of op ``c``'s output has a next function that none
    of ``c``'s recorded inputs explains: an input was attached to autograd after the op that
    made it ran (the output of a custom ``autograd.Function``, whose forward runs under
    no_grad by design, or of reentrant checkpointing), so it is no cut."""
    acc = _acc_of(q)
    ins = q.inputs(c)
    tids = {q.N[u]["tid"] for u in ins}
    explained = {q.N[u].get("grad_fn") for u in ins} | {acc.get(t) for t in tids}
    # Autograd nodes inside a composite op (the TBackward0 of F.linear's weight) lead back to
    # the op's own inputs; an attached input's node leads to tensors the op never read.
    owner = _fn_owner(q)
    stack = [v for v, _ in q.out["next"].get(fn, ()) if v not in explained]
    seen = set()
    while stack and len(seen) < 256:
        f = stack.pop()
        if f in seen or f in explained:
            continue
        seen.add(f)
        t = owner.get(f)
        if t is not None and t not in tids:
            return True
        stack.extend(v for v, _ in q.out["next"].get(f, ()))
    return False


def _fn_owner(q):
    """autograd node -> the tid of the tensor it made (or, for AccumulateGrad, its leaf)."""
    own = getattr(q, "_owner", None)
    if own is None:
        own = {fn: q.N[t]["tid"] for fn, t, _ in q.edges["accumulates"]}
        for n, d in q.N.items():
            if d.get("kind") == "tensor" and d.get("grad_fn"):
                own.setdefault(d["grad_fn"], d["tid"])
        q._owner = own
    return own


def _users_no_grad(q, op) -> bool:
    """True when gradients are off at ``op`` because the user's code turned them off (a
    ``with torch.no_grad():`` of the user's); library code that turns them off for its
    own work (spectral norm's power iteration, an optimizer) is not recorded as a mode op."""
    g = _grad_off_at(q, op)
    return g is not None and not q.N[g].get("grad_enabled", True)


def _grad_off_at(q, op):
    """The grad_mode op (``torch.no_grad``, ``inference_mode``) in effect at ``op``, or None."""
    i = bisect.bisect_left([q.seq(g) for g in q.mode_ops], q.seq(op))
    return q.mode_ops[i - 1] if i else None


@register(
    "GT106", "warning", "gradient path cut by no_grad, .data or detach",
    "y1 = x ** 2\nwith torch.no_grad(): y2 = x ** 3\n(y1 + y2).backward()  # x.grad is 2, not 5",
    "The tensor was computed from tensors that require grad, but with gradient recording off "
    "(no_grad, `.data`, `detach()`); it is then used in a loss that is differentiated, so "
    "backward treats it as a constant and the gradient through it is missing. Not reported: a "
    "whole module called under no_grad (a teacher, a target network, an EMA copy), no_grad that "
    "library code turns on for its own work (spectral norm's power iteration), the forward "
    "of a custom `autograd.Function` and reentrant checkpointing (their outputs are attached to "
    "autograd afterwards), and `torch.func` transforms.",
    "Compute it with gradients on (outside `no_grad`, without `.data`/`detach()`), or keep the "
    "cut if the constant is deliberate (a target, a baseline).",
)
def _gt106(q):
    if not q.backwards:
        return
    cuts = []
    for op in q.ops:
        d = q.N[op]
        if d.get("phase") == "backward" or d["category"] in WRITES + ("backward", "grad_mode"):
            continue
        how = _CUTS.get(d["name"]) or (None if d.get("grad_enabled", True) else "no_grad")
        if how is None or (how == "no_grad" and (d.get("module") or not _users_no_grad(q, op))) \
                or (how != "no_grad" and d.get("direct") is False):
            continue  # no cut; a module run as a constant; library code (deepcopy, clipping, power iteration)
        if any(_rg(q, t) for t in q.inputs(op)):
            cuts.append((op, how))
    if not cuts:
        return
    first_join = _first_joins(q, [t for op, _ in cuts for t in q.outputs(op)])
    for op, how in cuts:
        d = q.N[op]
        hits = [(t, first_join[t]) for t in q.outputs(op) if first_join.get(t)]
        if not hits:
            continue
        cut, (j, o, bw) = hits[0]
        bop = q.N[bw].get("op")
        yield finding(q, "GT106",
                 f"{q.name(cut)} was computed from tensors that require grad under {how} "
                 f"({d['name']}, {q.where(op)}) and then used in {q.N[j]['name']} ({q.where(j)}), "
                 f"which the backward call at {q.where(bop)} differentiates: no gradient flows through it",
                 [(op, f"cut by {how}"), (j, "joins the graph"), (bop, "backward")],
                 [(cut, "cut"), (o, "differentiated")] + [(t, "requires grad") for t in q.inputs(op) if _rg(q, t)],
                 [bw], severity="info" if how == "detach()" else None, fix=_cut_fix(q, op, how))


def _first_joins(q, starts):
    """For each value reachable from ``starts`` through values that do not require grad:
    (op, output, backward) where it, or a value computed from it without grad, first joins
    a graph that a later backward call differentiates, or None. Only the part of the
    graph reachable from ``starts`` is visited."""
    reach, stack = set(), [t for t in starts if not _rg(q, t)]
    while stack:
        t = stack.pop()
        if t in reach:
            continue
        reach.add(t)
        for c in q.consumers(t):
            stack.extend(o for o in q.outputs(c) if not _rg(q, o) and o not in reach)
    # Latest first, so each value's consumers are settled before it.
    first_join = {}
    for o in sorted(reach, key=lambda t: -q.seq(q.producer(t))):
        found = None
        for c in q.consumers(o):
            cd = q.N[c]
            for o2 in q.outputs(c):
                if not _rg(q, o2):
                    hit = first_join.get(o2)
                elif cd.get("grad_enabled", True) and cd["category"] not in WRITES and q.N[o2].get("grad_fn") \
                        and not _attached_later(q, c, q.N[o2]["grad_fn"]):
                    bw = q.backward_after(cd["seq"], q.N[o2]["grad_fn"])
                    hit = (c, o2, bw) if bw is not None else None
                else:
                    hit = None
                if hit and (found is None or q.seq(hit[0]) < q.seq(found[0])):
                    found = hit
        first_join[o] = found
    return first_join


def _cut_fix(q, op, how):
    code = code_of(q, op)
    if how == ".data":
        new, const = fx.drop_data(code), fx.detach_instead_of_data(code)
        if new:
            return f"`{new}` lets the gradient through; if a constant is meant, `{const}` says so"
    if how == "detach()":
        return (f"drop `.detach()` from {statement_of(q, op)} ({q.where(op)}) if the gradient should flow; "
                "keep it for a deliberate stop-gradient (a target, a truncated history)")
    g = _grad_off_at(q, op)
    block = f"the `{fx.statement(code_of(q, g)) or 'torch.no_grad()'}` block at {q.where(g)}" if g else "no_grad"
    return (f"compute {statement_of(q, op)} ({q.where(op)}) outside {block} so the gradient flows; "
            "if a constant is meant, compute it with gradients on and `.detach()` it to say so")


def _feeding(q, bws):
    """The tensor versions a backward call's roots were computed from, following data (not
    autograd), and stopping at leaves that require grad: a parameter made from another
    (a deep copy, a reload) does not pass its gradient on."""
    stack = [t for b in bws for t, _ in q.out["weights"].get(b, ())]
    seen = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        d = q.N[t]
        if d.get("is_leaf") and d.get("requires_grad") and len(seen) > 1:
            continue
        p = q.producer(t)
        if p is None or q.N[p].get("category") in ("backward", "grad_mode") or q.N[p].get("phase") == "backward" \
                or q.N[p]["name"].startswith("Tensor.requires_grad"):
            continue  # freezing a parameter is no use of its values
        stack.extend(u for u in q.inputs(p) if u not in seen)
    return seen


def _first_cut(q, starts, feeds):
    """The first op on the way from ``starts`` to a backward root where a value that
    requires grad gives one that does not, or None."""
    stack, seen, cuts = list(starts), set(starts), []
    while stack:
        t = stack.pop()
        for c in q.consumers(t):
            for o in q.outputs(c):
                if o not in feeds or o in seen:
                    continue
                seen.add(o)
                if _rg(q, o):
                    stack.append(o)
                else:
                    cuts.append(c)
    return min(cuts, key=q.seq) if cuts else None


def _why_cut(q, c):
    d = q.N[c]
    if d["name"] in _CUTS:
        return f"through {_CUTS[d['name']]}"
    if not d.get("grad_enabled", True):
        return "under no_grad"
    return f"through {d['name']}, which has no derivative"


@register(
    "GT107", "warning", "a tensor requiring grad that no backward call reached",
    "w = torch.ones(3, requires_grad=True)\nwith torch.no_grad(): y = w * 2\n... loss.backward()  # w.grad is None",
    "A leaf that requires grad (a parameter) was used to compute a loss that was differentiated, "
    "but no gradient reached it: the path was cut (no_grad, `.data`, `detach()`, an op without a "
    "derivative such as a comparison or `argmax`), so its `.grad` stays None and an optimizer "
    "will not update it. Parameters that need no gradient are not warned about: frozen ones "
    "(requires_grad False when backward ran), ones used only by modules run under no_grad or "
    "inference_mode (teacher, target and EMA networks, evaluation), ones not used before the last "
    "backward call, and templates a container deep-copied (`nn.TransformerEncoder(layer, n)`); "
    "one info finding counts them.",
    "Make sure the parameter takes part in the loss with gradients on (no `no_grad`, `.data` or "
    "`detach()` on its path), or freeze it explicitly (`requires_grad_(False)`).",
)
def _gt107(q):
    bws = [b for b in q.backwards if not q.N[b].get("error")]
    if not bws:
        return
    got = {q.N[t]["tid"] for k in ("grad", "leaf_grad") for _, t, _ in q.edges[k] if q.kind_of(t) == "tensor"}
    acc = _acc_of(q)
    reached = set().union(*(q.reach(b) for b in bws))
    todo = []
    for tid, vs in q.versions.items():
        if tid in got or (tid in acc and acc[tid] in reached):
            continue
        leaves = [n for n in vs if q.N[n].get("is_leaf") and q.N[n].get("requires_grad")]
        if leaves and not q.out["view_of"].get(vs[0]) and not _empty(q, vs[0]):
            todo.append((tid, vs, leaves))  # (a view's gradient goes to its base)
    if not todo:
        return
    feeds = _feeding(q, bws)
    cut_at, quiet = defaultdict(list), defaultdict(list)  # cut op -> leaves; why quiet -> leaves
    for tid, vs, leaves in todo:
        fed = [n for n in vs if n in feeds]
        if not fed:
            # A plain tensor the user made and did not use is no news; a parameter is, and so
            # is one only library code touched (a template a container deep-copied).
            if q.is_param(tid):
                quiet["unused"].append(leaves[0])
            elif not any(q.N[o].get("direct") is not False for o in q.uses(tid)):
                quiet["copied"].append(leaves[0])
            continue
        fed_rg = [n for n in fed if _rg(q, n)]
        if not fed_rg:
            quiet["frozen"].append(leaves[0])
            continue
        c = _first_cut(q, fed_rg, feeds)
        if c is None:
            continue  # nothing in the trace says why: say nothing
        if not q.N[c].get("grad_enabled", True) and q.N[c].get("module"):
            quiet["inference"].append(leaves[0])
        elif q.N[c].get("direct") is False and q.N[c]["name"] in _CUTS:
            quiet["copied"].append(leaves[0])
        else:
            cut_at[c].append(fed_rg[0])
    last = q.N[max(bws, key=q.bw_seq)].get("op")
    for c, ts in sorted(cut_at.items(), key=lambda kv: q.seq(kv[0])):
        names = names_of(q, ts)
        why = _why_cut(q, c)
        what = "parameter" if all(q.is_param(q.N[t]["tid"]) for t in ts) else "tensor"
        msg = (f"{what}{'s' if len(ts) > 1 else ''} {names} require{'' if len(ts) > 1 else 's'} grad and "
               f"{'were' if len(ts) > 1 else 'was'} used to compute a differentiated loss, but no gradient "
               f"reached {'them' if len(ts) > 1 else 'it'}: the path goes {why} at {statement_of(q, c)} ({q.where(c)})")
        one = plain_name(q.name(ts[0]))
        fix = (f"compute {statement_of(q, c)} ({q.where(c)}) with gradients on"
               + (" and without the cut" if q.N[c]["name"] in _CUTS else "")
               + f" if {names} should train; if not, freeze {'them' if len(ts) > 1 else 'it'} with "
               f"`{one}.requires_grad_(False)` so the intent is explicit")
        if "no derivative" in why:
            fix = (f"{statement_of(q, c)} ({q.where(c)}) has no gradient: use a differentiable surrogate "
                   f"(e.g. `torch.sigmoid` for a threshold, a straight-through estimator) if {names} should "
                   f"train, or freeze {'them' if len(ts) > 1 else 'it'} with `{one}.requires_grad_(False)`")
        yield finding(q, "GT107", msg, [(c, "cut"), (last, "backward")], [(t, "no gradient") for t in ts], fix=fix)
    # A custom autograd.Function (reentrant checkpointing among them) delivers gradients the
    # trace does not see: what looks like "no gradient" there may have had one.
    custom = any(_CUSTOM_FN.search(q.N[fn].get("name") or "") for fn in reached)
    if quiet and not custom:
        yield _quiet_summary(q, quiet)


def _empty(q, t) -> bool:
    """True for a tensor with no elements: nothing in it could learn (checkpoint's
    ``torch.empty((0,), requires_grad=True)`` that only links its autograd node)."""
    shape = q.N[t].get("shape")
    return isinstance(shape, list) and 0 in shape


_CUSTOM_FN = re.compile(r"[a-z]Backward$")
_QUIET = (("frozen", "frozen (requires_grad False when backward ran)"),
          ("inference", "used only by modules run under no_grad or inference_mode"),
          ("unused", "not used on the way to any backward call's loss"),
          ("copied", "made and used only by library code (e.g. a layer template a container deep-copied, "
                     "a weight replaced by a tied one)"))



def _quiet_summary(q, quiet):
    total = sum(len(v) for v in quiet.values())
    parts = [f"{len(quiet[k])} {text} ({names_of(q, quiet[k], 2)})" for k, text in _QUIET if quiet.get(k)]
    firsts = [t for k, _ in _QUIET for t in quiet.get(k, ())[:1]]
    first_use = []
    for t in firsts:
        o = next(iter(q.uses(q.N[t]["tid"])), None)
        if o is not None:
            first_use.append(o)
    return finding(q, "GT107", f"{total} tensor{'s' if total != 1 else ''} requiring grad got no gradient and "
              f"need none: " + "; ".join(parts),
              [(o, "first use") for o in sorted(first_use, key=q.seq)[:1]], [(t, "no gradient") for t in firsts],
              severity="info", fix="nothing to do; freeze them with `requires_grad_(False)` to make it explicit")


_ZEROING = ("Tensor.zero_", "torch._foreach_zero_", "Tensor.fill_", "torch.zero_")


def _zero(stats):
    return bool(stats) and stats.get("min") == 0 and stats.get("max") == 0


@register(
    "GT108", "warning", "stale gradients used by an update",
    "loss.backward(); opt.step(); loss.backward(); opt.step()  # the second step re-applies the first gradient",
    "`.grad` is summed over backward calls until it is cleared (`zero_grad()`, `p.grad = None`, "
    "`p.grad.zero_()`). A gradient that an optimizer step already applied, still in `.grad` when "
    "the next step uses it, is applied twice. Accumulating over several backward calls before one "
    "step is gradient accumulation: an info.",
    "Call `optimizer.zero_grad()` (or set `p.grad = None`) before each backward, or after each "
    "optimizer step when accumulating on purpose.",
)
def _gt108(q):
    per_leaf = defaultdict(list)  # tid -> [(bw, node, attrs)]
    for bw, t, d in q.edges["leaf_grad"]:
        per_leaf[q.N[t]["tid"]].append((bw, t, d))
    zero_seqs = [q.seq(o) for o in q.ops_named(_ZEROING)] if per_leaf else []
    pairs = {}  # (b0, b1, stale?, line of the update) -> (leaves, earlier update, using update)
    for tid, gs in per_leaf.items():
        gs.sort(key=lambda g: q.bw_seq(g[0]))
        updates = sorted({q.seq(d["op"]): d["op"] for n in q.versions[tid] for _, d in q.out["next_version"].get(n, ())
                          if d.get("op") and not d.get("metadata_only") and q.N[d["op"]].get("phase") != "backward"
                          and q.N[d["op"]]["category"] in WRITES}.items())

        useqs = [s for s, _ in updates]

        def first_update(lo, hi, updates=updates, useqs=useqs):
            i = bisect.bisect_right(useqs, lo)
            return updates[i][1] if i < len(updates) and updates[i][0] < hi else None

        def clean(i, gs=gs):
            d = gs[i][2]
            if not d.get("accumulated") or _zero(d.get("prior")):
                return True
            lo, hi = q.bw_seq(gs[i - 1][0]) if i else -1, q.bw_seq(gs[i][0])
            return d.get("prior") is None and bisect.bisect_right(zero_seqs, lo) < bisect.bisect_left(zero_seqs, hi)

        # The call after each one that starts from a cleared .grad, found latest first.
        is_clean = [clean(i) for i in range(len(gs))]
        next_clean, nxt = [0] * len(gs), 1 << 60
        for k in range(len(gs) - 1, -1, -1):
            next_clean[k] = nxt
            if is_clean[k]:
                nxt = q.bw_seq(gs[k][0])
        for i in range(1, len(gs)):
            (b0, _, _), (b1, t1, _) = gs[i - 1], gs[i]
            if b0 == b1 or is_clean[i]:
                continue
            used = first_update(q.bw_seq(b1), next_clean[i])
            if used is None:
                continue  # nothing used the sum before it was cleared
            between = first_update(q.bw_seq(b0), q.bw_seq(b1))
            key = (b0, b1, between is None, q.N[used].get("line"))
            pairs.setdefault(key, ([], between, used))[0].append(t1)
    for (b0, b1, _, _), (leaves, between, used) in sorted(pairs.items(), key=lambda kv: q.bw_seq(kv[0][1])):
        o0, o1 = q.N[b0].get("op"), q.N[b1].get("op")
        names = names_of(q, leaves, 5)
        opt = fx.optimizer_name(code_of(q, used)) or (fx.optimizer_name(code_of(q, between)) if between else None)
        zg = f"`{opt}.zero_grad()`" if opt else "`optimizer.zero_grad()`"
        if between:
            msg = (f"the update {statement_of(q, used)} ({q.where(used)}) used the gradient of {names} that the "
                   f"backward call at {q.where(o1)} added to the one already applied by {statement_of(q, between)} "
                   f"({q.where(between)}): a stale gradient, applied twice")
            fix = f"call {zg} before {statement_of(q, o1)} ({q.where(o1)}), or right after {statement_of(q, between)}"
            sev = "warning"
        else:
            calls = f"two backward calls at {q.where(o1)}" if q.where(o0) == q.where(o1) else \
                f"the backward calls at {q.where(o0)} and {q.where(o1)}"
            msg = (f"the update {statement_of(q, used)} ({q.where(used)}) used the gradients of {names} summed over "
                   f"{calls} (gradient accumulation)")
            fix = f"if the accumulation is not meant, call {zg} before {statement_of(q, o1)} ({q.where(o1)})"
            sev = "info"
        yield finding(q, "GT108", msg, [(o1, "accumulating backward"), (used, "update"), (o0, "first backward")]
                 + ([(between, "earlier update")] if between else []),
                 [(t, "accumulated") for t in leaves], [b0, b1], severity=sev, fix=fix)



@register(
    "GT112", "warning", ".grad read on a non-leaf tensor",
    "y = x * 2; y.sum().backward(); print(y.grad)  # None",
    "Only leaves get `.grad`; reading it on an intermediate tensor returns None (PyTorch warns).",
    "Call `y.retain_grad()` before backward, or use a hook or `torch.autograd.grad`.",
)
def _gt112(q):
    for r in q.G.graph.get("grad_reads") or []:
        t = r.get("tensor")
        nm = q.name(t) if t in q.N else "a non-leaf tensor"
        f = finding(q, "GT112", f".grad of non-leaf {nm} read: it is None "
               "unless retain_grad() was called", [], [(t, "non-leaf")],
               fix=(f"call `{plain_name(nm)}.retain_grad()` before the backward call, or read the gradient with "
                    f"`torch.autograd.grad(loss, {plain_name(nm)})`" if t in q.N and q.label(t) else None))
        code = linecache.getline(r["file"], r["line"]).strip() if r.get("file") and r.get("line") else None
        f.ops.append({"node": None, "name": "Tensor.grad", "file": r.get("file"), "line": r.get("line"),
                      "code": code or None, "module": None, "role": "read"})
        yield f


