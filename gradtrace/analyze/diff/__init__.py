"""Diff two traces of one program (on two targets) or of two versions of a program.

``diff_graphs(A, B)`` aligns the runs' ops (exact key first: module path, op name
and occurrence within the module; then a sequence alignment on op name and shape
for the rest), compares every aligned op output and every gradient (full values
when both runs kept them, statistics otherwise) against the per-dtype default
tolerances of ``torch.testing.assert_close``, and finds the first op that
diverges. With data-parallel ranks it also compares per-rank losses and the
all-reduced gradients with the single-device run. ``accuracy_vs_reference``
judges two runs against a float64 run the way PyTorch's own accuracy checks do.
"""

from __future__ import annotations

import difflib
import functools
import math
from pathlib import Path

import torch

from ..summary import ops_in_order

# torch.testing.assert_close defaults: dtype -> (rtol, atol)
DEFAULT_TOLERANCES = {
    "float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7), "complex32": (1e-3, 1e-5), "complex64": (1.3e-6, 1e-5),
    "complex128": (1e-7, 1e-7),
}
_PRECISION = ["bfloat16", "float16", "complex32", "float32", "complex64", "float64", "complex128"]
_FLOATS = frozenset(_PRECISION)
REFERENCE_MULTIPLIER = 2.0  # torch._dynamo.utils.same: res_error <= 2 * ref_error + tol / 10
REFERENCE_TOL = 1e-4
_LIST = 50  # items of each list kept in the report
_UNINITIALIZED = ("empty", "empty_like", "new_empty", "empty_strided", "empty_permuted")
_WRAPPER_MODULES = ("DistributedDataParallel", "DataParallel")


def tolerance(dtype_a, dtype_b=None, rtol=None, atol=None):
    """``(rtol, atol)`` for comparing two dtypes: the looser default of the two
    (``assert_close``'s), unless given."""
    cands = [d for d in (dtype_a, dtype_b) if d in DEFAULT_TOLERANCES]
    if cands:
        low = min(cands, key=lambda d: _PRECISION.index(d))
        r, a = DEFAULT_TOLERANCES[low]
    else:
        r, a = 0.0, 0.0
    return (r if rtol is None else rtol), (a if atol is None else atol)


# -- a run, indexed --------------------------------------------------------------------


class _Run:
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
                lst[k].sort(key=lambda x: _pos_key(x[0]))
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
        # the model a data-parallel wrapper holds: DDP names parameters under it
        self.wrapped = next((v[len("mod:"):] for u, v, e in G.edges(data=True) if e.get("kind") == "parent"
                             and G.nodes[u].get("type") in _WRAPPER_MODULES), None)
        self._precisions = None
        self.rank = G.graph.get("rank", 0) or 0
        self.world = G.graph.get("world_size", 1) or 1
        # exact keys: module path, op name, occurrence within the module
        counts, self.key = {}, {}
        for n, d in self.ops:
            k = (_model_path(d.get("module")), d["name"])
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
        rank = _PRECISION.index
        for op, _ in self.ops:
            came = {out.get(t) or N[t].get("dtype") for _, t in self.inputs.get(op, ())} & _FLOATS
            made = [t for _, t in self.outputs.get(op, ())] + [v for _, v in self.writes.get(op, ())]
            for t in made:
                own = N[t].get("dtype")
                if own in _FLOATS and came:
                    out[t] = min(came | {own}, key=rank)
        return out

    def shape(self, op):
        outs = self.outputs.get(op)
        return tuple(self.G.nodes[outs[0][1]].get("shape") or ()) if outs else None

    def op_text(self, op):
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
                return f"{_model_path(ud['module'])}.{attr}"
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
            mp = _model_path(mod)
            return leaf if mp in (None, "") or mp in _WRAPPER_MODULES else f"{mp}.{leaf}"
        if tid in self.pnames:
            return _under(self.wrapped, _strip_wrapper_prefix(self.pnames[tid]))
        for _, op, pos in sorted(self.consumers.get(tid, [])):
            od = self.G.nodes[op]
            m = od.get("module")
            arg = _ARG_NAMES.get(od.get("name", "").rsplit(".", 1)[-1], {}).get(str(pos))
            if m and arg:
                return f"{_model_path(m)}.{arg}"
        return self.label(t)


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
    import ast

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


def _strip_wrapper_prefix(name):
    """A parameter name without a data-parallel wrapper's own prefix (DDP's
    ``module.``, or a ``DistributedDataParallel.`` path)."""
    name = _model_path(name) or name
    return name[len("module."):] if name.startswith("module.") else name


def _under(root, name):
    return f"{root}.{name}" if root else name


def _pos_key(p):
    return tuple(int(x) if x.isdigit() else 10**6 for x in str(p).split("."))


def _model_path(m):
    """Module paths without the data-parallel wrapper, so DDP and single-device runs align."""
    if m is None:
        return None
    for w in _WRAPPER_MODULES:
        if m == w:
            return m
        if m.startswith(w + "."):
            return m[len(w) + 1:]
    return m


# -- alignment -------------------------------------------------------------------------


def align(ra: _Run, rb: _Run):
    """Return ``(pairs, how)``: aligned op nodes ``[(a, b)]`` in A's order, and
    ``{a: "key" | "sequence"}``."""
    by_key = {rb.key[n]: n for n, _ in rb.ops}
    cand = []
    for n, d in ra.ops:
        b = by_key.get(ra.key[n])
        if b is not None:
            cand.append((n, b))
    # keep the longest chain that is in order in both runs
    pairs = _monotone(cand, ra.seq, rb.seq)
    how = {a: "key" for a, _ in pairs}
    used_a = {a for a, _ in pairs}
    used_b = {b for _, b in pairs}
    rest_a = [n for n, _ in ra.ops if n not in used_a]
    rest_b = [n for n, _ in rb.ops if n not in used_b]
    if rest_a and rest_b:
        ta = [(ra.G.nodes[n]["name"], ra.shape(n)) for n in rest_a]
        tb = [(rb.G.nodes[n]["name"], rb.shape(n)) for n in rest_b]
        sm = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
        extra = []
        for blk in sm.get_matching_blocks():
            for i in range(blk.size):
                extra.append((rest_a[blk.a + i], rest_b[blk.b + i]))
        for a, b in extra:
            how[a] = "sequence"
        pairs = sorted(pairs + extra, key=lambda p: ra.seq[p[0]])
    return pairs, how


def _monotone(cand, sa, sb):
    """Longest subsequence of ``cand`` (sorted by A) whose B order also increases."""
    import bisect

    if not cand:
        return []
    tails, tails_i, prev = [], [], [-1] * len(cand)
    for i, (_, b) in enumerate(cand):
        v = sb[b]
        j = bisect.bisect_left(tails, v)
        if j == len(tails):
            tails.append(v)
            tails_i.append(i)
        else:
            tails[j] = v
            tails_i[j] = i
        prev[i] = tails_i[j - 1] if j > 0 else -1
    out, i = [], tails_i[-1]
    while i >= 0:
        out.append(cand[i])
        i = prev[i]
    return out[::-1]


def tensor_map(ra: _Run, rb: _Run, pairs) -> dict:
    """Tensor nodes of A mapped to B's, from aligned ops and from variable labels."""
    m = {}
    for a, b in pairs:
        oa, ob = dict(ra.outputs.get(a, [])), dict(rb.outputs.get(b, []))
        for p, t in oa.items():
            if p in ob:
                m.setdefault(t, ob[p])
        ia, ib = dict(ra.inputs.get(a, [])), dict(rb.inputs.get(b, []))
        for p, t in ia.items():
            if p in ib:
                m.setdefault(t, ib[p])
        for (u1, v1), (u2, v2) in zip(ra.writes.get(a, []), rb.writes.get(b, [])):
            m.setdefault(u1, u2)
            m.setdefault(v1, v2)
    # labelled tensors (parameters, named variables) by label and version
    lb = {}
    for n, d in rb.G.nodes(data=True):
        if d.get("kind") == "tensor" and d.get("label"):
            lb.setdefault((d["label"], d.get("version")), n)
    for n, d in ra.G.nodes(data=True):
        if d.get("kind") == "tensor" and d.get("label") and n not in m:
            b = lb.get((d["label"], d.get("version")))
            if b is not None:
                m[n] = b
    return m


# -- comparing tensors -----------------------------------------------------------------


def compare_values(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> dict:
    """Max absolute and relative error and the mismatched fraction of ``a`` against
    ``b`` (``|a - b| > atol + rtol * |b|``, NaNs equal to NaNs)."""
    if a.is_complex() or b.is_complex():
        a, b = a.to(torch.complex128), b.to(torch.complex128)
    else:
        a, b = a.to(torch.float64), b.to(torch.float64)
    if a.numel() == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "mismatch": 0.0, "agree": True, "n": 0}
    diff = (a - b).abs()
    both_nan = torch.isnan(a) & torch.isnan(b)
    same = (a == b) | both_nan
    diff = torch.where(same, torch.zeros_like(diff), diff)
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    babs = b.abs()
    tol = atol + rtol * torch.where(torch.isnan(babs), torch.zeros_like(babs), babs)
    bad = diff > tol
    rel = torch.where(babs > 0, diff / babs, torch.where(diff > 0, torch.full_like(diff, math.inf), diff))
    return {"max_abs": float(diff.max()), "max_rel": float(rel.max()), "mismatch": float(bad.double().mean()),
            "agree": not bool(bad.any()), "n": a.numel()}


def compare_stats(sa: dict, sb: dict, numel: int, rtol: float, atol: float) -> dict:
    """Compare two tensors by their statistics (a lower bound on their difference)."""
    if sa.get("nan") != sb.get("nan") or sa.get("inf") != sb.get("inf"):
        return {"max_abs": math.inf, "max_rel": math.inf, "mismatch": None, "agree": False, "n": numel,
                "note": f"NaN/Inf counts differ ({sa.get('nan')}/{sa.get('inf')} vs {sb.get('nan')}/{sb.get('inf')})"}

    def f(x):
        return 0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    scale = max(abs(f(sa.get(k))) for k in ("min", "max")) if sa else 0.0
    scale = max(scale, *(abs(f(sb.get(k))) for k in ("min", "max")))
    n = max(int(numel or 1), 1)
    deltas = [abs(f(sa.get(k)) - f(sb.get(k))) for k in ("min", "max", "mean")]
    deltas.append(abs(f(sa.get("norm")) - f(sb.get("norm"))) / math.sqrt(n))
    max_abs = max(deltas)
    tol = atol + rtol * scale
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    return {"max_abs": max_abs, "max_rel": rel, "mismatch": None, "agree": max_abs <= tol, "n": n}


class _Comparer:
    def __init__(self, ra: _Run, rb: _Run, rtol, atol):
        self.ra, self.rb, self.rtol, self.atol = ra, rb, rtol, atol
        self.cache = {}

    def tensor(self, ta, tb, va=None, vb=None, sa=None, sb=None, uninit=False, tol_dtype=None):
        """Compare tensor node ``ta`` of A with ``tb`` of B. ``va``/``vb`` name values
        (defaults: the nodes), ``sa``/``sb`` give statistics (defaults: the nodes').
        ``tol_dtype`` names the dtype whose tolerance applies (default: the looser of
        the two)."""
        key = (ta, tb, va, vb, tol_dtype)
        if key in self.cache and sa is None:
            return self.cache[key]
        da, db = self.ra.G.nodes[ta], self.rb.G.nodes[tb]
        shape_a, shape_b = list(da.get("shape") or []), list(db.get("shape") or [])
        if tol_dtype is not None:
            r, a = tolerance(tol_dtype, None, self.rtol, self.atol)
        else:
            r, a = tolerance(self.ra.precision(ta), self.rb.precision(tb), self.rtol, self.atol)
        res = {"a": ta, "b": tb, "label": da.get("label") or db.get("label") or self.ra.label(ta),
               "dtype": db.get("dtype"),
               "dtype_a": da.get("dtype"), "shape": shape_b, "shape_a": shape_a, "rtol": r, "atol": a}
        xa = self.ra.values.get(va or ta)
        xb = self.rb.values.get(vb or tb)
        sa = sa if sa is not None else da.get("stats")
        sb = sb if sb is not None else db.get("stats")
        if uninit:
            res.update(basis="uninitialized", agree=True)
        elif shape_a == shape_b:
            if xa is not None and xb is not None and tuple(xa.shape) == tuple(xb.shape):
                res.update(basis="values", **compare_values(xb, xa, r, a))
            elif sa and sb:
                # symmetric in its figures; A first so its note reads "A's counts vs B's"
                res.update(basis="stats", **compare_stats(sa, sb, _numel(shape_b), r, a))
            else:
                res.update(basis="none", agree=True)
        elif self._split(shape_a, shape_b):
            W, k = self.rb.world, self.rb.rank
            if xa is not None and xb is not None:
                n = shape_b[0]
                best = None
                for how, rows in (("contiguous", xa[k * n:(k + 1) * n]), ("strided", xa[k::W])):
                    if tuple(rows.shape) != tuple(xb.shape):
                        continue
                    c = compare_values(xb, rows, r, a)
                    c["split"] = how
                    if best is None or (c["agree"] and not best["agree"]) or c["max_abs"] < best["max_abs"]:
                        best = c
                if best is not None:
                    res.update(basis="rows", **best)
                else:
                    res.update(basis="batch-split", agree=True)
            else:
                res.update(basis="batch-split", agree=True)
        else:
            res.update(basis="shape", agree=False, max_abs=None, max_rel=None, mismatch=None,
                       note=f"shape {shape_a} vs {shape_b}")
        self.cache[key] = res
        return res

    def _split(self, sa, sb):
        W = self.rb.world
        return (W > 1 and len(sa) == len(sb) and len(sa) > 0 and sa[1:] == sb[1:]
                and sb[0] * W == sa[0])


def _numel(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n


# -- the diff --------------------------------------------------------------------------


def diff_graphs(A, B, rtol=None, atol=None, values_a=None, values_b=None, ranks=None, names=("A", "B")) -> dict:
    """Diff trace graph ``B`` against ``A`` (the baseline); return the report: sections
    ``config``, ``structure``, ``numerics``, ``first_divergence``, ``data_parallel``
    (null unless ``ranks``, the ``[(graph, values)]`` of B's data-parallel ranks, or
    B's ``world_size`` says B was data parallel) and ``agrees``."""
    ra, rb = _Run(A, values_a), _Run(B, values_b)
    pairs, how = align(ra, rb)
    tmap = tensor_map(ra, rb, pairs)
    cmp = _Comparer(ra, rb, rtol, atol)
    report = {"names": list(names), "tolerance": {"rtol": rtol, "atol": atol, "defaults": DEFAULT_TOLERANCES}}
    report["config"] = _config(ra, rb, ranks)
    report["structure"] = _structure(ra, rb, pairs, how)
    numerics, items = _numerics(ra, rb, pairs, tmap, cmp)
    report["numerics"] = numerics
    report["first_divergence"] = _first_divergence(ra, rb, items, pairs, cmp, tmap)
    dp = None
    if ranks or rb.world > 1:
        dp = _data_parallel(ra, rb, ranks or [(B, values_b)], rtol, atol)
    report["data_parallel"] = dp
    errors = {n: G.graph.get("error") for n, G in zip(names, (A, B)) if G.graph.get("status") == "error"}
    report["status"] = {names[0]: A.graph.get("status"), names[1]: B.graph.get("status")}
    report["errors"] = {k: {"type": v.get("type"), "message": v.get("message")} for k, v in errors.items() if v}
    # a list, not keyed by name: two folders may share one (runs/v1/cpu, runs/v2/cpu)
    report["failures"] = [_failure(G) if G.graph.get("status") == "error" else None for G in (A, B)]
    return settle_verdict(report)


def settle_verdict(report: dict) -> dict:
    """Set ``report["verdict"]`` (``agrees``, ``diverges``, ``failed``: one run raised,
    ``both failed``), ``failed_same_way`` (both raised the same exception at the same
    line; None unless both failed) and ``agrees`` (True only for ``agrees``: a run
    that raised never agrees). Returns the report."""
    fails = [f for f in report.get("failures") or () if f]
    dp = report.get("data_parallel")
    numbers_agree = report["numerics"]["diverging"] == 0 and (dp is None or dp["agrees"])
    if len(fails) == 2:
        verdict = "both failed"
        report["failed_same_way"] = _same_failure(*fails)
    else:
        verdict = "failed" if fails else ("agrees" if numbers_agree else "diverges")
        report["failed_same_way"] = None
    report["verdict"] = verdict
    report["agrees"] = verdict == "agrees"
    return report


def _same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return a == b


def _same_failure(f1, f2) -> bool:
    """Two failures are the same when type, message and the user's line agree."""
    key = ("type", "message", "line", "code")
    return all((f1 or {}).get(k) == (f2 or {}).get(k) for k in key)


def _failure(G) -> dict:
    """What a run that raised says about it: ``{type, message, file, line, code}``,
    the line being the deepest frame of the traced script (else of user code) in
    its traceback."""
    import re

    e = G.graph.get("error") or {}
    out = {"type": e.get("type"), "message": e.get("message"), "file": None, "line": None, "code": None}
    frames = re.findall(r'File "([^"]+)", line (\d+)[^\n]*\n(?:    (.*)\n)?', e.get("traceback") or "")
    script = str(G.graph.get("script") or "")
    library = ("site-packages", "/lib/python", "/gradtrace/", "<frozen")
    mine = [f for f in frames if script and _same_file(f[0], script)] or \
        [f for f in frames if not any(s in f[0] for s in library)]
    if mine:
        file, line, code = mine[-1]
        out.update(file=file, line=int(line), code=(code or "").strip() or None)
    return out


def _config(ra, rb, ranks):
    A, B = ra.G, rb.G
    out = {"versions": {}, "math": {}, "math_differs": [], "dtypes_differ": []}
    for k in ("torch_version", "python_version", "gradtrace_version"):
        out["versions"][k] = [A.graph.get(k), B.graph.get(k)]
    ma, mb = A.graph.get("math") or {}, B.graph.get("math") or {}
    for k in sorted(set(ma) | set(mb)):
        if k.startswith("autocast_"):
            continue  # read at the trace's start and end only; the ops' own record is below
        out["math"][k] = [ma.get(k), mb.get(k)]
        if ma.get(k) != mb.get(k) and k != "seed":
            out["math_differs"].append(k)
    out["autocast"] = [_autocast_used(A), _autocast_used(B)]
    out["autocast_differs"] = out["autocast"][0] != out["autocast"][1]
    out["target"] = [A.graph.get("target"), B.graph.get("target")]
    out["rng"] = [(A.graph.get("replay") or {}).get("rng"), (B.graph.get("replay") or {}).get("rng")]
    out["world_size"] = [ra.world, rb.world]
    rank_graphs = [g for g, _ in ranks] if ranks else [B]
    out["batch_shapes"] = {"A": _batch_shape(A), "B_ranks": [_batch_shape(g) for g in rank_graphs]}
    pa, pb = _param_dtypes(ra), _param_dtypes(rb)
    params = {}
    for na, nb in _match_names(pa, pb):
        params[na or nb] = [pa[na][1] if na else None, pb[nb][1] if nb else None, (pa.get(na) or pb[nb])[0]]
    out["parameters"] = dict(sorted(params.items()))
    out["dtypes_differ"] = [k for k, v in out["parameters"].items() if v[0] and v[1] and v[0] != v[1]]
    out["parameters_only"] = [[k for k, v in out["parameters"].items() if v[1] is None],
                              [k for k, v in out["parameters"].items() if v[0] is None]]
    return out


def _autocast_used(G) -> list:
    """The autocast regions a run's ops ran in, from their ``autocast`` attributes:
    ``[{"device", "dtype", "ops"}]`` (empty: no op ran under autocast). A trace whose
    ops carry no such attribute but whose settings show autocast on at its start or
    end gives ``{"device", "dtype": None, "ops": None}``."""
    counts = {}
    for _, d in G.nodes(data=True):
        if d.get("kind") == "op" and isinstance(d.get("autocast"), dict):
            for dev, dt in d["autocast"].items():
                counts[(dev, dt)] = counts.get((dev, dt), 0) + 1
    if counts:
        return [{"device": dev, "dtype": dt, "ops": n} for (dev, dt), n in sorted(counts.items())]
    on = set()
    for m in (G.graph.get("math_start") or {}, G.graph.get("math") or {}):
        on |= {k[len("autocast_"):] for k, v in m.items() if k.startswith("autocast_") and v is True}
    return [{"device": dev, "dtype": None, "ops": None} for dev in sorted(on)]


def _match_names(pa: dict, pb: dict) -> list:
    """Pair A's parameter names with B's: equal names first, then names that are
    equal under a data-parallel wrapper (DDP's ``module.``, a model's root path):
    ``[(name_a | None, name_b | None)]``."""
    pairs = [(n, n) for n in pa if n in pb]
    rest_a = [n for n in pa if n not in pb]
    rest_b = [n for n in pb if n not in pa]

    def same(x, y):
        x, y = _strip_wrapper_prefix(x), _strip_wrapper_prefix(y)
        return x == y or x.endswith("." + y) or y.endswith("." + x)

    for na in list(rest_a):
        hits = [nb for nb in rest_b if same(na, nb)]
        if len(hits) == 1 and sum(same(other, hits[0]) for other in rest_a) == 1:
            pairs.append((na, hits[0]))
            rest_a.remove(na)
            rest_b.remove(hits[0])
    return pairs + [(n, None) for n in rest_a] + [(None, n) for n in rest_b]


def _batch_shape(G):
    """The shape of the first tensor the model saw: the first input of its first op."""
    for n, d in ops_in_order(G):
        m = d.get("module")
        if m and m not in _WRAPPER_MODULES:
            ins = sorted(((str(e.get("pos")), u) for u, _, e in G.in_edges(n, data=True)
                          if e.get("kind") == "input" and G.nodes[u].get("kind") == "tensor"),
                         key=lambda x: _pos_key(x[0]))
            for _, u in ins:
                if not G.nodes[u].get("requires_grad") or not G.nodes[u].get("is_leaf"):
                    return G.nodes[u].get("shape")
            return G.nodes[ins[0][1]].get("shape") if ins else None
    return None


def _param_dtypes(r: _Run):
    """``{name: ("parameter"|"buffer", dtype)}`` for module parameters and buffers."""
    out = {}
    mods = set(r.modules)
    tensors = [(n, d) for n, d in r.G.nodes(data=True) if d.get("kind") == "tensor"]
    # the recorder marks each module's own parameters and buffers; a tensor that is
    # only an attribute (self.pos = torch.zeros(..., requires_grad=True)) is neither
    marked = any(d.get("param_kind") for _, d in tensors)
    for n, d in tensors:
        lab = d.get("label") or ""
        if marked:
            kind = d.get("param_kind")
            if kind not in ("parameter", "buffer"):
                continue
            name = r.param_name(n)
        else:
            is_param = bool(d.get("is_leaf") and d.get("requires_grad"))
            if not is_param and not ("." in lab and lab.rsplit(".", 1)[0] in mods):
                continue
            name = r.param_name(n)
            if (name == n or "." not in name) and d.get("tid") not in r.pnames:
                continue  # no module-path name: a loose tensor, not a module's parameter
            kind = "parameter" if is_param else "buffer"
        if name not in out or kind == "parameter":
            out[name] = (kind, d.get("dtype"))
    return out


def _structure(ra, rb, pairs, how):
    pa = {a for a, _ in pairs}
    pb = {b for _, b in pairs}
    only_a = [ra.op_text(n) for n, _ in ra.ops if n not in pa]
    only_b = [rb.op_text(n) for n, _ in rb.ops if n not in pb]
    aliasing, seen = [], {}
    for a, b in pairs:
        oa, ob = ra.outputs.get(a, []), rb.outputs.get(b, [])
        if not oa or not ob:
            continue
        ma, mb = ra.moves.get(oa[0][1]), rb.moves.get(ob[0][1])
        if ma is None or mb is None or ma[1].get("copy") == mb[1].get("copy"):
            continue
        r, out_t = (ra, oa[0][1]) if not ma[1].get("copy") else (rb, ob[0][1])
        write = _later_write(r, out_t, r.G.nodes[a if r is ra else b]["seq"])
        entry = {
            "op": ra.op_text(a), "copy": [bool(ma[1].get("copy")), bool(mb[1].get("copy"))],
            "devices": [f"{ma[1].get('src_device')}->{ma[1].get('dst_device')}",
                        f"{mb[1].get('src_device')}->{mb[1].get('dst_device')}"],
            "same_tensor_in": ra.G.graph.get("target") if r is ra else rb.G.graph.get("target"),
            "written_after": write, "meaning_changes": write is not None, "count": 1,
        }
        key = _aliasing_key(entry)
        if key in seen:  # the same line in a loop: one entry, counted
            seen[key]["count"] += 1
        else:
            seen[key] = entry
            aliasing.append(entry)
    colls = lambda r: [{"id": n, **{k: d.get(k) for k in ("op", "bucket", "numel", "params", "world_size", "rank")}}  # noqa: E731
                       for n, d in r.collectives]
    return {
        "ops": [len(ra.ops), len(rb.ops)],
        "aligned_by_key": sum(1 for v in how.values() if v == "key"),
        "aligned_by_sequence": sum(1 for v in how.values() if v == "sequence"),
        "only_a": only_a[:_LIST], "only_a_count": len(only_a),
        "only_b": only_b[:_LIST], "only_b_count": len(only_b),
        "noop_moves": [o for o in only_a + only_b if o["category"] in ("move", "convert")][:_LIST],
        "aliasing": aliasing,
        "collectives": [colls(ra), colls(rb)],
    }


def _aliasing_key(e):
    o, w = e["op"], e["written_after"] or {}
    return (o.get("name"), o.get("file"), o.get("line"), tuple(e["copy"]), tuple(e["devices"]),
            w.get("file"), w.get("line"))


def _later_write(r: _Run, t, after_seq):
    """The first write (a later ``next_version``) to tensor ``t``'s storage after op ``after_seq``."""
    G = r.G
    sid = G.nodes[t].get("storage")
    best = None
    for u, v, d in G.edges(data=True):
        if d.get("kind") != "next_version" or not d.get("op") or d.get("metadata_only"):
            continue
        if G.nodes[u].get("storage") != sid:
            continue
        s = G.nodes[d["op"]].get("seq", -1)
        if s > after_seq and (best is None or s < best[0]):
            best = (s, d["op"])
    return r.op_text(best[1]) if best else None


def _is_state(r: _Run, t) -> bool:
    """A parameter or buffer of a module (or another leaf that requires grad)."""
    d = r.G.nodes[t]
    if d.get("is_leaf") and d.get("requires_grad"):
        return True
    lab = d.get("label") or ""
    return "." in lab and lab.rsplit(".", 1)[0] in r.modules


def _numerics(ra, rb, pairs, tmap, cmp):
    items = []
    counts = {}
    dp = rb.world > 1
    local = set()  # B tensors computed from this rank's share of the batch
    for a, b in pairs:
        da = ra.G.nodes[a]
        uninit = da.get("name", "").rsplit(".", 1)[-1] in _UNINITIALIZED
        outs_b = dict(rb.outputs.get(b, []))
        dep = False
        if dp:
            ia = dict(ra.inputs.get(a, []))
            for pos, tb in rb.inputs.get(b, []):
                ta = ia.get(pos)
                if tb in local or (ta is not None and cmp._split(ra.G.nodes[ta].get("shape") or [],
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
    # gradients: backward calls in order; within a call, nearest the loss first
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
        "diverging_items": [_item_text(ra, rb, it) for it in diverging[:_LIST]],
        "grads_compared": sum(1 for it in compared if it["what"] in ("grad", "leaf_grad")),
    }
    return out, items


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
        asked = [d for d in inputs[i] if d != mine and d in _PRECISION]
        if devices and asked and other not in (other_cast or {}).values():
            looser = min(asked + [d for d in (other,) if d in _PRECISION], key=_PRECISION.index)
            return {"side": side, "device": devices[0], "dtype": mine, "tolerance_of": looser}
    return None


def _input_dtypes(r: _Run, op) -> list:
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


def _first_divergence(ra, rb, items, pairs, cmp, tmap):
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


# -- data parallel ---------------------------------------------------------------------


def _losses(r: _Run):
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


def _leaf_grads(r: _Run):
    """Per backward call: ``{parameter tensor node: edge attrs}`` of the accumulated ``.grad``."""
    return [dict(r.leaf_grads.get(bw, {})) for bw in r.backwards]


def _close(x, y, r, a):
    return abs(x - y) <= 10 * (a + r * abs(y)) + 1e-6 * abs(y)


def _data_parallel(ra, rb, ranks, rtol, atol):
    runs = [_Run(g, v) for g, v in ranks]
    W = max(rb.world, len(runs))
    out = {"world_size": W, "ranks": [r.rank for r in runs],
           "batch_shapes": [_batch_shape(r.G) for r in runs], "baseline_batch_shape": _batch_shape(ra.G)}
    base_losses = _losses(ra)
    rank_losses = [_losses(r) for r in runs]
    losses = []
    for i, bl in enumerate(base_losses):
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
    out["losses"] = losses
    # all-reduced gradients against the full-batch gradients
    base_g = _leaf_grads(ra)
    ranks_g = [_leaf_grads(r) for r in runs]
    tmaps = [tensor_map(ra, r, align(ra, r)[0]) for r in runs]
    grads, ratios = [], []
    cmp = _Comparer(ra, runs[0], rtol, atol)
    for i, bg in enumerate(base_g):
        g0 = ranks_g[0][i] if i < len(ranks_g[0]) else {}
        for ta, ea in bg.items():
            tb = tmaps[0].get(ta)
            if tb not in g0:
                continue
            eb = g0[tb]
            c = cmp.tensor(ta, tb, va=ea.get("value") or "-", vb=eb.get("value") or "-",
                           sa=ea.get("stats"), sb=eb.get("stats"))
            na, nb = (ea.get("stats") or {}).get("norm"), (eb.get("stats") or {}).get("norm")
            ratio = (na / nb) if na and nb else None
            if ratio is not None:
                ratios.append((i, ratio, c["agree"]))
            grads.append({"backward": i, "param": runs[0].param_name(tb), "basis": c["basis"],
                          "agree": c["agree"], "max_abs": c.get("max_abs"), "max_rel": c.get("max_rel"),
                          "mismatch": c.get("mismatch"), "norm_ratio": ratio})
    out["gradients"] = grads
    out["gradients_agree"] = all(g["agree"] for g in grads)
    factor = None
    first_bad = next((i for i, _, ok in ratios if not ok), None)
    rs = sorted(x for i, x, _ in ratios if i == first_bad)  # the first backward that disagrees
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
    out["constant_factor"] = factor
    # modules and parameters that behave differently under data parallel
    bns = set()
    for r in runs:
        for path, typ in r.modules.items():
            if typ and "BatchNorm" in typ and "SyncBatchNorm" not in typ:
                bns.add(f"{_model_path(path)} ({typ})")
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
    # rank outputs against the baseline's rows
    rows = []
    for r in runs[1:]:
        pairs, _ = align(ra, r)
        cmp = _Comparer(ra, r, rtol, atol)
        n_ok = n_bad = 0
        for a, b in pairs:
            ob = dict(r.outputs.get(b, []))
            for pos, ta in ra.outputs.get(a, []):
                if pos in ob:
                    c = cmp.tensor(ta, ob[pos])
                    if c["basis"] == "rows":
                        n_ok += c["agree"]
                        n_bad += not c["agree"]
        rows.append({"rank": r.rank, "rows_agree": n_ok, "rows_differ": n_bad})
    out["other_ranks_rows"] = rows
    out["agrees"] = out["gradients_agree"] and not no_grad
    return out


# -- against a float64 reference -------------------------------------------------------


def _rmse(x, ref):
    return float(torch.sqrt(torch.mean((x.double() - ref.double()) ** 2))) if ref.numel() else 0.0


def accuracy_vs_reference(R, values_r, A, values_a, B, values_b, names=("cpu64", "A", "B")) -> dict:
    """Judge run B's accuracy against the float64 run R, relative to baseline A's: per
    tensor, ``rmse(B, R) <= 2 * rmse(A, R) + 1e-5`` (torch._dynamo's ``same`` with an
    fp64 reference). Uses full values where all three runs kept them, else the
    statistics (min, max, mean, norm) as a proxy."""
    rr, ra, rb = _Run(R, values_r), _Run(A, values_a), _Run(B, values_b)
    pa, _ = align(rr, ra)
    pb, _ = align(rr, rb)
    ma, mb = tensor_map(rr, ra, pa), tensor_map(rr, rb, pb)
    checks = []

    def vec(r, node, value_key=None, stats=None):
        v = r.values.get(value_key or node)
        if v is not None:
            return v.double().flatten(), "values"
        s = stats if stats is not None else r.G.nodes[node].get("stats")
        if not s or s.get("nan") or s.get("inf"):
            return None, None
        return torch.tensor([s["min"], s["max"], s["mean"], s["norm"]], dtype=torch.float64), "stats"

    def check(what, ref_node, a_node, b_node, ea=None, eb=None, er=None):
        x_r, b1 = vec(rr, ref_node, (er or {}).get("value"), (er or {}).get("stats"))
        x_a, b2 = vec(ra, a_node, (ea or {}).get("value"), (ea or {}).get("stats"))
        x_b, b3 = vec(rb, b_node, (eb or {}).get("value"), (eb or {}).get("stats"))
        if x_r is None or x_a is None or x_b is None:
            return
        basis = "values" if b1 == b2 == b3 == "values" else "stats"
        if basis == "stats":
            x_r, _ = vec(rr, ref_node, "-", (er or {}).get("stats"))
            x_a, _ = vec(ra, a_node, "-", (ea or {}).get("stats"))
            x_b, _ = vec(rb, b_node, "-", (eb or {}).get("stats"))
            if x_r is None or x_a is None or x_b is None:
                return
        if x_r.shape != x_a.shape or x_r.shape != x_b.shape:
            return
        ea_, eb_ = _rmse(x_a, x_r), _rmse(x_b, x_r)
        ok = eb_ <= REFERENCE_MULTIPLIER * ea_ + REFERENCE_TOL / 10
        checks.append({"what": what, "label": rr.G.nodes[ref_node].get("label"), "basis": basis,
                       "rmse_baseline": ea_, "rmse_target": eb_, "ok": ok, "ref": ref_node})

    for n, d in rr.ops:
        if d.get("name", "").rsplit(".", 1)[-1] in _UNINITIALIZED:
            continue
        for _, t in rr.outputs.get(n, []):
            if t in ma and t in mb and rr.G.nodes[t].get("dtype", "").startswith(("float", "complex")):
                check("output", t, ma[t], mb[t])
    lr, la, lb = _leaf_grads(rr), _leaf_grads(ra), _leaf_grads(rb)
    for i, g in enumerate(lr):
        for t, e in g.items():
            ta, tb = ma.get(t), mb.get(t)
            if i < len(la) and i < len(lb) and ta in la[i] and tb in lb[i]:
                check("leaf_grad", t, ta, tb, la[i][ta], lb[i][tb], e)
    bad = [c for c in checks if not c["ok"]]
    worst = max(checks, key=lambda c: c["rmse_target"] / (c["rmse_baseline"] + 1e-30), default=None)
    ref, base, tgt = names
    if not checks:
        verdict = f"no tensors could be compared with the {ref} reference"
    elif not bad:
        verdict = f"the {tgt} run is as accurate as the {base} run ({len(checks)} tensors within " \
                  f"{REFERENCE_MULTIPLIER:g}x the {base} run's RMSE to {ref})"
    else:
        verdict = f"the {tgt} run is less accurate than the {base} run: {len(bad)} of {len(checks)} " \
                  f"tensors are further from {ref} than {REFERENCE_MULTIPLIER:g}x the {base} run's RMSE"
    return {"reference": ref, "baseline": base, "target": tgt, "checked": len(checks), "failed": len(bad),
            "as_accurate": bool(checks) and not bad, "verdict": verdict,
            "basis": sorted({c["basis"] for c in checks}),
            "worst": worst, "failures": bad[:_LIST]}


# -- loading and the convenience entry point -------------------------------------------


def load_run(path):
    """Load a trace folder, or a data-parallel target folder (``rank<k>`` inside it):
    return ``(graph, values, ranks)`` with ranks ``[(graph, values)]`` or None."""
    from ...trace import load

    p = Path(path)
    if p.is_dir() and not (p / "trace.json").exists():
        rank_dirs = sorted((d for d in p.glob("rank*") if (d / "trace.json").exists()),
                           key=lambda d: int(d.name[4:]) if d.name[4:].isdigit() else 0)
        if rank_dirs:
            loaded = [load(d) for d in rank_dirs]
            return loaded[0].graph, loaded[0].values, [(t.graph, t.values) for t in loaded]
    t = load(p)
    return t.graph, t.values, None


def diff(a, b, rtol=None, atol=None) -> dict:
    """Diff run ``b`` against run ``a``: each a :class:`gradtrace.Trace` or a trace
    folder (a data-parallel target folder with ``rank<k>`` folders works too)."""

    def get(x):
        if isinstance(x, (str, Path)):
            return load_run(x)
        return x.graph, x.values, None

    ga, va, _ = get(a)
    gb, vb, ranks = get(b)
    return diff_graphs(ga, gb, rtol=rtol, atol=atol, values_a=va, values_b=vb, ranks=ranks,
                       names=(str(ga.graph.get("target") or "A"), str(gb.graph.get("target") or "B")))


# -- text ------------------------------------------------------------------------------


def _fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        return f"{x:.3g}"
    return str(x)


def _where(d):
    if not d or not d.get("file"):
        return ""
    return f"{Path(d['file']).name}:{d.get('line')}"


_COMPARED = ("values", "stats", "rows", "shape")
_NOT_COMPARED = {"uninitialized": "uninitialized (torch.empty*)", "batch-split": "batch-split (no values kept)",
                 "rank-local": "rank-local", "none": "without values or statistics"}


def _dtype_counts(params: dict, kind: str, side: int) -> str:
    """One column of the parameter (or buffer) dtype row: ``float32 (4)``."""
    counts = {}
    for v in params.values():
        if v[2] == kind and v[side] is not None:
            counts[v[side]] = counts.get(v[side], 0) + 1
    return ", ".join(f"{dt} ({n})" for dt, n in sorted(counts.items()))


def _grouped(ops) -> list:
    """``[(op, count)]``: ops called from one line in one module, said once with a count."""
    out, at = [], {}
    for o in ops:
        key = (o.get("name"), o.get("category"), o.get("module"), o.get("file"), o.get("line"))
        if key in at:
            out[at[key]][1] += 1
        else:
            at[key] = len(out)
            out.append([o, 1])
    return [(o, k) for o, k in out]


def _buckets(calls) -> list:
    """``[(bucket, calls)]``: each bucket once (as first reduced), with how often it was
    all-reduced (once per step)."""
    out, at = [], {}
    for x in calls:
        if x.get("bucket") in at:
            out[at[x["bucket"]]][1] += 1
        else:
            at[x.get("bucket")] = len(out)
            out.append([x, 1])
    return [(x, k) for x, k in out]


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _in_module(o) -> str:
    """``in module `X` `` for an op that ran inside a module's forward, else ""."""
    m = (o or {}).get("module")
    return f"in module `{m}`" if m else ""


def _autocast_text(used) -> str:
    if not used:
        return "not used"
    return "; ".join(f"{u['device']} {u['dtype'] or '(dtype not recorded)'}"
                     + (f" ({_plural(u['ops'], 'op')})" if u.get("ops") else " (on at the trace's start or end)")
                     for u in used)


def _autocast_divergence_text(casts, lowered, a, b) -> str:
    """Where the first divergence sits relative to autocast regions."""
    parts = []
    for name, cast in zip((a, b), casts):
        if cast:
            parts.append(f"in {name} it ran inside an autocast region ("
                         + ", ".join(f"{dev} {dt}" for dev, dt in cast.items()) + ")")
        else:
            parts.append(f"in {name} outside any autocast region")
    text = "autocast: " + "; ".join(parts) + "."
    if lowered:
        side = a if lowered["side"] == "a" else b
        text += (f" Autocast gave {side}'s output {lowered['dtype']}; it is judged at the other run's "
                 f"{lowered['tolerance_of']} tolerance.")
    return text


def _verdict_line(report, a, b) -> str:
    """The verdict: agrees, diverges, or which run failed, where, and (both) whether the same way."""
    verdict = report.get("verdict") or ("agrees" if report["agrees"] else "diverges")
    fails = [(name, f) for name, f in zip((a, b), report.get("failures") or (None, None)) if f]
    if verdict == "both failed":
        if report.get("failed_same_way"):
            return (f"**Verdict: both runs failed, the same way**: {_failure_text(fails[0][1])} in both. "
                    "The comparison below covers what ran before.")
        return ("**Verdict: both runs failed, differently**: " + "; ".join(
            f"{k}: {_failure_text(f)}" for k, f in fails) + ". The comparison below covers what ran before.")
    if verdict == "failed" and fails:
        (k, f), = fails
        other = b if f is (report["failures"] or [None, None])[0] else a
        return (f"**Verdict: {k} failed**: {_failure_text(f)}; {other} ran to the end. "
                f"The comparison below covers what both ran.")
    return f"**Verdict: {verdict}**"


def _failure_text(f) -> str:
    where = f" at {Path(f['file']).name}:{f['line']}" if f.get("file") else ""
    code = f" `{f['code']}`" if f.get("code") else ""
    msg = (f.get("message") or "").strip().splitlines()
    return f"{f.get('type')}: {msg[0] if msg else ''}{where}{code}"


def format_report_md(report: dict, title: str | None = None) -> str:
    """The diff report as Markdown, sections in order: configuration, structure,
    numerics, first divergence, data parallel, float64 reference."""
    a, b = report.get("names", ["A", "B"])
    L = [f"## {title or f'{b} against {a}'}", "", _verdict_line(report, a, b), ""]
    c = report["config"]
    L += ["### 1. Configuration", "", f"| | {a} | {b} |", "| --- | --- | --- |"]
    for k, v in c["versions"].items():
        L.append(f"| {k} | {_fmt(v[0])} | {_fmt(v[1])} |")
    L.append(f"| target | {_fmt(c['target'][0])} | {_fmt(c['target'][1])} |")
    L.append(f"| rng | {_fmt(c['rng'][0])} | {_fmt(c['rng'][1])} |")
    L.append(f"| world size | {c['world_size'][0]} | {c['world_size'][1]} |")
    L.append(f"| batch shape (per rank) | {_fmt(c['batch_shapes']['A'])} | "
             f"{', '.join(_fmt(s) for s in c['batch_shapes']['B_ranks'])} |")
    if "autocast" in c:
        mark = " **differs**" if c.get("autocast_differs") else ""
        L.append(f"| autocast | {_autocast_text(c['autocast'][0])} | {_autocast_text(c['autocast'][1])}{mark} |")
    for k, v in c["math"].items():
        mark = " **differs**" if k in c["math_differs"] else ""
        L.append(f"| math.{k} | {_fmt(v[0])} | {_fmt(v[1])}{mark} |")
    for kind in ("parameter", "buffer"):
        cols = [_dtype_counts(c["parameters"], kind, i) for i in (0, 1)]
        if any(cols):
            mark = " **differs**" if cols[0] != cols[1] else ""
            L.append(f"| {kind} dtypes | {cols[0] or '-'} | {cols[1] or '-'}{mark} |")
    if c["dtypes_differ"]:
        L.append("\nDtypes differ for: " + ", ".join(
            f"{k} ({c['parameters'][k][0]} in {a}, {c['parameters'][k][1]} in {b})" for k in c["dtypes_differ"][:10])
            + (f", ... {len(c['dtypes_differ']) - 10} more" if len(c["dtypes_differ"]) > 10 else ""))
    for side, only in zip((a, b), c.get("parameters_only") or ([], [])):
        if only:
            L.append(f"\nParameters and buffers only in {side}: {', '.join(only[:10])}"
                     + (f", ... {len(only) - 10} more" if len(only) > 10 else ""))
    s = report["structure"]
    L += ["", "### 2. Structure", "",
          f"ops: {s['ops'][0]} in {a}, {s['ops'][1]} in {b}; aligned {s['aligned_by_key']} by key "
          f"(module, op, occurrence) and {s['aligned_by_sequence']} by sequence; "
          f"{s['only_a_count']} only in {a}, {s['only_b_count']} only in {b}."]
    for side, lst, n in ((a, s["only_a"], s["only_a_count"]), (b, s["only_b"], s["only_b_count"])):
        if lst:
            L.append(f"\nOnly in {side}:")
            groups = _grouped(lst)
            for o, k in groups[:12]:
                L.append(" ".join(x for x in (f"- `{o['name']}` ({o['category']})", f"{k} times" if k > 1 else "",
                                              _in_module(o), _where(o),
                                              f"`{o['code']}`" if o.get("code") else "") if x))
            if n > len(lst) or len(groups) > 12:
                L.append(f"- ... {n - sum(k for _, k in groups[:12])} more")
    for side, cl in zip((a, b), s["collectives"]):
        if cl:
            L.append(f"\nAll-reduce buckets in {side}: " + "; ".join(
                f"{x['id']} bucket {x['bucket']} ({x['numel']} elements, {len(x['params'] or [])} params, "
                f"world size {x['world_size']})" for x in cl[:8]) + (" ..." if len(cl) > 8 else ""))
    for al in s["aliasing"]:
        o = al["op"]
        times = f" ({al['count']} times)" if al.get("count", 1) > 1 else ""
        L.append(f"\nAliasing differs{times}: `{o['name']}` at {_where(o)} `{o.get('code') or ''}` copied in "
                 f"{a if al['copy'][0] else b} and returned the same tensor in {b if al['copy'][0] else a}"
                 + (f"; it is written afterwards at {_where(al['written_after'])} "
                    f"`{al['written_after'].get('code') or ''}`: what the program computes depends on whether `.to()` copied"
                    if al["meaning_changes"] else ""))
    n = report["numerics"]
    shown = sorted(n["by_basis"].items())
    how = [f"by {k} {v}" for k, v in shown if k in _COMPARED] + (
        [f"{n['grads_compared']} of them gradients"] if n["grads_compared"] else [])
    skipped = [f"{v} {_NOT_COMPARED.get(k, k)}" for k, v in shown if k not in _COMPARED]
    if n["compared"]:
        said = (f"compared {n['compared']} tensors ({', '.join(how)}): {n['agreeing']} agree, "
                f"{n['diverging']} diverge; largest absolute difference {_fmt(n['max_abs'])}"
                + (" (bit-identical)" if n["exact"] else "") + ".")
    else:
        said = "compared no tensors: no op output or gradient of one run was matched in the other."
    L += ["", "### 3. Numerics", "", said + (f" Not compared: {', '.join(skipped)}." if skipped else "")]
    if n["diverging_items"]:
        L += ["", "| what | op | where | tensor | basis | max abs | max rel | mismatched | rtol/atol |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for it in n["diverging_items"][:15]:
            o = it.get("op") or {}
            dtype = it.get("dtype") if it.get("dtype_a") in (None, it.get("dtype")) else \
                f"{it.get('dtype_a')}/{it.get('dtype')}"
            L.append(f"| {it['what']} | `{o.get('name', '')}` | {_where(o)} | {it.get('label') or it.get('a')} "
                     f"{it.get('shape')} {dtype} | {it['basis']} | {_fmt(it.get('max_abs'))} | "
                     f"{_fmt(it.get('max_rel'))} | {_fmt(it.get('mismatch'))} | {it['rtol']:.2g}/{it['atol']:.2g} |")
    f = report["first_divergence"]
    L += ["", "### First divergence", ""]
    if f is None:
        stopped = [name for name, f in zip((a, b), report.get("failures") or ()) if f]
        if not n["compared"]:
            L.append("none found: nothing was compared.")
        else:
            L.append("none: every compared tensor agrees within tolerance"
                     + (f", up to where {' and '.join(stopped)} raised." if stopped else "."))
    else:
        fig = f["figures"]
        L.append(f"{'forward' if f['what'] in ('output', 'write') else 'backward'} — `{f.get('name')}` "
                 f"(op {f.get('seq')}) {_in_module(f) or 'at top level (in no module)'} at "
                 f"{f.get('file')}:{f.get('line')}")
        L.append(f"\n    {f.get('code') or ''}\n")
        dtype = fig.get("dtype") if fig.get("dtype_a") in (None, fig.get("dtype")) else \
            f"{fig.get('dtype_a')} in {a}, {fig.get('dtype')} in {b}"
        L.append(f"{fig['what']} {fig.get('label') or fig.get('a')} {fig.get('shape')} {dtype}: "
                 f"max abs {_fmt(fig.get('max_abs'))}, max rel {_fmt(fig.get('max_rel'))}, mismatched "
                 f"{_fmt(fig.get('mismatch'))} (basis {fig['basis']}, rtol {fig['rtol']:.2g}, atol {fig['atol']:.2g})"
                 + (f"; {fig['note']}" if fig.get("note") else ""))
        if f.get("autocast"):
            L.append("\n" + _autocast_divergence_text(f["autocast"], fig.get("autocast"), a, b))
        if f.get("inputs") is not None:
            agreed = f.get("inputs_agreed") or []
            L.append(f"\ninputs that still agreed: {', '.join(agreed) if agreed else 'none'}"
                     + (f"; inputs that did not: {', '.join(i['label'] for i in f['inputs'] if not i['agree'])}"
                        if any(not i["agree"] for i in f["inputs"]) else ""))
    ex = report.get("explanation")
    if ex and ex.get("text"):
        L += ["", "### Likely cause", "", ex["text"]]
        if ex.get("tried"):
            L.append(f"\nre-run: {ex['tried']['target']} with {ex['tried']['switch_text']}, "
                     f"written to {ex['tried']['folder']}")
    dp = report.get("data_parallel")
    if dp:
        L += ["", "### 4. Data parallel against one device", "",
              f"world size {dp['world_size']}; batch per rank {', '.join(_fmt(x) for x in dp['batch_shapes'])} "
              f"against {_fmt(dp['baseline_batch_shape'])}."]
        for ls in dp["losses"]:
            L.append(f"- loss (backward {ls['backward']}): {a} {_fmt(ls['baseline'])}; ranks "
                     f"{', '.join(_fmt(x) for x in ls['ranks'])} (mean {_fmt(ls['mean_of_ranks'])}, sum "
                     f"{_fmt(ls['sum_of_ranks'])})" + (f"; the baseline is the {ls['matches']} of the rank losses"
                                                      if ls.get("matches") else ""))
        g_ok = sum(1 for g in dp["gradients"] if g["agree"])
        L.append(f"- all-reduced parameter gradients: {g_ok} of {len(dp['gradients'])} agree with the "
                 f"single-device full-batch gradients")
        bad = [g for g in dp["gradients"] if not g["agree"]]
        for g in bad[:8]:
            L.append(f"  - {g['param']} (backward {g['backward']}): max abs {_fmt(g['max_abs'])}, "
                     f"norm ratio {_fmt(g['norm_ratio'])}")
        if len(bad) > 8:
            L.append(f"  - ... {len(bad) - 8} more")
        if dp["constant_factor"]:
            L.append(f"- **{dp['constant_factor']['text']}**")
        if dp["batchnorm_not_synced"]:
            L.append(f"- BatchNorm without SyncBatchNorm (statistics per rank, not per batch): "
                     f"{', '.join(dp['batchnorm_not_synced'])}")
        if dp["no_grad_on_rank"]:
            L.append("- parameters with no gradient on some rank: " + ", ".join(
                f"{x['param']} (rank {x['rank']}, backward {x['backward']})" for x in dp["no_grad_on_rank"][:10]))
        for cl in dp["collectives"]:
            buckets = _buckets(cl["buckets"])
            L.append(f"- rank {cl['rank']}: {_plural(cl['count'], 'all-reduce call')} over "
                     f"{_plural(len(buckets), 'bucket')}: "
                     + "; ".join(f"bucket {x['bucket']} ({_plural(k, 'call')}): {x['numel']} elements "
                                 f"({', '.join(x['params'] or [])})" for x, k in buckets[:4])
                     + (" ..." if len(buckets) > 4 else ""))
        for r in dp["other_ranks_rows"]:
            if r["rows_agree"] + r["rows_differ"]:
                L.append(f"- rank {r['rank']} outputs against the baseline's rows: {r['rows_agree']} agree, "
                         f"{r['rows_differ']} differ")
            else:
                L.append(f"- rank {r['rank']} outputs against the baseline's rows: not compared (they need "
                         f"full values: --values all)")
    ref = report.get("reference")
    if ref:
        L += ["", "### 5. Against the float64 reference", "", ref["verdict"] + "."]
        if ref.get("worst"):
            w = ref["worst"]
            L.append(f"\nworst: {w['what']} {w.get('label') or w['ref']}: RMSE to {ref['reference']} "
                     f"{_fmt(w['rmse_target'])} ({ref['target']}) vs {_fmt(w['rmse_baseline'])} ({ref['baseline']}), "
                     f"basis {w['basis']}")
    return "\n".join(L) + "\n"


def format_replay_md(rep: dict) -> str:
    """The replay report: runs, verdicts and errors, then one diff per target."""
    L = [f"# gradtrace replay: {rep['script']} {' '.join(rep.get('argv') or [])}".rstrip(), ""]
    L.append(f"targets: {', '.join(rep['targets'])}; baseline: {rep['baseline']}; random numbers: "
             f"{rep['rng']['text']}; values kept: {rep['values']}.")
    L += ["", "| target | verdict | status | seconds | folder |", "| --- | --- | --- | --- | --- |"]
    for name, run in rep["runs"].items():
        verdict = "baseline" if name == rep["baseline"] and rep["verdicts"].get(name) != "failed" else \
            rep["verdicts"].get(name, "-")
        status = ", ".join(f"rank{r['rank']} {r['status']}" for r in run["ranks"]) if run["kind"] == "ddp" \
            else run["ranks"][0]["status"]
        L.append(f"| {name} | {verdict} | {status} | {run['seconds']} | {run['folder']} |")
    for name, run in rep["runs"].items():
        if run.get("placement"):
            L.append(f"\n{name}: {run['placement']['text']}.")
    for e in rep["errors"]:
        L.append(f"\n**error**: {e['text']}" + (" (timed out)" if e.get("timed_out") else "")
                 + (f"; traces kept: {', '.join(e['traces_kept'])}" if e.get("traces_kept") else ""))
    for name, c in rep["comparisons"].items():
        L += ["", format_report_md(c, title=f"{name} against {rep['baseline']}")]
    return "\n".join(L) + "\n"


# -- DOT around the first divergence ---------------------------------------------------


def divergence_dot(G, report: dict, side: str = "a", radius: int = 2) -> str | None:
    """DOT text of the ops and tensors within ``radius`` steps of the first divergence
    (in run ``side``'s graph), diverging nodes highlighted; None when nothing diverged."""
    f = report.get("first_divergence")
    if not f:
        return None
    centre = [n for n in f.get("nodes_" + side, []) if n in G]
    if not centre:
        return None
    keep_kinds = ("op", "tensor")
    H = G.subgraph([n for n, d in G.nodes(data=True) if d.get("kind") in keep_kinds]).to_undirected(as_view=True)
    region = set()
    for c in centre:
        if c in H:
            import networkx as nx

            region |= set(nx.single_source_shortest_path_length(H, c, cutoff=radius))
    key = "a" if side == "a" else "b"
    bad = {it.get(key) for it in report["numerics"]["diverging_items"]} | set(centre)
    lines = ["digraph divergence {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']

    def q(s):
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    for n in sorted(region, key=str):
        d = G.nodes[n]
        if d.get("kind") == "op":
            label = f"{d.get('name')}\\n{Path(d.get('file') or '').name}:{d.get('line')}"
            shape = "box"
        else:
            label = f"{d.get('label') or 't' + str(d.get('tid'))} v{d.get('version')}\\n{d.get('shape')} {d.get('dtype')}"
            shape = "ellipse"
        style = 'style=filled, fillcolor="#f4a6a6", color="#c00000", penwidth=2' if n in bad else \
            'style=filled, fillcolor="#eeeeee"'
        lines.append(f"  {q(n)} [label={q(label).replace(chr(92) * 2 + 'n', chr(92) + 'n')}, shape={shape}, {style}];")
    for u, v, d in G.edges(data=True):
        if u in region and v in region and d.get("kind") in ("input", "output", "next_version"):
            lines.append(f"  {q(u)} -> {q(v)} [label={q(d.get('kind'))}, fontsize=8];")
    lines.append("}")
    return "\n".join(lines) + "\n"
