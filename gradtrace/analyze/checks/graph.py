"""The trace graph, indexed once for every check, and the questions the checks ask of it
(which tensor an op wrote through, whether it is a view or an alias, how to name it)."""

from __future__ import annotations

import bisect
from collections import defaultdict

from ...graph.query import pos_key

__all__ = [
    "Query", "alias_of", "data_alias", "eager_versions", "is_view", "plain_name", "written_tensor",
    "written_through",
]

# -- the graph, indexed once ----------------------------------------------------------

_EDGE_KINDS = ("view_of", "next_version", "moved_to", "shares_memory", "next", "accumulates", "weights",
               "grad", "leaf_grad", "saves", "writes")


class _Versions:
    """``tid -> (its version nodes, oldest first)`` for a trace whose tensor nodes are
    named ``t:TID.VERSION`` (every trace gradtrace writes): the first version's node is
    known from its name, so only tensors written to (one in a long loop of fresh
    results, whose lists would cost tens of megabytes) are listed."""

    def __init__(self, N, later):
        self._N, self._later, self._full = N, later, {}

    def __getitem__(self, tid):
        vs = self._full.get(tid)
        if vs is None:
            first = f"t:{tid}.0"
            rest = self._later.get(tid, ())
            if first not in self._N:
                return list(rest)
            if not rest:
                return (first,)
            vs = self._full[tid] = [first, *rest]
        return vs

    def items(self):
        """``(tid, versions)`` of every tensor, in the graph's node order."""
        N, later = self._N, self._later
        for n, d in N.items():
            if d.get("kind") == "tensor" and d.get("version") == 0:
                yield d["tid"], self[d["tid"]]
        for tid in later:
            if f"t:{tid}.0" not in N:
                yield tid, self[tid]

    def values(self):
        return (vs for _, vs in self.items())


def eager_versions(N):
    """``tid -> [version nodes, oldest first]`` of any graph (node names not relied on)."""
    versions = defaultdict(list)
    for n, d in N.items():
        if d.get("kind") == "tensor":
            versions[d["tid"]].append(n)
    for vs in versions.values():
        if len(vs) > 1:
            vs.sort(key=lambda n: N[n]["version"])
    return versions


class Query:
    """Indexes over one trace graph that the checks share, built in one pass over the
    nodes and one over the edges. ``input``/``output`` edges (most of a trace) are kept
    as plain lists of node ids, their attributes read from the graph when a check needs
    them."""

    def __init__(self, G):
        self.G = G
        # networkx's own node dict (read only): copying 600k attribute dicts costs more
        # than the checks themselves.
        N = self.N = getattr(G, "_node", None)
        if not isinstance(N, dict):
            N = self.N = dict(G.nodes(data=True))
        ops, later, by_name, out_ops, mode_ops, bws = [], defaultdict(list), {}, [], [], []
        last, in_order, by_id = -1, True, True
        for n, d in N.items():
            k = d.get("kind")
            if k == "tensor":
                tid, ver = d["tid"], d.get("version")
                if by_id and n != f"t:{tid}.{ver}":
                    by_id = False
                if ver != 0:
                    later[tid].append(n)
            elif k == "op":
                ops.append(n)
                s = d["seq"]
                in_order = in_order and s > last
                last = s
                named = by_name.get(d["name"])
                if named is None:
                    by_name[d["name"]] = [n]
                else:
                    named.append(n)
                if d["category"] == "out":
                    out_ops.append(n)
                elif d["category"] == "grad_mode":
                    mode_ops.append(n)
            elif k == "backward":
                bws.append(n)
        if not in_order:
            ops.sort(key=lambda n: N[n]["seq"])
            for named in by_name.values():
                named.sort(key=lambda n: N[n]["seq"])
        for vs in later.values():
            if len(vs) > 1:
                vs.sort(key=lambda n: N[n]["version"])
        versions = _Versions(N, later) if by_id else eager_versions(N)
        self.ops, self._by_name = ops, by_name
        self.out_ops = sorted(out_ops, key=lambda n: N[n]["seq"])
        self.mode_ops = sorted(mode_ops, key=lambda n: N[n]["seq"])
        self.versions = versions
        self._on_storage = None
        self.out = {k: defaultdict(list) for k in _EDGE_KINDS}  # kind -> u -> [(v, attrs)]
        self.inn = {k: defaultdict(list) for k in _EDGE_KINDS}  # kind -> v -> [(u, attrs)]
        self.edges = {k: [] for k in _EDGE_KINDS}  # kind -> [(u, v, attrs)]
        small = set(_EDGE_KINDS)
        for u, nbrs in G.adjacency():
            for v, keyed in nbrs.items():
                for d in keyed.values():
                    k = d.get("kind")
                    if k in small:
                        self.out[k][u].append((v, d))
                        self.inn[k][v].append((u, d))
                        self.edges[k].append((u, v, d))
        self._ins, self._outs, self._cons = {}, {}, {}
        # networkx's own adjacency dicts (read only), falling back to its views
        succ, pred = getattr(G, "_succ", None), getattr(G, "_pred", None)
        self._succ = succ if isinstance(succ, dict) else G.succ
        self._pred = pred if isinstance(pred, dict) else G.pred
        self.backwards = sorted(bws, key=lambda n: self.seq(N[n].get("op")))
        self._reach = {}

    @property
    def on_storage(self):
        """storage id -> the tensor versions on it."""
        if self._on_storage is None:
            self._on_storage = defaultdict(list)
            for vs in self.versions.values():
                for n in vs:
                    self._on_storage[self.N[n].get("storage")].append(n)
        return self._on_storage

    def _adjacent(self, adj, n, kind, want):
        N = self.N
        out = []
        for m, keyed in adj[n].items():
            if N[m].get("kind") == want:
                for d in keyed.values():
                    if d.get("kind") == kind:
                        out.append(m)
                        break
        return out

    def inputs(self, op):
        """The tensors an op read, in argument order."""
        r = self._ins.get(op)
        if r is None:
            r = self._ins[op] = self._in_order(op) if op in self.N else []
        return r

    def _in_order(self, op):
        N, found = self.N, []
        for m, keyed in self._pred[op].items():
            if N[m].get("kind") == "tensor":
                for d in keyed.values():
                    if d.get("kind") == "input":
                        found.append((pos_key(d.get("pos")), m))
                        break
        if len(found) > 1:
            found.sort(key=lambda t: t[0])
        return [m for _, m in found]

    def outputs(self, op):
        """The tensors an op returned."""
        r = self._outs.get(op)
        if r is None:
            r = self._outs[op] = self._adjacent(self._succ, op, "output", "tensor") if op in self.N else []
        return r

    def consumers(self, n):
        """The ops that read node ``n`` (a tensor version or a numpy array)."""
        r = self._cons.get(n)
        if r is None:
            r = self._cons[n] = self._adjacent(self._succ, n, "input", "op") if n in self.N else []
        return r

    def producer(self, t):
        if t not in self.N:
            return None
        return next(iter(self._adjacent(self._pred, t, "output", "op")), None)

    def input_edges(self, op):
        """(node, attrs) of each input edge of an op."""
        return [(u, d) for u, keyed in self._pred[op].items() for d in keyed.values() if d.get("kind") == "input"]

    def ops_named(self, names):
        """The ops with one of these names, in order."""
        return sorted((o for n in names for o in self._by_name.get(n, ())), key=self.seq)


    def seq(self, op):
        d = self.N.get(op)
        return d["seq"] if d is not None and "seq" in d else -1

    def kind_of(self, n):
        d = self.N.get(n)
        return d["kind"] if d is not None else None

    def uses(self, tid):
        """Ops reading any version of tensor ``tid``, in order."""
        found = {op for n in self.versions[tid] for op in self.consumers(n)}
        return sorted(found, key=self.seq)

    def label(self, t):
        return self.N[t].get("label") if t in self.N else None

    def name(self, t):
        """How a message names a tensor: `y`, or the line that made it (never a node id)."""
        lab = self.label(t)
        if lab:
            return f"`{lab}`"
        if t in self.N:
            for n in self.versions[self.N[t]["tid"]]:
                if self.label(n):
                    return f"`{self.label(n)}`"
            p = self.producer(self.versions[self.N[t]["tid"]][0])
            if p is not None:
                code = self.N[p].get("code")
                stmt = code.split("#")[0].strip() if code else None
                return (f"a value computed in `{stmt}` ({self.where(p)})" if stmt
                        else f"the result of {self.N[p]['name']} ({self.where(p)})")
            use = next(iter(self.uses(self.N[t]["tid"])), None)
            if use is not None:
                return f"a {'parameter' if self.N[t].get('is_leaf') and self.N[t].get('requires_grad') else 'tensor'} " \
                       f"first used at {self.where(use)}"
        return "an unnamed tensor"

    def where(self, op):
        d = self.N.get(op) or {}
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
            stack = [self.N[t].get("grad_fn") for t, _ in self.out["weights"].get(bw, ())]
            r = set()
            while stack:
                fn = stack.pop()
                if fn is None or fn in r:
                    continue
                r.add(fn)
                stack.extend(v for v, _ in self.out["next"].get(fn, ()))
            self._reach[bw] = r
        return r

    def backward_after(self, seq, fn):
        """The first backward call after op ``seq`` whose graph reaches autograd node ``fn``."""
        if getattr(self, "_bw_seqs", None) is None:
            self._bw_seqs = [self.bw_seq(b) for b in self.backwards]
        for b in self.backwards[bisect.bisect_right(self._bw_seqs, seq):]:
            if fn in self.reach(b):
                return b
        return None

    def backwards_reaching(self, fn):
        """The backward calls (in call order) whose graph reaches autograd node ``fn``."""
        by_fn = getattr(self, "_bws_of_fn", None)
        if by_fn is None:  # one pass over every call's reach, not one per question
            by_fn = self._bws_of_fn = defaultdict(list)
            for bw in self.backwards:
                for f in self.reach(bw):
                    by_fn[f].append(bw)
        return list(by_fn.get(fn, ()))

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
        ref = {"node": t, "label": d.get("label"), "name": plain_name(self.name(t)), "shape": d.get("shape"),
               "dtype": d.get("dtype")}
        if role:
            ref["role"] = role
        return ref


def plain_name(name):
    return name[1:-1] if name.startswith("`") and name.endswith("`") and name.count("`") == 2 else name



def written_tensor(q, op, tensor_nodes):
    """The tensor the op wrote through: its input on the storage of ``tensor_nodes``."""
    sids = {q.N[t].get("storage") for t in tensor_nodes}
    ins = sorted(q.input_edges(op), key=lambda e: (e[1].get("pos") != "out", str(e[1].get("pos"))))
    for u, _ in ins:
        if q.kind_of(u) == "tensor" and q.N[u].get("storage") in sids:
            return u
    return None


def alias_of(q, t):
    """``data`` or ``detach`` when ``t`` is that alias of another tensor."""
    first = q.versions[q.N[t]["tid"]][0]
    return next((d.get("alias") for _, d in q.out["view_of"][first] if d.get("alias")), None)


def is_view(q, t):
    first = q.versions[q.N[t]["tid"]][0]
    return any(not d.get("alias") for _, d in q.out["view_of"][first])


def written_through(q, w, target):
    """' through view `v`' when the write ``w`` went through another tensor than ``target``."""
    if w is None or q.N[w]["tid"] == q.N[target]["tid"]:
        return ""
    a = alias_of(q, w)
    if a:
        return f" through `.{a}()`" if a == "detach" else f" through `.{a}`"
    return f" through the view {q.name(w)}" if is_view(q, w) else f" through {q.name(w)}, which shares its storage"


def data_alias(q, t):
    """True when ``t`` is ``.data`` of another tensor, or a view of one: writes through
    it do not move the version counter autograd checks."""
    for _ in range(8):
        if t is None or t not in q.N:
            return False
        first = q.versions[q.N[t]["tid"]][0]
        up = q.out["view_of"].get(first, ())
        if not up:
            return False
        if any(d.get("alias") == "data" for _, d in up):
            return True
        t = up[0][0]
    return False


