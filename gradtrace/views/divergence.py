"""The neighbourhood of a diff's first divergence as DOT text: the ops and tensors a
few steps around it in one run's graph, the diverging ones highlighted. It reads
the diff report as plain data (the dict ``gradtrace diff`` writes as JSON)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

__all__ = ["divergence_dot"]


def divergence_dot(G, report: dict, side: str = "a", radius: int = 2) -> str | None:
    """Return DOT text of the ops and tensors within ``radius`` steps of the first
    divergence of diff report ``report`` (in run ``side``'s graph ``G``), diverging
    nodes highlighted; None when nothing diverged."""
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
            region |= set(nx.single_source_shortest_path_length(H, c, cutoff=radius))
    key = "a" if side == "a" else "b"
    bad = {it.get(key) for it in report["numerics"]["diverging_items"]} | set(centre)
    lines = ["digraph divergence {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
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
        lines.append(f"  {_q(n)} [label={_q(label).replace(chr(92) * 2 + 'n', chr(92) + 'n')}, shape={shape}, {style}];")
    for u, v, d in G.edges(data=True):
        if u in region and v in region and d.get("kind") in ("input", "output", "next_version"):
            lines.append(f"  {_q(u)} -> {_q(v)} [label={_q(d.get('kind'))}, fontsize=8];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _q(s):
    """``s`` as a quoted DOT ID."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'
