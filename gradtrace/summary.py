"""What a trace holds, in numbers: the summary ``gradtrace run`` prints."""

from __future__ import annotations

from collections import Counter

import networkx as nx


def nodes_of(G: nx.MultiDiGraph, kind: str):
    """Yield ``(node, attrs)`` for the nodes of one kind."""
    return ((n, d) for n, d in G.nodes(data=True) if d.get("kind") == kind)


def edges_of(G: nx.MultiDiGraph, kind: str):
    """Yield ``(u, v, attrs)`` for the edges of one kind."""
    return ((u, v, d) for u, v, d in G.edges(data=True) if d.get("kind") == kind)


def ops_in_order(G: nx.MultiDiGraph) -> list:
    """Return the op nodes' ``(node, attrs)`` sorted by call order."""
    return sorted(nodes_of(G, "op"), key=lambda nd: nd[1]["seq"])


def _digest(stats) -> str:
    if not stats:
        return "-"
    return f"norm {stats['norm']:.4g}, mean {stats['mean']:.4g}, min {stats['min']:.4g}, max {stats['max']:.4g}"


def summarize(G: nx.MultiDiGraph) -> dict:
    """Return the trace's headline figures as a plain dict."""
    ops = ops_in_order(G)
    cats = Counter(d["category"] for _, d in ops)
    tensors = list(nodes_of(G, "tensor"))
    views = list(edges_of(G, "view_of"))
    writes = list(edges_of(G, "next_version"))
    moves = list(edges_of(G, "moved_to"))
    lines = Counter((d.get("file"), d.get("line")) for _, d in ops if d.get("line"))
    code = {(d.get("file"), d.get("line")): d.get("code") for _, d in ops}
    backward = []
    for bw, d in sorted(nodes_of(G, "backward"), key=lambda x: x[1]["seq"]):
        roots = []
        for _, root, e in G.out_edges(bw, data=True):
            if e.get("kind") != "weights":
                continue
            w = e.get("gradient")
            if w is None:
                wtext = "implicit 1" if d.get("implicit") else (
                    repr(e["gradient_value"]) if "gradient_value" in e else "none")
            else:
                wd = G.nodes[w]
                wtext = f"{wd.get('label') or w} {wd.get('shape')} ({_digest(wd.get('stats'))})"
            rd = G.nodes[root]
            roots.append({"root": root, "label": rd.get("label"), "shape": rd.get("shape"), "w": wtext})
        backward.append({"id": bw, "api": d["api"], "roots": roots, "error": d.get("error"),
                         "grads": sum(1 for _, _, e in G.out_edges(bw, data="kind") if e == "grad")})
    return {
        "status": G.graph.get("status"),
        "ops": len(ops),
        "categories": dict(cats.most_common()),
        "tensors": len({d["tid"] for _, d in tensors}),
        "tensor_versions": len(tensors),
        "storages": sum(1 for _ in nodes_of(G, "storage")),
        "views": sum(1 for _, _, d in views if not d.get("alias")),
        "aliases": sum(1 for _, _, d in views if d.get("alias")),
        "writes": len([w for w in writes if not w[2].get("metadata_only")]),
        "hidden_writes": sum(1 for _, _, d in writes if not d.get("visible", True) and not d.get("metadata_only")),
        "moves": [
            {"src": f"{d['src_device']}/{d['src_dtype']}", "dst": f"{d['dst_device']}/{d['dst_dtype']}",
             "copy": d["copy"]} for _, _, d in moves
        ],
        "backward": backward,
        "unknown": sum(u["count"] for u in G.graph.get("unknown") or ()),
        "unknown_reasons": [f"{u['what']} x{u['count']}" for u in G.graph.get("unknown") or ()],
        "top_lines": [
            {"file": f, "line": ln, "ops": n, "code": code.get((f, ln))} for (f, ln), n in lines.most_common(5)
        ],
    }


def summary_text(G: nx.MultiDiGraph) -> str:
    """Return the summary as plain text lines."""
    s = summarize(G)
    out = [f"status: {s['status']}    ops: {s['ops']}    tensors: {s['tensors']} "
           f"({s['tensor_versions']} versions)    storages: {s['storages']}"]
    out.append("ops by category: " + ", ".join(f"{k} {v}" for k, v in s["categories"].items()))
    out.append(f"views: {s['views']}    aliases (.data/.detach): {s['aliases']}    "
               f"in-place writes: {s['writes']} ({s['hidden_writes']} invisible to autograd)")
    if s["moves"]:
        c = Counter(f"{m['src']} -> {m['dst']}{'' if m['copy'] else ' (same tensor)'}" for m in s["moves"])
        out.append("moves: " + ", ".join(f"{k} x{v}" for k, v in c.items()))
    for b in s["backward"]:
        roots = "; ".join(f"{r['label'] or r['root']} {r['shape']} w={r['w']}" for r in b["roots"])
        out.append(f"backward {b['id']} {b['api']}: {roots}; gradients recorded: {b['grads']}"
                   + (f"; raised {b['error']}" if b["error"] else ""))
    if s["unknown"]:
        out.append(f"unknown: {s['unknown']} reads the recorder could not make "
                   f"({', '.join(s['unknown_reasons'])}); see docs/trace-format.md")
    if s["top_lines"]:
        out.append("top source lines:")
        for t in s["top_lines"]:
            out.append(f"  {t['ops']:6d} ops  {t['file']}:{t['line']}  {t['code'] or ''}")
    return "\n".join(out)
