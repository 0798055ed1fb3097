"""One run of a diff, indexed once: its ops in call order, each op's inputs, outputs
and in-place writes, gradients per backward call, collectives, modules, and the
names a report gives its tensors and parameters (:class:`Run`). Also the module
path and parameter-name rules that let a data-parallel run line up with a
single-device one."""

from __future__ import annotations

import ast
import functools

from ..summary import ops_in_order
from .tolerances import FLOATING_DTYPES, PRECISION_ORDER

__all__ = ["LIST_LIMIT", "UNINITIALIZED_OPS", "WRAPPER_MODULES", "Run", "model_path", "pos_key",
           "strip_wrapper_prefix"]

# every report section reads runs, so the cap on the items of each listed section sits here
LIST_LIMIT = 50
# their outputs hold whatever memory was there: never a difference between runs
UNINITIALIZED_OPS = ("empty", "empty_like", "new_empty", "empty_strided", "empty_permuted")
WRAPPER_MODULES = ("DistributedDataParallel", "DataParallel")


class Run:
    """A trace graph ``G`` and its captured ``values``, indexed for comparing."""

    def __init__(self, G, values=None):
        self.G = G
        self.values = values or {}
        self.ops = ops_in_order(G)
        self.seq = {n: d["seq"] for n, d in self.ops}
        self.outputs, self.inputs, self.writes = {}, {}, {}
        self.producer = {}
        self.grads, self.leaf_grads = {}, {}
        self.moves = {}
        self.collectives = []
        for u, v, d in G.edges(data=True):
            k = d.get("kind")
            if k == "output" and G.nodes[v].get("kind") == "tensor":
                self.outputs.setdefault(u, []).append((str(d.get("pos")), v))
                self.producer.setdefault(v, u)
            elif k == "input" and G.nodes[u].get("kind") == "tensor":
                self.inputs.setdefault(v, []).append((str(d.get("pos")), u))
            elif k == "next_version" and d.get("op"):
                self.writes.setdefault(d["op"], []).append((u, v))
                self.producer.setdefault(v, d["op"])
            elif k == "grad":
                self.grads.setdefault(u, {})[v] = d
            elif k == "leaf_grad":
                self.leaf_grads.setdefault(u, {})[v] = d
            elif k == "moved_to" and not d.get("autocast"):  # autocast's casts are no .to() call
                self.moves[v] = (u, d)
        for lst in (self.outputs, self.inputs):
            for k in lst:
                lst[k].sort(key=lambda x: pos_key(x[0]))
        for k in self.writes:
            self.writes[k].sort(key=lambda x: (G.nodes[x[0]].get("tid", 0), G.nodes[x[0]].get("version", 0)))
        self.backwards = sorted((n for n, d in G.nodes(data=True) if d.get("kind") == "backward"),
                                key=lambda n: G.nodes[n].get("seq", 0))
        self.collectives = sorted(((n, d) for n, d in G.nodes(data=True) if d.get("kind") == "collective"),
                                  key=lambda x: int(x[0].split(":")[1]))
        self.modules = {d["path"]: d.get("type") for _, d in G.nodes(data=True) if d.get("kind") == "module"}
        self.consumers = {}  # tid -> [(seq, op, pos)]
        for op, ins in self.inputs.items():
            for pos, t in ins:
                self.consumers.setdefault(G.nodes[t].get("tid"), []).append((self.seq.get(op, 0), op, pos))
        self.pnames = {}  # tid -> parameter name, from DDP's buckets
        for c, d in self.collectives:
            targets = [v for _, v, e in G.out_edges(c, data=True) if e.get("kind") == "reduces"]
            for name, t in zip(d.get("params") or [], targets):
                self.pnames.setdefault(G.nodes[t].get("tid"), name)
        self.next_op = {n: self.ops[i + 1][1] for i, (n, _) in enumerate(self.ops[:-1])}
        # DDP names parameters under the model it wraps, so that model's path is kept
        self.wrapped = next((v[len("mod:"):] for u, v, e in G.edges(data=True) if e.get("kind") == "parent"
                             and G.nodes[u].get("type") in WRAPPER_MODULES), None)
        self._precisions = None
        self.rank = G.graph.get("rank", 0) or 0
        self.world = G.graph.get("world_size", 1) or 1
        # counted per module path and op name, so an op added in one module shifts no key elsewhere
        counts, self.key = {}, {}
        for n, d in self.ops:
            k = (model_path(d.get("module")), d["name"])
            i = counts.get(k, 0)
            counts[k] = i + 1
            self.key[n] = (*k, i)

    def precision(self, t) -> str | None:
        """The dtype tensor node ``t`` is judged at: the least precise floating dtype
        its value was computed through (``p.double().sum()`` of a float32 ``p`` carries
        float32's rounding, and is judged at float32's tolerance)."""
        if self._precisions is None:
            self._precisions = self._lowest_precisions()
        return self._precisions.get(t) or self.G.nodes[t].get("dtype")

    def _lowest_precisions(self) -> dict:
        N, out = self.G.nodes, {}
        rank = PRECISION_ORDER.index
        for op, _ in self.ops:
            came = {out.get(t) or N[t].get("dtype") for _, t in self.inputs.get(op, ())} & FLOATING_DTYPES
            made = [t for _, t in self.outputs.get(op, ())] + [v for _, v in self.writes.get(op, ())]
            for t in made:
                own = N[t].get("dtype")
                if own in FLOATING_DTYPES and came:
                    out[t] = min(came | {own}, key=rank)
        return out

    def shape(self, op):
        """Return the shape of op ``op``'s first output as a tuple, or None when it has none."""
        outs = self.outputs.get(op)
        return tuple(self.G.nodes[outs[0][1]].get("shape") or ()) if outs else None

    def op_text(self, op):
        """Return what a report says of op ``op``: its name, seq, category, module,
        source file, line and code, and phase."""
        d = self.G.nodes[op]
        return {"op": op, "name": d.get("name"), "seq": d.get("seq"), "category": d.get("category"),
                "module": d.get("module"), "file": d.get("file"), "line": d.get("line"),
                "code": d.get("code"), "phase": d.get("phase")}

    def label(self, t):
        """What the report calls tensor node ``t``: its variable label, else the name
        the program's source assigned it to (``self.pos``), else its node id."""
        d = self.G.nodes[t]
        return d.get("label") or self.source_name(t) or t

    def source_name(self, t):
        """The name a tensor was assigned to on the line that made it (``self.pos =
        torch.zeros(...)``), qualified by the module that uses it (``LM.pos``), when
        the tensor is the last thing that line computed; else None."""
        op = self.producer.get(t)
        outs = self.outputs.get(op) or []
        if op is None or not outs or outs[0][1] != t:
            return None
        od = self.G.nodes[op]
        nxt = self.next_op.get(op)
        if nxt is not None and (nxt.get("file"), nxt.get("line")) == (od.get("file"), od.get("line")):
            return None  # the line went on computing: its target is a later tensor
        name = _assigned_name(od.get("code"))
        if name is None or not name.startswith("self."):
            return name
        attr = name[len("self."):]
        for _, use, _ in sorted(self.consumers.get(self.G.nodes[t].get("tid"), [])):
            ud = self.G.nodes[use]
            if ud.get("module") and name in (ud.get("code") or ""):
                return f"{model_path(ud['module'])}.{attr}"
        return name

    def param_name(self, t):
        """A parameter's name: its module-path label (``MLP.fc1.weight``), DDP's bucket
        name under the wrapped model's path, the module and argument of the first op
        that used it (``fc1.weight`` of ``linear``), the name the source gave it, or
        its node id. Never an invented argument position."""
        d = self.G.nodes[t]
        tid = d.get("tid")
        lab = d.get("label") or ""
        if "." in lab and lab.rsplit(".", 1)[0] in self.modules:
            mod, leaf = lab.rsplit(".", 1)
            mp = model_path(mod)
            return leaf if mp in (None, "") or mp in WRAPPER_MODULES else f"{mp}.{leaf}"
        if tid in self.pnames:
            return _under(self.wrapped, strip_wrapper_prefix(self.pnames[tid]))
        for _, op, pos in sorted(self.consumers.get(tid, [])):
            od = self.G.nodes[op]
            m = od.get("module")
            arg = _ARG_NAMES.get(od.get("name", "").rsplit(".", 1)[-1], {}).get(str(pos))
            if m and arg:
                return f"{model_path(m)}.{arg}"
        return self.label(t)

    def leaf_grads_by_backward(self) -> list:
        """Return, per backward call, ``{parameter tensor node: edge attrs}`` of the
        accumulated ``.grad``."""
        return [dict(self.leaf_grads.get(bw, {})) for bw in self.backwards]


_ARG_NAMES = {
    "linear": {"1": "weight", "2": "bias"}, "bilinear": {"2": "weight", "3": "bias"},
    "conv1d": {"1": "weight", "2": "bias"}, "conv2d": {"1": "weight", "2": "bias"},
    "conv3d": {"1": "weight", "2": "bias"}, "embedding": {"1": "weight"},
    "batch_norm": {"1": "running_mean", "2": "running_var", "3": "weight", "4": "bias",
                   "running_mean": "running_mean", "running_var": "running_var", "weight": "weight",
                   "bias": "bias"},
    "layer_norm": {"2": "weight", "3": "bias", "weight": "weight", "bias": "bias"},
    "group_norm": {"2": "weight", "3": "bias", "weight": "weight", "bias": "bias"},
}


@functools.lru_cache(maxsize=4096)
def _assigned_name(code):
    """The one target of an assignment line (``x``, ``self.pos``), else None."""
    try:
        tree = ast.parse((code or "").strip())
    except SyntaxError:
        return None
    if len(tree.body) != 1:
        return None
    st = tree.body[0]
    targets = st.targets if isinstance(st, ast.Assign) else [st.target] if isinstance(
        st, (ast.AnnAssign, ast.AugAssign)) else []
    if len(targets) != 1 or not isinstance(targets[0], (ast.Name, ast.Attribute)):
        return None
    try:
        return ast.unparse(targets[0])
    except Exception:  # pragma: no cover - ast.unparse handles every Name/Attribute
        return None


def strip_wrapper_prefix(name):
    """Return a parameter name without a data-parallel wrapper's own prefix (DDP's
    ``module.``, or a ``DistributedDataParallel.`` path)."""
    name = model_path(name) or name
    return name[len("module."):] if name.startswith("module.") else name


def _under(root, name):
    return f"{root}.{name}" if root else name


def pos_key(p):
    """Return the sort key of an edge's ``pos``: its dotted numbers, a keyword after them."""
    return tuple(int(x) if x.isdigit() else 10**6 for x in str(p).split("."))


def model_path(m):
    """Return module path ``m`` without the data-parallel wrapper (None for None), so
    DDP and single-device runs align."""
    if m is None:
        return None
    for w in WRAPPER_MODULES:
        if m == w:
            return m
        if m.startswith(w + "."):
            return m[len(w) + 1:]
    return m
