"""The interactive viewer: one self-contained HTML page per trace.

The page holds the trace's ops, tensors, modules, autograd nodes and findings as
JSON, and the vendored cytoscape.js (with its dagre layout) inlined, so it opens
from disk with nothing fetched. Pan, zoom, folding of modules, search, the step and
phase selector and the panel of a clicked node all run in the browser from that
JSON; the layout is dagre's, never gradtrace's.
"""

from __future__ import annotations

import html as _html
import json
import math
import re
from importlib import resources
from pathlib import Path

from ..graph.names import name_of
from ..graph.query import op_inputs, op_outputs
from ..graph.steps import first_step
from . import fold
from .picture import CATEGORY_COLORS, DEFAULT_DEPTH, op_name, shape_text
from .steps import PHASES, find_steps

__all__ = ["DEFAULT_DEPTH", "FOLD_LINES_PAST", "HTML_MAX_OPS", "VENDOR_FILES", "notebook_html", "page_data",
           "to_html", "write_html"]

VENDOR_FILES = ("cytoscape.min.js", "cytoscape-dagre.min.js")
FOLD_LINES_PAST = 1000  # drawn elements past which ops of one source line fold into one node
HTML_MAX_OPS = 50_000  # past this the page is too slow to open; `gradtrace run` skips it


def _vendor_js() -> str:
    pkg = resources.files(__package__).joinpath("vendor")
    return "\n".join(pkg.joinpath(f).read_text(encoding="utf-8") for f in VENDOR_FILES)


def _tensor(G, n) -> dict:
    d = G.nodes[n]
    grads = []
    for bw, _, e in G.in_edges(n, data=True):
        if e.get("kind") in ("grad", "leaf_grad"):
            grads.append({"bw": bw, "kind": e["kind"], "stats": e.get("stats"),
                          "accumulated": bool(e.get("accumulated"))})
    name = name_of(d)
    param_of = d.get("param_of")
    if isinstance(param_of, str) and param_of.startswith("mod:") and name.startswith(param_of[4:] + "."):
        # a parameter by the user's name of its module (model.conv1.weight), as the module boxes read
        name = fold.user_path(G, param_of[4:]) + name[len(param_of) - 4:]
    return {"name": name, "tid": d.get("tid"), "version": d.get("version"),
            "shape": shape_text(d.get("shape")), "dtype": d.get("dtype"), "device": d.get("device"),
            "requires_grad": d.get("requires_grad"), "param": bool(d.get("param_of")),
            "stats": d.get("stats"), "grads": grads}


def _ops(G, steps, first: int, costs=None) -> tuple[list, set]:
    """The ops in call order, each step numbered as the run counted it (from ``first``),
    with their ``costs`` (``{op: {flops, saved, time_ns}}``) where given, and the tensors
    they touch."""
    ops, tensors = [], set()
    costs = costs or {}
    for n, d in sorted(((n, d) for n, d in G.nodes(data=True) if d.get("kind") == "op"),
                       key=lambda t: t[1].get("seq", 0)):
        ins, outs = op_inputs(G, n), op_outputs(G, n)
        fn = next((G.nodes[t].get("grad_fn") for t in outs if G.nodes[t].get("grad_fn")), None)
        tensors.update(ins)
        tensors.update(outs)
        ops.append({"id": n, "name": d.get("name"), "short": op_name(d), "cat": d.get("category"),
                    "module": d.get("module"), "file": d.get("file"), "line": d.get("line"),
                    "code": d.get("code"), "args": d.get("args"), "step": _numbered(steps.step_of.get(n), first),
                    "phase": steps.phase_of.get(n), "ins": ins, "outs": outs, "fn": fn,
                    "error": d.get("error"), "cost": costs.get(n)})
    return ops, tensors


def _versions(G, tensors) -> dict:
    """{tid: [tensor node of each version]} for the tensors the ops touch."""
    tids = {G.nodes[t].get("tid") for t in tensors}
    out: dict = {}
    for n, d in G.nodes(data=True):
        if d.get("kind") == "tensor" and d.get("tid") in tids:
            out.setdefault(str(d.get("tid")), []).append(n)
    for v in out.values():
        v.sort(key=lambda n: G.nodes[n].get("version") or 0)
    return out


def _fns(G) -> list:
    fns = []
    for n, d in G.nodes(data=True):
        if d.get("kind") != "grad_fn":
            continue
        nxt = [v for _, v, k in G.out_edges(n, data="kind") if k == "next"]
        leaf = next((v for _, v, k in G.out_edges(n, data="kind") if k == "accumulates"), None)
        fns.append({"id": n, "name": d.get("name"), "op": d.get("op"), "next": nxt, "leaf": leaf})
    return fns


def _modules(G, ops) -> dict:
    paths = {p for o in ops if o["module"] for p in fold.prefixes(o["module"])}
    parents = {p.rsplit(".", 1)[0] for p in paths if "." in p}
    return {p: {"type": fold.mod_type(G, p), "level": fold.level(G, p), "leaf": p not in parents,
                "container": fold.mod_type(G, p) in fold.CONTAINERS, "name": fold.user_path(G, p)}
            for p in sorted(paths)}


def _findings(findings) -> list:
    out = []
    for f in findings or ():
        get = (lambda k, f=f: getattr(f, k, None)) if not isinstance(f, dict) else f.get
        out.append({"code": get("code") or "finding", "severity": get("severity") or "",
                    "message": get("message") or "", "fix": get("fix") or "",
                    "nodes": [str(n) for n in (get("nodes") or ())]})
    return out


def _numbered(step, first: int):
    return step + first - 1 if step else step


def _timeline(rows, ratios: bool) -> list:
    """What the run timeline draws of each step row (``gradtrace.analyze.step_rows``):
    its last loss, gradient norm, largest update-to-weight ratio (not ``ratios``: in a
    trace older than those, the largest relative change of a norm), learning rates, loss
    scale and NaN/Inf counts."""
    out = []
    for r in rows or ():
        losses = [v for v in r.get("losses") or () if v is not None]
        update = (r.get("max_update") if ratios else r.get("max_change")) or {}
        out.append({"step": r["step"], "loss": losses[-1] if losses else None, "grad": r.get("grad_norm"),
                    "update": update.get("ratio"), "updated": update.get("tensor"), "lr": r.get("lr") or [],
                    "scaler": r.get("scaler"),
                    "bad": (r.get("nan") or 0) + (r.get("inf") or 0)})
    return out


def page_data(G, findings=None, depth: int = DEFAULT_DEPTH, rows=None, costs=None) -> dict:
    """Return the JSON-ready data of the viewer page for trace ``G``: ops (in order,
    with step, phase, tensors in and out and grad_fn), tensors, versions, autograd
    nodes, modules, ``findings`` (from ``gradtrace.check``), the modules folded
    when the page opens (those deeper than ``depth``, as in the static views) and, from
    ``rows`` (the trace's step rows), the run timeline above the graph, and from ``costs``
    (``gradtrace.analyze.costs.op_costs``), each op's FLOPs, saved activation bytes and
    time, by which the page can colour its nodes."""
    steps = find_steps(G)
    first = first_step(G, steps)
    ratios = any(r.get("max_update") for r in rows or ())
    ops, touched = _ops(G, steps, first, costs)
    versions = _versions(G, touched)
    tensor_nodes = touched | {t for v in versions.values() for t in v}
    fns = _fns(G)
    for f in fns:
        if f["leaf"]:
            tensor_nodes.add(f["leaf"])
    modules = _modules(G, ops)
    folded = sorted({fold.collapsed_at(G, o["module"], depth) for o in ops if o["module"]} - {None})
    runs = fold.runs_among(G, {o["module"] for o in ops})
    return {
        "title": str(G.graph.get("script") or "trace"),
        "last": G.graph.get("last"),
        "steps": {"count": steps.count, "complete": steps.complete, "first": first,
                  "default": _numbered(steps.last_complete, first)},
        "phases": list(PHASES),
        "ops": ops,
        "tensors": {t: _tensor(G, t) for t in sorted(tensor_nodes)},
        "versions": versions,
        "fns": fns,
        "backward": {n: {"api": d.get("api"), "seq": d.get("seq")} for n, d in G.nodes(data=True)
                     if d.get("kind") == "backward"},
        "modules": modules,
        "folded": folded + sorted(set(runs.values())),
        "runs": runs,
        "budget": FOLD_LINES_PAST,
        "findings": _findings(findings),
        "colors": CATEGORY_COLORS,
        "timeline": _timeline(rows, ratios),
        # what the timeline's third line is: a trace older than update ratios has norm changes
        "timeline_update": "update/weight" if ratios else "norm change",
    }


def _finite(x):
    # JSON has no NaN or Infinity, and statistics of a broken tensor hold them: the page shows them as text.
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _json_for_script(data) -> str:
    # A "</script>" inside the trace (source code, a message) must not end the script element.
    return json.dumps(_finite(data), separators=(",", ":"), default=str, allow_nan=False).replace("</", "<\\/").replace("<!--", "<\\!--")


def to_html(G, findings=None, depth: int = DEFAULT_DEPTH, rows=None, costs=None) -> str:
    """Return the viewer page of trace ``G`` as one self-contained HTML text (scripts
    and data inlined; nothing is fetched when it is opened); ``rows``: its step rows,
    drawn as the run timeline; ``costs``: each op's costs (:func:`page_data`)."""
    data = page_data(G, findings, depth, rows, costs)
    template = resources.files(__package__).joinpath("viewer.html").read_text(encoding="utf-8")
    parts = {"TITLE": _html.escape(Path(data["title"]).name), "VENDOR": _vendor_js(),
             "DATA": _json_for_script(data)}
    # One pass, so a marker inside the inlined script or data is left as it is.
    return re.sub(r"/\*(TITLE|VENDOR|DATA)\*/", lambda m: parts[m.group(1)], template)


def write_html(G, path, findings=None, depth: int = DEFAULT_DEPTH, rows=None, costs=None) -> Path:
    """Write the viewer page of ``G`` into ``path``; return the path. Raises
    ``OSError`` when the file cannot be written."""
    Path(path).write_text(to_html(G, findings, depth, rows, costs), encoding="utf-8")
    return Path(path)


def notebook_html(G, findings=None, height: int = 640, rows=None) -> str:
    """Return the viewer inside an ``<iframe srcdoc>``: a notebook cell shows it with
    its scripts kept apart from the notebook's own."""
    return (f'<iframe srcdoc="{_html.escape(to_html(G, findings, rows=rows), quote=True)}" '
            f'style="width:100%;height:{int(height)}px;border:1px solid #ccc"></iframe>')
