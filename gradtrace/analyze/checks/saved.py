"""GT101 and GT102: writes into tensors autograd saved for backward."""

from __future__ import annotations

import bisect
from collections import defaultdict

from . import fixes as fx
from .findings import WRITES, code_of, finding, register, statement_of
from .graph import data_alias, written_tensor, written_through

__all__ = []


def _writes_into_saved(q):
    """Per write op: the saved tensor versions it overwrote, with the saving autograd nodes
    and whether autograd could see the write.
    Yields (write op, [(saved node, fn, visible)]), in op order.

    A saved tensor is overwritten by the first write into its storage after it was saved:
    through itself (a ``next_version`` edge) or through any tensor on the same storage
    (``writes`` edges), e.g. a ``.data`` write into a weight whose transpose a matmul saved."""
    # storage -> the call order and op of each write outside backward, in call order: a
    # saved tensor needs only the first write after it was saved (a long loop writes a
    # weight once a step, and saves it once a step)
    writes_on = defaultdict(list)
    for w, sid, _ in q.edges["writes"]:
        if q.N[w].get("phase") != "backward":
            writes_on[sid].append((q.seq(w), w))
    for ws in writes_on.values():
        ws.sort(key=lambda x: x[0])
    seqs = {sid: [s for s, _ in ws] for sid, ws in writes_on.items()}
    hits = defaultdict(list)
    for fn, t, _ in q.edges["saves"]:
        fs = q.seq(q.N[fn].get("op"))
        cands = []
        for _v, d in q.out["next_version"].get(t, ()):
            if d.get("metadata_only") or d.get("external") or d.get("op") is None:
                continue
            cands.append((q.seq(d["op"]), d["op"], d.get("visible", True)))
        sid = q.N[t].get("storage")
        ws = writes_on.get(sid)
        if ws:
            i = bisect.bisect_right(seqs[sid], fs)
            for ws_seq, w in ws[i:]:
                if ws_seq != ws[i][0]:
                    break
                wt = written_tensor(q, w, [t])
                cands.append((ws_seq, w, not data_alias(q, wt)))
        if cands:
            _, w, visible = min(cands, key=lambda c: (c[0], c[2]))
            hits[w].append((t, fn, visible))
    return sorted(hits.items(), key=lambda kv: q.seq(kv[0]))


def _saved_verdict(q, w, saved):
    """'later' when a backward after write ``w`` differentiates through a saving node,
    'never' when no backward ever does, None when the graph was used up before."""
    ws = q.seq(w)
    verdict = "never"
    for _, fn, _ in saved:
        bws = q.backwards_reaching(fn)
        if any(q.bw_seq(b) > ws for b in bws):
            return "later", next(b for b in bws if q.bw_seq(b) > ws)
        if bws:
            verdict = None
    return verdict, None


def _saved_finding(q, code, w, saved, severity, how, fix):
    t0, fn0, _ = saved[0]
    fop = q.N[fn0].get("op")
    wt = written_tensor(q, w, [t0])
    saver = q.N[fn0]["name"]
    verdict, bw = _saved_verdict(q, w, saved)
    if verdict is None:
        return None
    if severity is None:
        severity = "error" if verdict == "later" else "warning"
    msg = (f"{q.name(t0)} was saved for backward by {saver}"
           + (f" ({q.N[fop]['name']}, {q.where(fop)})" if fop in q.N else "")
           + f" and then {how} by {q.N[w]['name']}{written_through(q, wt, t0)} ({q.where(w)})")
    if verdict == "later":
        bop = q.N[bw].get("op")
        msg += (f"; the backward call at {q.where(bop)} "
                + ("raised 'modified by an inplace operation'" if q.N[bw].get("error") and code == "GT101"
                   else ("will raise 'modified by an inplace operation'" if code == "GT101"
                         else "used the overwritten values: its gradient is wrong")))
    else:
        msg += "; a backward call through it " + (
            "will raise 'modified by an inplace operation'" if code == "GT101" else "would compute a wrong gradient")
    ops = [(w, "written by"), (fop, "saved by")] + [(q.N[fn].get("op"), "saved by") for _, fn, _ in saved[1:]]
    if verdict == "later":
        ops.append((q.N[bw].get("op"), "backward"))
    tensors = [(t, "saved") for t, _, _ in saved] + ([(wt, "written")] if wt else [])
    nodes = [fn for _, fn, _ in saved] + ([bw] if bw else [])
    return finding(q, code, msg, ops, tensors, nodes, severity=severity, fix=fix(verdict, bw))



# -- the checks -----------------------------------------------------------------------


@register(
    "GT101", "error", "in-place write to a tensor saved for backward",
    "y = x.sigmoid(); y.mul_(2); y.sum().backward()",
    "Autograd saved this tensor to compute a gradient later; the in-place write changed it and "
    "bumped its version counter, so backward refuses to run ('one of the variables needed for "
    "gradient computation has been modified by an inplace operation'). A write through any view "
    "of the same storage counts. Found before backward runs: the finding is an error whether or "
    "not the traced code went on to call backward.",
    "Write out of place (`y = y * 2` instead of `y.mul_(2)`), or `clone()` the tensor before "
    "writing, or move the write after backward.",
)
def _gt101(q):
    for w, saved in _writes_into_saved(q):
        vis = [s for s in saved if s[2]]
        if not vis:
            continue
        wt = written_tensor(q, w, [vis[0][0]])
        # A parameter update (a leaf requiring grad, written under no_grad) whose graph no
        # backward ever uses is the normal end of a training step's graph.
        if wt is not None and q.N[wt].get("is_leaf") and q.N[wt].get("requires_grad") \
                and not q.N[w].get("grad_enabled") and _saved_verdict(q, w, vis)[0] != "later":
            continue

        def fix(verdict, bw, w=w):
            new = fx.out_of_place(code_of(q, w))
            head = f"write `{new}` ({q.where(w)}) instead, so the saved values stay as they were" if new else \
                f"write {statement_of(q, w)} ({q.where(w)}) out of place, or into a `.clone()` of the tensor"
            return head + (f", or move the write after the backward call at {q.where(q.N[bw].get('op'))}"
                           if bw else "")

        f = _saved_finding(q, "GT101", w, vis, "error", "written in place", fix)
        if f:
            yield f


@register(
    "GT102", "error", "write through `.data` that autograd cannot see",
    "y = x * x; x.data *= 100; y.backward()  # x.grad is 200, not 2",
    "A write through `.data` does not move the version counter, so autograd cannot tell that a "
    "tensor it saved for backward changed: backward runs and silently uses the new values. When "
    "nothing saved those values, the gradient stays correct (the course notes' `x.data *= 100` "
    "after `y = 2 * x` still gives 2); a write before the tensor was first used (an "
    "initialisation such as `nn.init.normal_(w.data)`) is not reported.",
    "Write under `with torch.no_grad(): x.mul_(100)` so autograd can check it, or do it after "
    "backward, or compute from a `clone()`.",
)
def _gt102(q):
    saved_ops = set()
    for w, saved in _writes_into_saved(q):
        hidden = [s for s in saved if not s[2]]
        if not hidden:
            continue

        def fix(verdict, bw, w=w):
            if bw:
                return (f"move {statement_of(q, w)} after the backward call at {q.where(q.N[bw].get('op'))} "
                        f"(`{fx.statement(code_of(q, q.N[bw].get('op'))) or 'backward()'}`), which needs the old values")
            new = fx.without_data(code_of(q, w))
            return (f"`{new}` so autograd sees the write" if new else
                    f"make the write {statement_of(q, w)} under `torch.no_grad()` without `.data`")

        if q.N[w].get("direct") is False and _saved_verdict(q, w, hidden)[0] != "later":
            continue  # library code (gradcheck's perturbations) whose values no backward used
        f = _saved_finding(q, "GT102", w, hidden, None, "written", fix)
        if f:
            saved_ops.add(w)
            yield f
    # Invisible writes into tracked tensors that nothing saved: the gradient is still right.
    # Before any op read the tensor (an initialisation) there is nothing to say at all.
    seen = set()
    for u, _, d in q.edges["next_version"]:
        w = d.get("op")
        if w is None or w in saved_ops or w in seen or d.get("visible", True) or q.N[w].get("direct") is False \
                or d.get("metadata_only") or d.get("external") or not q.N[u].get("requires_grad"):
            continue
        ws = q.seq(w)
        if not any(q.seq(o) < ws and q.N[o].get("category") not in WRITES and q.N[o].get("grad_enabled", True)
                   and q.N[o].get("category") != "view" for o in q.uses(q.N[u]["tid"])):
            continue
        seen.add(w)
        wt = written_tensor(q, w, [u])
        new = fx.without_data(code_of(q, w))
        yield finding(q, "GT102",
                 f"{q.name(u)} was written by {q.N[w]['name']}{written_through(q, wt, u)} ({q.where(w)}), "
                 "which autograd does not see; nothing had saved it for backward, so gradients stay correct",
                 [(w, "written by")], [(u, "changed"), (wt, "written")], severity="info",
                 fix=(f"`{new}` says the same and lets autograd check it" if new else None))


