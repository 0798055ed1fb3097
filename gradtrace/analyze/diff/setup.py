"""How two runs were set up, side by side: versions, math settings, autocast,
target, random numbers, world size, batch shape and the dtypes of parameters and
buffers (:func:`config_differences`); and how a run that raised failed
(:func:`run_failure`, :func:`same_failure`)."""

from __future__ import annotations

import re
from pathlib import Path

from ..summary import ops_in_order
from .runs import WRAPPER_MODULES, Run, pos_key, strip_wrapper_prefix

__all__ = ["batch_shape", "config_differences", "run_failure", "same_failure"]


def config_differences(ra: Run, rb: Run, ranks) -> dict:
    """Return the report's ``config`` section: each setting as ``[A's, B's]`` and
    the lists of those that differ."""
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
    out["batch_shapes"] = {"A": batch_shape(A), "B_ranks": [batch_shape(g) for g in rank_graphs]}
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
        x, y = strip_wrapper_prefix(x), strip_wrapper_prefix(y)
        return x == y or x.endswith("." + y) or y.endswith("." + x)

    for na in list(rest_a):
        hits = [nb for nb in rest_b if same(na, nb)]
        if len(hits) == 1 and sum(same(other, hits[0]) for other in rest_a) == 1:
            pairs.append((na, hits[0]))
            rest_a.remove(na)
            rest_b.remove(hits[0])
    return pairs + [(n, None) for n in rest_a] + [(None, n) for n in rest_b]


def batch_shape(G):
    """Return the shape of the first tensor the model saw: the first input that is no
    parameter of its first op inside a module (else that op's first input; None when
    no op ran inside a module)."""
    for n, d in ops_in_order(G):
        m = d.get("module")
        if m and m not in WRAPPER_MODULES:
            ins = sorted(((str(e.get("pos")), u) for u, _, e in G.in_edges(n, data=True)
                          if e.get("kind") == "input" and G.nodes[u].get("kind") == "tensor"),
                         key=lambda x: pos_key(x[0]))
            for _, u in ins:
                if not G.nodes[u].get("requires_grad") or not G.nodes[u].get("is_leaf"):
                    return G.nodes[u].get("shape")
            return G.nodes[ins[0][1]].get("shape") if ins else None
    return None


def _param_dtypes(r: Run):
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


def _same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return a == b


def same_failure(f1, f2) -> bool:
    """Return whether two failures are the same: type, message and the user's line agree."""
    key = ("type", "message", "line", "code")
    return all((f1 or {}).get(k) == (f2 or {}).get(k) for k in key)


def run_failure(G) -> dict:
    """Return what a run that raised says about it: ``{type, message, file, line,
    code}``, the line being the deepest frame of the traced script (else of user
    code) in its traceback."""
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
