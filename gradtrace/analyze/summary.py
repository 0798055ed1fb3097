"""What a trace holds, in numbers: the summary ``gradtrace run`` prints.

Every function here reads the graph's node and edge dictionaries in one pass each,
so a summary of a trace with hundreds of thousands of ops takes a fraction of a second.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import networkx as nx

from ..graph.names import name_of
from .scaling import loss_root, scale_after, scaler_line, scaler_summary
from .series import backward_runs, run_roots, series_lines

__all__ = [
    "MOVE_CATEGORIES", "TEXT_MAX", "busiest_lines", "edges_of", "format_summary", "human_bytes",
    "move_groups", "move_op_attrs", "nodes_of", "ops_in_order", "plain", "summarize",
    "summary_text", "values_kept_text",
]

MOVE_CATEGORIES = ("move", "convert")
TEXT_MAX = 200  # characters of one label, name or source line in printed text
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(9), *range(11, 32), 127)} | {10: "\\n", 13: "\\r"}


def plain(value, limit: int = TEXT_MAX) -> str:
    """Return ``value`` as one line of text to print as is: control characters written
    as escapes (``\\n``, ``\\x1b``), and cut to ``limit`` characters with an ellipsis."""
    text = "" if value is None else str(value)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.translate(_ESCAPES)


def human_bytes(n: int) -> str:
    """``2.0 GiB`` for 2 << 30."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def values_kept_text(kept: dict) -> str:
    """One line on what ``values="all"`` kept (the trace's ``values_kept``)."""
    text = f"values: {human_bytes(kept.get('bytes') or 0)} of copies kept"
    if kept.get("limit") is not None:
        text += f" (limit {human_bytes(kept['limit'])})"
    if kept.get("shared"):
        text += f"; {kept['shared']} unchanged version{'s' if kept['shared'] != 1 else ''} shared a copy"
    if kept.get("skipped"):
        text += (f"; {kept['skipped']} value{'s' if kept['skipped'] != 1 else ''} "
                 f"({human_bytes(kept.get('skipped_bytes') or 0)}) not kept past the limit "
                 "(raise it with --values-max)")
    return text


def _node_items(G: nx.MultiDiGraph):
    # networkx's NodeView wraps every item; its backing dict is the same data, faster
    return G._node.items() if isinstance(G, nx.MultiDiGraph) else G.nodes(data=True)


def _edge_items(G: nx.MultiDiGraph):
    """Yield ``(u, v, attrs)`` for every edge, without networkx's per-edge view objects."""
    if not isinstance(G, nx.MultiDiGraph):
        yield from G.edges(data=True)
        return
    for u, nbrs in G._succ.items():
        for v, keydict in nbrs.items():
            for d in keydict.values():
                yield u, v, d


def nodes_of(G: nx.MultiDiGraph, kind: str):
    """Yield ``(node, attrs)`` for the nodes of one kind."""
    return ((n, d) for n, d in _node_items(G) if d.get("kind") == kind)


def edges_of(G: nx.MultiDiGraph, kind: str):
    """Yield ``(u, v, attrs)`` for the edges of one kind."""
    return ((u, v, d) for u, v, d in _edge_items(G) if d.get("kind") == kind)


def _seq(nd) -> int:
    return nd[1]["seq"]


def ops_in_order(G: nx.MultiDiGraph) -> list:
    """Return the op nodes' ``(node, attrs)`` sorted by call order."""
    return sorted(nodes_of(G, "op"), key=_seq)


def _digest(stats) -> str:
    if not stats:
        return "-"
    return f"norm {stats['norm']:.4g}, mean {stats['mean']:.4g}, min {stats['min']:.4g}, max {stats['max']:.4g}"


def _backward_entry(G, bw, d, updates, seqs) -> dict:
    """A backward call's summary entry; ``updates``: the trace's loss scaler updates, and
    ``seqs`` their ``seq`` (a scaled call's root value is the loss before scaling, its
    norm divided by the scale)."""
    roots, grads, leaf_norms = [], 0, []
    for _, root, e in G.out_edges(bw, data=True):
        kind = e.get("kind")
        if kind == "grad":
            grads += 1
        elif kind == "leaf_grad":
            st = e.get("stats")
            leaf_norms.append(st.get("norm") if st else None)
        if kind != "weights":
            continue
        w = e.get("gradient")
        if w is None:
            wtext = "implicit 1" if d.get("implicit") else (
                repr(e["gradient_value"]) if "gradient_value" in e else "none")
        else:
            wd = G.nodes[w]
            wtext = f"{name_of(wd) if wd.get('label') else w} {wd.get('shape')} ({_digest(wd.get('stats'))})"
        rd = G.nodes[root]
        roots.append({"root": root, "label": name_of(rd) if rd.get("label") else None, "shape": rd.get("shape"),
                      "w": wtext, "value": _scalar_value(G.nodes[loss_root(G, root)] if updates else rd)})
    norm = _total_norm(leaf_norms)
    scale = scale_after(updates, G.nodes[d["op"]]["seq"], seqs) if updates and norm is not None and d.get("op") in G else None
    if scale and math.isfinite(scale):
        norm /= scale
    return {"id": bw, "api": d["api"], "roots": roots, "error": d.get("error"), "grads": grads, "grad_norm": norm}


def _total_norm(norms: list):
    """The 2-norm of all the gradients whose norms are ``norms`` (each leaf's ``.grad``
    after one backward call, accumulated ones included: what an optimizer step or
    ``clip_grad_norm_`` would see); None when there are none or one is unknown."""
    if not norms or None in norms:
        return None
    return math.hypot(*norms)


def _scalar_value(d: dict):
    """The value of a one-element tensor node (its statistics' mean), else None."""
    st, shape = d.get("stats"), d.get("shape")
    if not st or shape is None or math.prod(shape) != 1:
        return None
    return st.get("mean")


def _move_ops(G, move_ops) -> dict:
    """``{(source tensor, result tensor): [op attrs, ...]}`` of the move and convert ops
    (``(node, attrs)`` in call order): the op behind each ``moved_to`` edge, which does
    not name it."""
    out = {}
    for n, d in move_ops:
        ins = [u for u, _, k in G.in_edges(n, data="kind") if k == "input"]
        for _, v, k in G.out_edges(n, data="kind"):
            if k == "output":
                for u in ins[:1]:
                    out.setdefault((u, v), []).append(d)
    return out


def move_op_attrs(G, move_ops, moved) -> list:
    """The attrs of the op behind each ``moved_to`` edge of ``moved`` (``(u, v, attrs)``),
    in order: the edge's ``op``; for traces whose edges do not name it, the move or
    convert op between the two tensors (``move_ops``: ``(node, attrs)`` in call order);
    ``{}`` where none is found."""
    by_pair = None
    taken = Counter()
    found = []
    nodes = G._node
    for u, v, d in moved:
        op_id = d.get("op")
        op = nodes.get(op_id) if isinstance(op_id, str) else None
        if op is None:
            if by_pair is None:
                by_pair = _move_ops(G, move_ops)
            cands = by_pair.get((u, v), ())
            i = taken[(u, v)]
            taken[(u, v)] += 1
            op = cands[i] if i < len(cands) else (cands[-1] if cands else {})
        found.append(op)
    return found


def _moves(G, move_ops, moved) -> list:
    """One entry per ``moved_to`` edge: source and destination, and the file and line
    of the op that made the move."""
    return [{"src": f"{d['src_device']}/{d['src_dtype']}", "dst": f"{d['dst_device']}/{d['dst_dtype']}",
             "copy": d["copy"], "file": op.get("file"), "line": op.get("line")}
            for (_, _, d), op in zip(moved, move_op_attrs(G, move_ops, moved))]


_TENSOR_EDGES = frozenset(("view_of", "next_version", "moved_to"))


def _edge_counts(G) -> tuple:
    """``(views, aliases, in-place writes, of them invisible, moved_to edges)``."""
    # One comprehension over the adjacency dictionaries: the edges it keeps are few,
    # and a loop with a statement per edge costs several times more.
    found = [(u, v, d) for u, nbrs in G._succ.items() for v, keydict in nbrs.items()
             for d in keydict.values() if d.get("kind") in _TENSOR_EDGES]
    views = aliases = writes = hidden_writes = 0
    moved = []
    for u, v, d in found:
        kind = d["kind"]
        if kind == "view_of":
            if d.get("alias"):
                aliases += 1
            else:
                views += 1
        elif kind == "next_version":
            if not d.get("metadata_only"):
                writes += 1
                if not d.get("visible", True):
                    hidden_writes += 1
        else:
            moved.append((u, v, d))
    return views, aliases, writes, hidden_writes, moved


def summarize(G: nx.MultiDiGraph) -> dict:
    """Return the trace's headline figures as a plain dict."""
    if not (G.is_directed() and G.is_multigraph()):
        G = nx.MultiDiGraph(G)  # the layout the passes below read
    # The passes make almost no new containers per node: every tuple made here would
    # count towards the cyclic collector's next run over the whole graph.
    ops, move_ops, backward_nodes, updates = [], [], [], []
    firsts, later, versions, storages = 0, [], 0, 0
    nodes = G._node
    for n, d in nodes.items():
        kind = d.get("kind")
        if kind == "op":
            ops.append(d)
            if d.get("category") in MOVE_CATEGORIES:
                move_ops.append((n, d))
        elif kind == "tensor":
            versions += 1
            # A tensor's first version is t:N.0: counting those counts the tensors
            # without a set of every tid (a long loop has hundreds of thousands).
            if d.get("version") == 0:
                firsts += 1
            else:
                later.append(d["tid"])
        elif kind == "storage":
            storages += 1
        elif kind == "backward":
            backward_nodes.append((n, d))
        elif kind == "loss_scale":
            updates.append(d)
    ops.sort(key=_op_seq)
    move_ops.sort(key=_seq)
    backward_nodes.sort(key=_seq)
    views, aliases, writes, hidden_writes, moved = _edge_counts(G)
    updates.sort(key=_op_seq)
    seqs = [u["seq"] for u in updates]
    unknown = G.graph.get("unknown") or ()
    return {
        "status": G.graph.get("status"),
        "ops": len(ops),
        "categories": _categories(ops),
        "tensors": firsts + len({t for t in later if f"t:{t}.0" not in nodes}),
        "tensor_versions": versions,
        "storages": storages,
        "views": views,
        "aliases": aliases,
        "writes": writes,
        "hidden_writes": hidden_writes,
        "moves": _moves(G, move_ops, moved),
        "backward": [_backward_entry(G, bw, d, updates, seqs) for bw, d in backward_nodes],
        "unknown": sum(u["count"] for u in unknown),
        "unknown_reasons": [f"{u['what']} x{u['count']}" for u in unknown],
        "top_lines": busiest_lines(ops),
        **({"scaler": scaler_summary(updates)} if updates else {}),
    }


def _op_seq(d) -> int:
    return d["seq"]


def _categories(ops) -> dict:
    """``{category: op count}``, most ops first (ties: first seen first)."""
    counts = {}
    for d in ops:
        c = d["category"]
        counts[c] = counts.get(c, 0) + 1
    return dict(Counter(counts).most_common())


def busiest_lines(ops, n: int = 5) -> list:
    """Return the ``n`` source lines with the most of ``ops`` (op attribute dicts in
    call order; ties: first run first) as ``{"file", "line", "ops", "code"}`` dicts,
    with the code of each line's first op."""
    per_file, first = {}, []
    for d in ops:
        line = d.get("line")
        if not line:
            continue
        f = d.get("file")
        counts = per_file.get(f)
        if counts is None:
            counts = per_file[f] = {}
        c = counts.get(line)
        if c is None:
            counts[line] = 1
            first.append((f, line, d.get("code")))
        else:
            counts[line] = c + 1
    ranked = sorted(first, key=lambda x: -per_file[x[0]][x[1]])[:n]
    return [{"file": f, "line": ln, "ops": per_file[f][ln], "code": code} for f, ln, code in ranked]


def _where(file, line, script) -> str:
    if line is None:
        return ""
    if file and script and Path(file).name != Path(script).name:
        return f" ({Path(file).name}:{line})"
    return f" (line {line})"


def move_groups(moves, script=None) -> list:
    """Return the moves as text, identical ones once with their count, in order of
    first appearance: ``6 x cpu/float32 -> same tensor (line 41)``."""
    c = Counter()
    for m in moves:
        dst = m["dst"] if m["copy"] else "same tensor"
        c[f"{m['src']} -> {dst}{_where(m.get('file'), m.get('line'), script)}"] += 1
    return [f"{n} x {text}" if n > 1 else text for text, n in c.items()]


def format_summary(s: dict, script=None) -> str:
    """Return the plain-text lines of a :func:`summarize` dict (``script``: the traced
    script, so that lines in it read ``line N`` and others ``FILE:N``)."""
    out = [f"status: {s['status']}    ops: {s['ops']}    tensors: {s['tensors']} "
           f"({s['tensor_versions']} versions)    storages: {s['storages']}"]
    out.append("ops by category: " + ", ".join(f"{k} {v}" for k, v in s["categories"].items()))
    out.append(f"views: {s['views']}    aliases (.data/.detach): {s['aliases']}    "
               f"in-place writes: {s['writes']} ({s['hidden_writes']} invisible to autograd)")
    if s["moves"]:
        out.append("moves: " + ", ".join(move_groups(s["moves"], script)))
    for run in backward_runs(s["backward"]):
        b = run[0]
        if len(run) > 1:
            roots = "; ".join(f"{plain(name)} {shape} w={plain(w)}" for name, shape, w in run_roots(run))
            out.append(f"backward {b['id']} … {run[-1]['id']} {b['api']} ({len(run)} calls): {roots}; "
                       f"gradients recorded: {b['grads']} each")
            continue
        roots = "; ".join(f"{plain(r['label'] or r['root'])} {r['shape']} w={plain(r['w'])}" for r in b["roots"])
        out.append(f"backward {b['id']} {b['api']}: {roots}; gradients recorded: {b['grads']}"
                   + (f"; raised {plain(b['error'])}" if b["error"] else ""))
    out.extend(series_lines(s["backward"]))
    if s.get("scaler"):
        out.append(scaler_line(s["scaler"]))
    if s["unknown"]:
        out.append(f"unknown: {s['unknown']} reads the recorder could not make "
                   f"({', '.join(s['unknown_reasons'])}); see docs/trace-format.md")
    if s["top_lines"]:
        out.append("top source lines:")
        for t in s["top_lines"]:
            out.append(f"  {t['ops']:6d} ops  {plain(t['file'])}:{t['line']}  {plain(t['code'])}")
    return "\n".join(out)


def summary_text(G: nx.MultiDiGraph) -> str:
    """Return the summary as plain text lines."""
    return format_summary(summarize(G), G.graph.get("script"))
