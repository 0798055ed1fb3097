"""The ``memory`` view: storages as columns, each a frame holding its tensors with their
versions top to bottom, and what links them (views, writes, moves, numpy arrays
sharing their memory).
"""

from __future__ import annotations

from .picture import MEMORY_COLUMNS, Picture, esc, human, lines, op_name, shape_text

__all__ = ["draw_memory"]


def draw_memory(p: Picture):
    """Draw the memory view of the tensors ``p``'s ops touch (every tensor when it
    has no ops) into ``p``. Returns None."""
    G = p.G
    touched = set()
    for n in p.ops:
        touched.update(t for t in G.predecessors(n) if G.nodes[t].get("kind") == "tensor")
        touched.update(t for t in G.successors(n) if G.nodes[t].get("kind") == "tensor")
    if not p.ops:
        touched = {n for n, d in G.nodes(data=True) if d.get("kind") == "tensor"}
    by_storage: dict = {}
    for t in touched:
        by_storage.setdefault(G.nodes[t].get("storage"), []).append(t)
    firsts, lasts = [], []
    for s, ts in sorted(by_storage.items(), key=lambda kv: _id_order(kv[0])):
        sd = G.nodes.get(s, {}) if s else {}
        col = p.frame(p.dot, label=lines(f"{s} {sd.get('device') or ''}",
                                         f"{human(sd.get('nbytes') or 0)}B {sd.get('origin') or ''}"),
                      style="filled", fillcolor="#fffbea", color="#d6b656", fontsize="9")
        ts = sorted(ts, key=lambda x: (G.nodes[x].get("tid", 0), G.nodes[x].get("version", 0)))
        for t in ts:
            p.tensor_node(t, col)
        firsts.append(ts[0])
        lasts.append(ts[-1])
    for i in range(len(firsts) - MEMORY_COLUMNS):  # columns wrap into rows, not one wide band
        p.add_edge(lasts[i], firsts[i + MEMORY_COLUMNS], style="invis")
    p.counts["tensors"] = len(touched)
    p.counts["storages"] = len(by_storage)
    _links(p, touched)


def _links(p: Picture, touched):
    """The edges between the ``touched`` tensors (views, writes, moves) and the numpy
    arrays sharing their memory."""
    G = p.G
    for u, v, d in G.edges(data=True):
        k = d.get("kind")
        if u not in touched or v not in touched:
            continue
        if k == "view_of":
            p.add_edge(u, v, color="#3d85c6", style="dotted", penwidth="2",
                       label=esc(d.get("alias") or "view"), constraint="false")
        elif k == "next_version":
            op = G.nodes.get(d.get("op") or "", {})
            label = op_name(op) if op else "external write"
            if not d.get("visible", True):
                label += " (invisible to autograd)"
            p.add_edge(u, v, color="#cc0000", style="dashed", penwidth="2", label=esc(label))
        elif k == "moved_to":
            p.add_edge(u, v, color="#674ea7", style="bold", constraint="false", label=esc(
                ("copy " if d.get("copy") else "same tensor ")
                + f"{d.get('src_device')}/{d.get('src_dtype')}→{d.get('dst_device')}/{d.get('dst_dtype')}"))
    for n, d in G.nodes(data=True):
        if d.get("kind") == "numpy":
            for _, t, k in G.out_edges(n, data="kind"):
                if k == "shares_memory" and t in touched:
                    p.add_node(n, shape="component", style="filled", fillcolor="#fce5cd", label=lines(
                        f"ndarray {n}", f"{shape_text(d.get('shape'))} {d.get('dtype')}"))
                    p.add_edge(n, t, color="#e69138", dir="both", penwidth="2", label="shares memory")


def _id_order(node):
    """Sort key of a node id (``s:10`` after ``s:9``)."""
    head, _, tail = str(node).partition(":")
    return (head, int(tail) if tail.isdigit() else 0, str(node))
