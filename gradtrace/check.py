"""``gradtrace check``: the aliasing, in-place and autograd mistakes PyTorch users hit
most, found by graph queries over a trace (the user's code is never rerun).

>>> findings = gradtrace.check(tr)            # a Trace, a graph, or a trace folder
>>> for f in findings: print(format_finding(f))

Each check is a small function registered in :data:`CHECKS` with a stable code.
"""

from __future__ import annotations

import linecache
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field

SEVERITIES = ("error", "warning", "info")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
WRITES = ("inplace", "setitem", "out")  # op categories that write into an existing tensor


@dataclass
class Finding:
    """One mistake found in a trace."""

    code: str
    severity: str  # "error" | "warning" | "info"
    message: str  # one line
    ops: list = field(default_factory=list)  # {node, name, file, line, code, role}
    tensors: list = field(default_factory=list)  # {node, label, shape, role}
    explanation: str = ""
    fix: str = ""
    nodes: list = field(default_factory=list)  # every graph node involved
    title: str = ""
    count: int = 1  # how many times the same finding occurred (same code and lines)

    @property
    def file(self):
        return next((o["file"] for o in self.ops if o.get("file")), None)

    @property
    def line(self):
        return next((o["line"] for o in self.ops if o.get("file")), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["file"], d["line"] = self.file, self.line
        return d


@dataclass(frozen=True)
class Check:
    code: str
    severity: str  # the usual severity; a finding may say otherwise
    title: str
    example: str
    explanation: str
    fix: str
    func: object


CHECKS: dict = {}


def _register(code, severity, title, example, explanation, fix):
    def deco(func):
        CHECKS[code] = Check(code, severity, title, example, explanation, fix, func)
        return func

    return deco


# -- the graph, indexed once ----------------------------------------------------------


class _Q:
    """Indexes over one trace graph that the checks share."""

    def __init__(self, G):
        self.G = G
        N = self.N = G.nodes
        self.ops = sorted((n for n, k in G.nodes(data="kind") if k == "op"), key=lambda n: N[n]["seq"])
        self.out = defaultdict(lambda: defaultdict(list))  # kind -> u -> [(v, attrs)]
        self.inn = defaultdict(lambda: defaultdict(list))  # kind -> v -> [(u, attrs)]
        self.edges = defaultdict(list)  # kind -> [(u, v, attrs)]
        for u, v, d in G.edges(data=True):
            k = d.get("kind")
            self.out[k][u].append((v, d))
            self.inn[k][v].append((u, d))
            self.edges[k].append((u, v, d))
        self.versions = defaultdict(list)  # tid -> tensor nodes, oldest first
        self.on_storage = defaultdict(list)
        for n, d in G.nodes(data=True):
            if d["kind"] == "tensor":
                self.versions[d["tid"]].append(n)
                self.on_storage[d.get("storage")].append(n)
        for vs in self.versions.values():
            vs.sort(key=lambda n: N[n]["version"])
        self.backwards = sorted(
            (n for n, k in G.nodes(data="kind") if k == "backward"), key=lambda n: self.seq(N[n].get("op")))
        self._reach = {}

    def seq(self, op):
        return self.N[op]["seq"] if op in self.N else -1

    def kind_of(self, n):
        return self.N[n]["kind"] if n in self.N else None

    def inputs(self, op):
        return [u for u, _ in self.inn["input"][op] if self.kind_of(u) == "tensor"]

    def outputs(self, op):
        return [v for v, _ in self.out["output"][op] if self.kind_of(v) == "tensor"]

    def producer(self, t):
        return next((u for u, _ in self.inn["output"][t]), None)

    def uses(self, tid):
        """Ops reading any version of tensor ``tid``, in order."""
        found = {op for n in self.versions[tid] for op, _ in self.out["input"][n]}
        return sorted(found, key=self.seq)

    def label(self, t):
        return self.N[t].get("label") if t in self.N else None

    def name(self, t):
        """How a message names a tensor: `y`, or what made it."""
        lab = self.label(t)
        if lab:
            return f"`{lab}`"
        p = self.producer(self.versions[self.N[t]["tid"]][0]) if t in self.N else None
        if p is not None:
            return f"the result of {self.N[p]['name']} (line {self.N[p]['line']})"
        return f"tensor {t}"

    def where(self, op):
        d = self.N[op]
        return f"line {d.get('line')}" if d.get("line") is not None else "an unknown line"

    def is_param(self, tid):
        """A module parameter or buffer (labelled `<module path>.<name>`)."""
        lab = self.label(self.versions[tid][0])
        if not lab or "." not in lab:
            return False
        path = lab.rsplit(".", 1)[0]
        return f"mod:{path}" in self.N

    def reach(self, bw):
        """The autograd nodes a backward call can reach from its roots."""
        r = self._reach.get(bw)
        if r is None:
            stack = [self.N[t].get("grad_fn") for t, _ in self.out["weights"][bw]]
            r = set()
            while stack:
                fn = stack.pop()
                if fn is None or fn in r:
                    continue
                r.add(fn)
                stack.extend(v for v, _ in self.out["next"][fn])
            self._reach[bw] = r
        return r

    def backwards_reaching(self, fn):
        return [bw for bw in self.backwards if fn in self.reach(bw)]

    def bw_seq(self, bw):
        return self.seq(self.N[bw].get("op"))

    # -- what a finding carries -------------------------------------------------------

    def op_ref(self, op, role=None):
        d = self.N[op]
        ref = {"node": op, "name": d.get("name"), "file": d.get("file"), "line": d.get("line"),
               "code": d.get("code"), "module": d.get("module")}
        if role:
            ref["role"] = role
        return ref

    def t_ref(self, t, role=None):
        d = self.N[t]
        ref = {"node": t, "label": d.get("label"), "shape": d.get("shape"), "dtype": d.get("dtype")}
        if role:
            ref["role"] = role
        return ref


def _stats_text(s) -> str:
    if not s:
        return "no statistics"
    parts = [f"{k}={s[k]:.4g}" for k in ("min", "max", "mean") if isinstance(s.get(k), (int, float))]
    if s.get("nan"):
        parts.append(f"nan={s['nan']}")
    if s.get("inf"):
        parts.append(f"inf={s['inf']}")
    return " ".join(parts)


def _bad(s, what):
    return bool(s) and bool(s.get(what))


def _F(q, code, message, ops=(), tensors=(), nodes=(), severity=None, explanation=None, fix=None):
    """Build a finding; ``ops`` are (op node, role) and ``tensors`` (tensor node, role)."""
    c = CHECKS[code]
    op_refs = [q.op_ref(o, r) for o, r in ops if o in q.N]
    t_refs, seen = [], set()
    for t, r in tensors:
        if t in q.N and t not in seen:
            seen.add(t)
            t_refs.append(q.t_ref(t, r))
    all_nodes = []
    for n in [o["node"] for o in op_refs] + [t["node"] for t in t_refs] + list(nodes):
        if n is not None and n not in all_nodes:
            all_nodes.append(n)
    return Finding(code, severity or c.severity, message, op_refs, t_refs,
                   explanation or c.explanation, fix or c.fix, all_nodes, c.title)


def _written(q, op, tensor_nodes):
    """The tensor the op wrote through: its input on the storage of ``tensor_nodes``."""
    sids = {q.N[t].get("storage") for t in tensor_nodes}
    ins = sorted(q.inn["input"][op], key=lambda e: (e[1].get("pos") != "out", str(e[1].get("pos"))))
    for u, _ in ins:
        if q.kind_of(u) == "tensor" and q.N[u].get("storage") in sids:
            return u
    return None


def _alias(q, t):
    """``data`` or ``detach`` when ``t`` is that alias of another tensor."""
    first = q.versions[q.N[t]["tid"]][0]
    return next((d.get("alias") for _, d in q.out["view_of"][first] if d.get("alias")), None)


def _is_view(q, t):
    first = q.versions[q.N[t]["tid"]][0]
    return any(not d.get("alias") for _, d in q.out["view_of"][first])


def _through(q, w, target):
    """' through view `v`' when the write ``w`` went through another tensor than ``target``."""
    if w is None or q.N[w]["tid"] == q.N[target]["tid"]:
        return ""
    a = _alias(q, w)
    if a:
        return f" through `.{a}()`" if a == "detach" else f" through `.{a}`"
    return f" through the view {q.name(w)}" if _is_view(q, w) else f" through {q.name(w)}, which shares its storage"


def _writes_into_saved(q):
    """Per write op: the saved tensor versions it overwrote, with the saving autograd nodes.
    Yields (write op, [(saved node, fn, next_version attrs)])."""
    hits = defaultdict(list)
    for fn, t, _ in q.edges["saves"]:
        for v, d in q.out["next_version"][t]:
            if d.get("metadata_only") or d.get("external") or d.get("op") is None:
                continue
            hits[d["op"]].append((t, fn, d))
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


def _saved_finding(q, code, w, saved, severity, how):
    t0, fn0, _ = saved[0]
    fop = q.N[fn0].get("op")
    wt = _written(q, w, [t0])
    saver = q.N[fn0]["name"]
    verdict, bw = _saved_verdict(q, w, saved)
    if verdict is None:
        return None
    if severity is None:
        severity = "error" if verdict == "later" else "warning"
    msg = (f"{q.name(t0)} was saved for backward by {saver}"
           + (f" ({q.N[fop]['name']}, {q.where(fop)})" if fop in q.N else "")
           + f" and then {how} by {q.N[w]['name']}{_through(q, wt, t0)} ({q.where(w)})")
    if verdict == "later":
        bop = q.N[bw].get("op")
        msg += (f"; the backward call at {q.where(bop)} "
                + ("raised 'modified by an inplace operation'" if q.N[bw].get("error") and code == "GT101"
                   else ("will raise 'modified by an inplace operation'" if code == "GT101"
                         else "used the overwritten values: its gradient is wrong")))
    else:
        msg += "; a backward call through it " + (
            "will raise 'modified by an inplace operation'" if code == "GT101" else "would compute a wrong gradient")
    ops = [(fop, "saved by")] + [(q.N[fn].get("op"), "saved by") for _, fn, _ in saved[1:]] + [(w, "written by")]
    if verdict == "later":
        ops.append((q.N[bw].get("op"), "backward"))
    tensors = [(t, "saved") for t, _, _ in saved] + ([(wt, "written")] if wt else [])
    nodes = [fn for _, fn, _ in saved] + ([bw] if bw else [])
    return _F(q, code, msg, ops, tensors, nodes, severity=severity)


# -- the checks -----------------------------------------------------------------------


@_register(
    "GT101", "error", "in-place write to a tensor saved for backward",
    "y = x.sigmoid(); y.mul_(2); y.sum().backward()",
    "Autograd saved this tensor to compute a gradient later; the in-place write changed it and "
    "bumped its version counter, so backward refuses to run ('one of the variables needed for "
    "gradient computation has been modified by an inplace operation'). A write through any view "
    "of the same storage counts.",
    "Write out of place (`y = y * 2` instead of `y.mul_(2)`), or `clone()` the tensor before "
    "writing, or move the write after backward.",
)
def _gt101(q):
    for w, saved in _writes_into_saved(q):
        vis = [s for s in saved if s[2].get("visible", True)]
        if not vis:
            continue
        wt = _written(q, w, [vis[0][0]])
        # A parameter update (a leaf requiring grad, written under no_grad) whose graph no
        # backward ever uses is the normal end of a training step's graph.
        if wt is not None and q.N[wt].get("is_leaf") and q.N[wt].get("requires_grad") \
                and not q.N[w].get("grad_enabled") and _saved_verdict(q, w, vis)[0] != "later":
            continue
        f = _saved_finding(q, "GT101", w, vis, None, "written in place")
        if f:
            yield f


@_register(
    "GT102", "error", "write through `.data` that autograd cannot see",
    "y = x * x; x.data *= 100; y.backward()  # x.grad is 200, not 2",
    "A write through `.data` does not move the version counter, so autograd cannot tell that a "
    "tensor it saved for backward changed: backward runs and silently uses the new values. When "
    "nothing saved those values, the gradient stays correct (the course notes' `x.data *= 100` "
    "after `y = 2 * x` still gives 2).",
    "Write under `with torch.no_grad(): x.mul_(100)` so autograd can check it, or do it after "
    "backward, or compute from a `clone()`.",
)
def _gt102(q):
    saved_ops = set()
    for w, saved in _writes_into_saved(q):
        hidden = [s for s in saved if not s[2].get("visible", True)]
        if not hidden:
            continue
        f = _saved_finding(q, "GT102", w, hidden, None, "written")
        if f:
            saved_ops.add(w)
            yield f
    # Invisible writes into tracked tensors that nothing saved: the gradient is still right.
    seen = set()
    for u, _, d in q.edges["next_version"]:
        w = d.get("op")
        if w is None or w in saved_ops or w in seen or d.get("visible", True) \
                or d.get("metadata_only") or d.get("external") or not q.N[u].get("requires_grad"):
            continue
        seen.add(w)
        wt = _written(q, w, [u])
        yield _F(q, "GT102",
                 f"{q.name(u)} was written by {q.N[w]['name']}{_through(q, wt, u)} ({q.where(w)}), "
                 "which autograd does not see; nothing had saved it for backward, so gradients stay correct",
                 [(w, "written by")], [(u, "changed"), (wt, "written")], severity="info")


@_register(
    "GT103", "info", "write through a view changes its base and other views",
    "r = x[0, :]; r += 1  # x[0] changed too",
    "A view shares storage with its base: writing through it changes the base and every other "
    "view of the same elements.",
    "If the base must not change, write into a copy: `r = x[0, :].clone()`.",
)
def _gt103(q):
    by_op = defaultdict(list)
    for u, v, d in q.edges["next_version"]:
        if d.get("op") is not None and not d.get("metadata_only") and not d.get("external"):
            by_op[d["op"]].append(u)
    for w in sorted(by_op, key=q.seq):
        if q.N[w].get("category") not in WRITES:
            continue
        changed = by_op[w]
        wt = _written(q, w, changed)
        if wt is None or not _is_view(q, wt) or _alias(q, wt):
            continue
        others = [u for u in changed if q.N[u]["tid"] != q.N[wt]["tid"]]
        if not others:
            continue
        names = ", ".join(q.name(u) for u in others)
        yield _F(q, "GT103",
                 f"writing the view {q.name(wt)} with {q.N[w]['name']} ({q.where(w)}) also changed {names}",
                 [(w, "written by")], [(wt, "written")] + [(u, "changed") for u in others])


_RESHAPES = ("Tensor.reshape", "torch.reshape", "Tensor.reshape_as", "Tensor.flatten", "torch.flatten")


@_register(
    "GT104", "warning", "in-place write to a copy that reshape made",
    "t = x.t().reshape(12); t[0] = 5  # x does not change",
    "`reshape` (and `flatten`) return a view when the layout allows and a copy otherwise; here "
    "it copied, so writing the result leaves the original unchanged.",
    "Write into the original (or use `view`, which fails loudly instead of copying); if a copy "
    "is what you want, say so with `.clone()`.",
)
def _gt104(q):
    for op in q.ops:
        d = q.N[op]
        if d["name"] not in _RESHAPES or d["category"] == "view":
            continue
        srcs, outs = q.inputs(op), q.outputs(op)
        if not srcs or not outs or q.N[outs[0]].get("storage") == q.N[srcs[0]].get("storage"):
            continue
        o = outs[0]
        for n in q.versions[q.N[o]["tid"]]:
            w = next((e.get("op") for _, e in q.out["next_version"][n]
                      if e.get("op") and q.seq(e["op"]) > d["seq"]
                      and q.N[e["op"]].get("category") in WRITES), None)
            if w is not None:
                yield _F(q, "GT104",
                         f"{q.name(o)} is a copy made by {d['name']} ({q.where(op)}), not a view of "
                         f"{q.name(srcs[0])}; the write by {q.N[w]['name']} ({q.where(w)}) does not change it",
                         [(op, "copied by"), (w, "written by")], [(o, "copy"), (srcs[0], "original")])
                break


@_register(
    "GT105", "warning", "write on one side of a numpy/tensor shared buffer",
    "b = torch.from_numpy(a); s = b.sum(); a += 1  # b changed too, torch never saw it",
    "`.numpy()` and `torch.from_numpy` share one buffer: a write on either side changes the "
    "other. A numpy-side write is invisible to torch (no version bump): results computed from "
    "the tensor before and after it differ, and autograd cannot notice.",
    "Copy when the two must be independent: `torch.tensor(a)` or `t.numpy().copy()`.",
)
def _gt105(q):
    np_of = defaultdict(set)  # storage -> numpy nodes
    for a, t, _ in q.edges["shares_memory"]:
        arr, ten = (a, t) if q.kind_of(a) == "numpy" else (t, a)
        if q.kind_of(ten) == "tensor":
            np_of[q.N[ten].get("storage")].add(arr)

    def np_seen(arr):  # the first op that touched the array
        ops = [o for o, _ in q.inn["output"][arr]] + [o for o, _ in q.out["input"][arr]]
        return min((q.seq(o) for o in ops if q.kind_of(o) == "op"), default=-1)

    def np_name(arr):
        ops = sorted([o for o, _ in q.inn["output"][arr]] + [o for o, _ in q.out["input"][arr]], key=q.seq)
        return f"the numpy array of {q.N[ops[0]]['name']} ({q.where(ops[0])})" if ops else f"numpy array {arr}"

    done = set()
    for u, _, d in q.edges["next_version"]:
        sid = q.N[u].get("storage")
        if d.get("metadata_only") or sid not in np_of:
            continue
        if d.get("external"):
            at = d.get("seen_at")
            key = ("ext", at, sid)
            if key in done or at not in q.N:
                continue
            done.add(key)
            reads = [o for n in q.on_storage[sid] for o, _ in q.out["input"][n]
                     if q.kind_of(o) == "op" and q.seq(o) < q.seq(at)]
            arrs = sorted(np_of[sid])
            first = min(reads, key=q.seq) if reads else None
            msg = (f"numpy wrote the buffer of {q.name(u)} (noticed at {q.N[at]['name']}, {q.where(at)})"
                   + (f" after torch read it at {q.N[first]['name']} ({q.where(first)}): results before and "
                      "after differ and torch saw no write" if first else ": torch saw no write"))
            yield _F(q, "GT105", msg, ([(first, "read by")] if first else []) + [(at, "noticed at")],
                     [(u, "changed")], arrs, severity="warning" if first else "info")
        else:
            w = d.get("op")
            if w is None or ("w", w, sid) in done:
                continue
            arrs = sorted(a for a in np_of[sid] if np_seen(a) < q.seq(w))
            if not arrs:
                continue
            done.add(("w", w, sid))
            yield _F(q, "GT105",
                     f"{q.N[w]['name']} ({q.where(w)}) wrote {q.name(u)}, which shares its buffer with "
                     f"{' and '.join(np_name(a) for a in arrs)}: the array changed too",
                     [(w, "written by")], [(u, "changed")], arrs, severity="info")


_CUTS = {"Tensor.detach": "detach()", "torch.detach": "detach()", "Tensor.data": ".data"}


@_register(
    "GT106", "warning", "gradient path cut by no_grad, .data or detach",
    "y1 = x ** 2\nwith torch.no_grad(): y2 = x ** 3\n(y1 + y2).backward()  # x.grad is 2, not 5",
    "The tensor was computed from tensors that require grad, but with gradient recording off "
    "(no_grad, `.data`, `detach()`); it is then used in a loss that is differentiated, so "
    "backward treats it as a constant and the gradient through it is missing.",
    "Compute it with gradients on (outside `no_grad`, without `.data`/`detach()`), or keep the "
    "cut if the constant is deliberate (a target, a baseline).",
)
def _gt106(q):
    # For every value that does not require grad: the first op where it (or a value computed
    # from it without grad) joins a graph that a later backward call differentiates.
    # One pass over the ops, latest first, so each value's consumers are known.
    first_join = {}
    for op in reversed(q.ops):
        for o in q.outputs(op):
            if o in first_join or q.N[o].get("requires_grad"):
                continue
            found = []
            for c, _ in q.out["input"][o]:
                if q.kind_of(c) != "op" or c == op:
                    continue
                cd = q.N[c]
                for o2 in q.outputs(c):
                    if not q.N[o2].get("requires_grad"):
                        if first_join.get(o2):
                            found.append(first_join[o2])
                    elif cd.get("grad_enabled", True) and cd["category"] not in WRITES and q.N[o2].get("grad_fn"):
                        fn = q.N[o2]["grad_fn"]
                        bw = next((b for b in q.backwards if q.bw_seq(b) > cd["seq"] and fn in q.reach(b)), None)
                        if bw is not None:
                            found.append((c, o2, bw))
            first_join[o] = min(found, key=lambda x: q.seq(x[0])) if found else None
    for op in q.ops:
        d = q.N[op]
        if d.get("phase") == "backward" or d["category"] in WRITES + ("backward", "grad_mode"):
            continue
        how = _CUTS.get(d["name"]) or (None if d.get("grad_enabled", True) else "no_grad")
        if how is None or not any(q.N[t].get("requires_grad") for t in q.inputs(op)):
            continue
        hits = [(t, first_join[t]) for t in q.outputs(op) if first_join.get(t)]
        if not hits:
            continue
        cut, (j, o, bw) = hits[0]
        bop = q.N[bw].get("op")
        yield _F(q, "GT106",
                 f"{q.name(cut)} was computed from tensors that require grad under {how} "
                 f"({d['name']}, {q.where(op)}) and then used in {q.N[j]['name']} ({q.where(j)}), "
                 f"which the backward call at {q.where(bop)} differentiates: no gradient flows through it",
                 [(op, f"cut by {how}"), (j, "joins the graph"), (bop, "backward")],
                 [(cut, "cut"), (o, "differentiated")] + [(t, "requires grad") for t in q.inputs(op)
                                                          if q.N[t].get("requires_grad")],
                 [bw], severity="info" if how == "detach()" else None)


@_register(
    "GT107", "warning", "a tensor requiring grad that no backward call reached",
    "w = torch.ones(3, requires_grad=True)\nwith torch.no_grad(): y = w * 2\n... loss.backward()  # w.grad is None",
    "A leaf that requires grad (a parameter) got no gradient from any backward call: its "
    "`.grad` stays None and an optimizer will not update it. Reported for module parameters "
    "that were unused or whose outputs were unused, and for any leaf whose only uses were "
    "under no_grad, `.data` or `detach()`.",
    "Make sure the parameter takes part in the loss with gradients on (no `no_grad`, `.data` or "
    "`detach()` on its path), or freeze it explicitly (`requires_grad_(False)`).",
)
def _gt107(q):
    bws = [b for b in q.backwards if not q.N[b].get("error")]
    if not bws:
        return
    last = max(q.bw_seq(b) for b in bws)
    acc = {}  # tid -> AccumulateGrad node
    for fn, t, _ in q.edges["accumulates"]:
        acc[q.N[t]["tid"]] = fn
    got = {q.N[t]["tid"] for k in ("grad", "leaf_grad") for _, t, _ in q.edges[k] if q.kind_of(t) == "tensor"}
    for tid, vs in sorted(q.versions.items()):
        if not any(q.N[n].get("is_leaf") and q.N[n].get("requires_grad") for n in vs) or tid in got:
            continue
        if tid in acc and any(acc[tid] in q.reach(b) for b in bws):
            continue
        uses = [o for o in q.uses(tid) if q.seq(o) < last and not q.N[o]["name"].startswith("Tensor.requires_grad")
                and q.N[o]["category"] not in WRITES + ("backward", "grad_mode")]
        leaf = next(n for n in vs if q.N[n].get("requires_grad"))
        if not uses:
            if q.is_param(tid):
                yield _F(q, "GT107", f"parameter {q.name(leaf)} was never used before the last backward "
                         "call: it gets no gradient (an unused parameter)", [], [(leaf, "no gradient")])
            continue
        why, at = None, uses[0]
        for o in uses:
            od = q.N[o]
            if od["name"] in _CUTS:
                why, at = f"it was only used through {_CUTS[od['name']]}", o
                break
            if not od.get("grad_enabled", True):
                why, at = "it was only used with gradients off (no_grad)", o
                break
        if why is None:
            if not q.is_param(tid):
                continue  # a plain tensor whose result is simply not differentiated
            why = "its results never reached a backward call (an unused output)"
        yield _F(q, "GT107", f"{q.name(leaf)} requires grad but no backward call reached it: {why} "
                 f"(first use: {q.N[at]['name']}, {q.where(at)})", [(at, "used by")], [(leaf, "no gradient")])


@_register(
    "GT108", "warning", "gradients accumulate across backward calls",
    "loss1.backward(); loss2.backward()  # w.grad is the sum of both",
    "`.grad` is summed over backward calls until it is zeroed. Without `optimizer.zero_grad()` "
    "(or `p.grad = None`) between two calls, the second adds to the first; an optimizer step in "
    "between then uses stale gradients. In a loop of one call per step without a step between, "
    "it is gradient accumulation, which may be deliberate.",
    "Call `optimizer.zero_grad()` (or set `p.grad = None`) before each backward, or after each "
    "optimizer step when accumulating on purpose.",
)
def _gt108(q):
    per_leaf = defaultdict(list)  # tid -> [(bw, node, attrs)]
    for bw, t, d in q.edges["leaf_grad"]:
        per_leaf[q.N[t]["tid"]].append((bw, t, d))
    pairs = defaultdict(list)  # (previous bw, bw) -> leaves
    for _tid, gs in per_leaf.items():
        gs.sort(key=lambda g: q.bw_seq(g[0]))
        for (b0, _, _), (b1, t1, d1) in zip(gs, gs[1:]):
            if d1.get("accumulated") and b0 != b1:
                pairs[(b0, b1)].append(t1)
    for (b0, b1), leaves in sorted(pairs.items(), key=lambda kv: q.bw_seq(kv[0][1])):
        o0, o1 = q.N[b0].get("op"), q.N[b1].get("op")
        s0, s1 = q.bw_seq(b0), q.bw_seq(b1)
        stepped = any(q.seq(e.get("op")) > s0 and q.seq(e.get("op")) < s1
                      for t in leaves for n in q.versions[q.N[t]["tid"]]
                      for _, e in q.out["next_version"][n] if e.get("op") and not e.get("metadata_only"))
        loop = (q.N[o0].get("file"), q.N[o0].get("line")) == (q.N[o1].get("file"), q.N[o1].get("line"))
        sev = "info" if loop and not stepped else "warning"
        names = ", ".join(q.name(t) for t in leaves[:5]) + (f" and {len(leaves) - 5} more" if len(leaves) > 5 else "")
        msg = (f"the backward call at {q.where(o1)} added to the gradient the call at {q.where(o0)} left "
               f"in .grad of {names}, with no zero_grad() or .grad = None between"
               + ("; they were updated in between, so the update used stale gradients" if stepped else ""))
        yield _F(q, "GT108", msg, [(o0, "first backward"), (o1, "accumulating backward")],
                 [(t, "accumulated") for t in leaves], [b0, b1], severity=sev)


@_register(
    "GT109", "warning", "out= tensor of the wrong shape silently resized",
    "result = torch.empty(5, 3); torch.add(x, y, out=result)  # x, y are 4x3: result becomes 4x3",
    "PyTorch resizes an `out=` tensor whose shape does not match the result (with only a "
    "deprecation warning); other references to its old shape or storage no longer agree.",
    "Allocate `out` with the result's shape (`torch.empty_like(x)`), or drop `out=`.",
)
def _gt109(q):
    for op in q.ops:
        if q.N[op]["category"] != "out":
            continue
        for u, e in q.inn["input"][op]:
            if e.get("pos") != "out" or q.kind_of(u) != "tensor":
                continue
            for v, d in q.out["next_version"][u]:
                old, new = q.N[u]["shape"], q.N[v]["shape"]
                if d.get("op") == op and old != new and all(old):
                    yield _F(q, "GT109",
                             f"out= tensor {q.name(u)} had shape {old} but {q.N[op]['name']} ({q.where(op)}) "
                             f"produces {new}: PyTorch resized it", [(op, "resized by")],
                             [(u, "before"), (v, "after")])


_UNINIT = ("torch.empty", "torch.empty_like", "Tensor.new_empty", "torch.empty_strided")


@_register(
    "GT110", "error", "first NaN or Inf",
    "y = torch.log(x - 1)  # x has a 1: the first -inf, and NaN where x < 1",
    "The first op whose output has NaN/Inf while its inputs had none is where the bad values "
    "came from; everything after it only propagates them. In backward, the first gradient with "
    "NaN/Inf (nearest the loss) names the op whose derivative produced it.",
    "Guard the op's domain (clamp before log/sqrt/div, add an epsilon), lower the learning rate, "
    "or use a numerically stable form (log_softmax, logsumexp, BCEWithLogits).",
)
def _gt110(q):
    def has(s, what):
        return any(_bad(s, w) for w in what)

    # Forward: the first op whose output has NaN (error) / Inf (warning) from finite inputs.
    firsts = {}
    for what in ("nan", "inf"):
        for op in q.ops:
            d = q.N[op]
            if d.get("phase") == "backward" or d["category"] in ("backward", "grad_mode") \
                    or d["name"] in _UNINIT or what in (d.get("args") or "").lower():
                continue  # uninitialised memory, or the value was passed in (a -inf mask)
            bad = [t for t in q.outputs(op) if _bad(q.N[t].get("stats"), what)]
            ins = q.inputs(op)
            if bad and not any(q.N[t].get("stats") is None or has(q.N[t]["stats"], ("nan", "inf")) for t in ins):
                firsts.setdefault(op, []).append((what, bad[0]))
                break
    for op, hits in sorted(firsts.items(), key=lambda kv: q.seq(kv[0])):
        d, t = q.N[op], hits[0][1]
        kinds = " and ".join("NaN" if w == "nan" else "Inf" for w, _ in hits)
        ins = q.inputs(op)
        ins_text = "; ".join(f"{q.name(i)}: {_stats_text(q.N[i].get('stats'))}" for i in ins[:4])
        mod = f" in module {d['module']}" if d.get("module") else ""
        yield _F(q, "GT110",
                 f"first {kinds} in forward: {d['name']} ({q.where(op)}){mod} made {q.name(t)} "
                 f"({_stats_text(q.N[t].get('stats'))}) from finite inputs" + (f" ({ins_text})" if ins_text else ""),
                 [(op, "first " + kinds)], [(t, kinds)] + [(i, "input") for i in ins],
                 severity="error" if hits[0][0] == "nan" else "warning")
    # Backward: in the first call with one, the bad gradient nearest the loss.
    seen = set()
    for what in ("nan", "inf"):
        for bw in q.backwards:
            bad = [(t, d) for t, d in q.out["grad"][bw] if q.kind_of(t) == "tensor" and _bad(d.get("stats"), what)]
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
            kinds = " and ".join(k for k, w in (("NaN", "nan"), ("Inf", "inf")) if _bad(gd.get("stats"), w))
            at = f", made by the derivative of {q.N[c]['name']} ({q.where(c)})" if c else ""
            yield _F(q, "GT110",
                     f"first {kinds} in backward (call at {q.where(bop)}): the gradient reaching "
                     f"{q.name(t)} ({_stats_text(gd.get('stats'))}){at}",
                     ([(c, "derivative")] if c else []) + ([(p, "produced")] if p else []) + [(bop, "backward")],
                     [(t, "bad gradient")], [bw], severity="error" if what == "nan" else "warning")
            break


@_register(
    "GT111", "warning", ".to(device) returned the same tensor, then a write",
    "z = x.to('cpu'); z.add_(1)  # x changed too; on a GPU, z would be a copy",
    "`.to()` (and `.cpu()`, `.cuda()`) return the tensor itself when it is already there, and a "
    "copy otherwise. A write to either name then changes both here, but only one of them on "
    "another device: the program means something else depending on where it runs.",
    "Do not write after `.to()`, or write to the original before moving, or make the intent "
    "explicit with `.clone()`.",
)
def _gt111(q):
    for u, _, e in q.edges["moved_to"]:
        if e.get("copy", True) or e.get("src_device") != e.get("dst_device"):
            continue
        tid = q.N[u]["tid"]
        if q.is_param(tid) or (q.N[u].get("is_leaf") and q.N[u].get("requires_grad")):
            continue  # module.to(device): parameters and buffers
        move = next((o for o in q.uses(tid) if q.N[o]["name"] in ("Tensor.to", "Tensor.cpu", "Tensor.cuda")
                     and q.N[o]["category"] == "move" and u in q.inputs(o)), None)
        if move is None:
            continue
        for n in q.versions[tid]:
            w = next((d.get("op") for _, d in q.out["next_version"][n]
                      if d.get("op") and q.seq(d["op"]) > q.seq(move) and not q.N[d["op"]].get("module")
                      and q.N[d["op"]]["category"] in WRITES), None)  # not a module's buffer update
            if w is not None:
                yield _F(q, "GT111",
                         f"{q.N[move]['name']} ({q.where(move)}) returned {q.name(u)} itself (already on "
                         f"{e['dst_device']}); the write by {q.N[w]['name']} ({q.where(w)}) changes both names "
                         "here, but only one of them on another device",
                         [(move, "same tensor"), (w, "written by")], [(u, "moved")])
                break


@_register(
    "GT112", "warning", ".grad read on a non-leaf tensor",
    "y = x * 2; y.sum().backward(); print(y.grad)  # None",
    "Only leaves get `.grad`; reading it on an intermediate tensor returns None (PyTorch warns).",
    "Call `y.retain_grad()` before backward, or use a hook or `torch.autograd.grad`.",
)
def _gt112(q):
    for r in q.G.graph.get("grad_reads") or []:
        t = r.get("tensor")
        f = _F(q, "GT112", f".grad of non-leaf {q.name(t) if t in q.N else t} read: it is None "
               "unless retain_grad() was called", [], [(t, "non-leaf")])
        code = linecache.getline(r["file"], r["line"]).strip() if r.get("file") and r.get("line") else None
        f.ops.append({"node": None, "name": "Tensor.grad", "file": r.get("file"), "line": r.get("line"),
                      "code": code or None, "module": None, "role": "read"})
        yield f


# -- API ------------------------------------------------------------------------------


def _codes(spec):
    """Expand 'GT101,GT102' / ['GT101', 'GT11'] (prefixes allowed) into known codes."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = [spec]
    out = set()
    for item in spec:
        for c in str(item).split(","):
            c = c.strip().upper()
            if not c:
                continue
            hits = [k for k in CHECKS if k.startswith(c)]
            if not hits:
                raise ValueError(f"unknown check code {c!r} (known: {', '.join(CHECKS)})")
            out.update(hits)
    return out


def _order(q, f):
    seqs = [q.seq(o["node"]) for o in f.ops if o.get("node") in q.N]
    return (_RANK.get(f.severity, 3), min(seqs) if seqs else 1 << 60, f.code)


def check_graph(G, select=None, ignore=None) -> list:
    """Run the checks on a trace graph; return findings, errors first, then in op order.
    ``select``/``ignore``: codes (or prefixes), as a list or a comma-separated string.
    The same finding on the same lines (a loop) is reported once with ``count``."""
    sel, ign = _codes(select), _codes(ignore) or set()
    q = _Q(G)
    found, index = [], {}
    for code, c in CHECKS.items():
        if (sel is not None and code not in sel) or code in ign:
            continue
        for f in c.func(q):
            key = (f.code, f.severity, tuple((o.get("file"), o.get("line"), o.get("role")) for o in f.ops))
            if key in index and f.ops:
                index[key].count += 1
                continue
            index[key] = f
            found.append(f)
    found.sort(key=lambda f: _order(q, f))
    return found


def check(trace_or_graph, select=None, ignore=None) -> list:
    """Return the findings of a :class:`gradtrace.Trace`, a trace graph, or a saved
    trace folder (a path)."""
    if isinstance(trace_or_graph, (str, os.PathLike)):
        from .trace import load

        G = load(trace_or_graph).graph
    elif hasattr(trace_or_graph, "graph") and not hasattr(trace_or_graph, "nodes"):
        G = trace_or_graph.graph
    else:
        G = trace_or_graph
    return check_graph(G, select=select, ignore=ignore)


def finding_nodes(G, findings=None) -> set:
    """Every node involved in a finding (for highlighting in the DOT view)."""
    if findings is None:
        findings = check_graph(G)
    return {n for f in findings for n in f.nodes}


def _short(path):
    if not path:
        return "?"
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path
    except ValueError:
        return path


def format_finding(f: Finding, explain: bool = False) -> str:
    """A few lines: ``file:line: GT101 error: message``, the ops, the tensors, the fix."""
    head = f"{_short(f.file)}:{f.line or '?'}: " if f.file else ""
    times = f" (x{f.count})" if f.count > 1 else ""
    lines = [f"{head}{f.code} {f.severity}: {f.message}{times}"]
    for o in f.ops:
        where = f"{_short(o.get('file'))}:{o.get('line')}" if o.get("file") else "?"
        role = f"{o['role']}: " if o.get("role") else ""
        code = f"  | {o['code']}" if o.get("code") else ""
        lines.append(f"    {role}{o.get('name')} at {where}{code}")
    if f.tensors:
        ts = ", ".join((f"{t['label']} ({t['node']}" if t.get("label") else f"{t['node']} (")
                       + (", " if t.get("label") and t.get("role") else "") + (t.get("role") or "") + ")"
                       for t in f.tensors)
        lines.append(f"    tensors: {ts}")
    if explain and f.explanation:
        lines.append(f"    why: {f.explanation}")
    if f.fix:
        lines.append(f"    fix: {f.fix}")
    return "\n".join(lines)
