"""How big a drawing may be and still be drawn: shared by ``Trace.save`` (graph.dot)
and the run report (graph.svg), without either importing the other."""

from __future__ import annotations

SVG_MAX_LINES = 6000  # Graphviz lays out a few thousand elements in seconds, not tens of thousands


def forward_elements_at_least(G, depth: int) -> int:
    """A lower bound on the number of elements (lines) of the ``forward`` DOT view of
    ``G`` at module depth ``depth``: the op nodes it draws one by one, plus one per
    collapsed module or source line (tensors and edges come on top). Counted from the
    graph, without drawing it."""
    ops = 0
    collapsed = set()
    for n, d in G._node.items():
        if d.get("kind") != "op":
            continue
        mod = d.get("module")
        if not mod and d.get("direct") is False and d.get("line"):
            collapsed.add((d.get("file"), d.get("line")))
        elif mod and isinstance(mod, str) and mod.count(".") + 1 > depth:
            collapsed.add(".".join(mod.split(".")[:depth]))
        else:
            ops += 1
    return ops + len(collapsed)


def too_big_to_draw(G, depth: int) -> str | None:
    """Why the forward view of ``G`` would not be drawn (a phrase), or None when it may be."""
    n = forward_elements_at_least(G, depth)
    if n > SVG_MAX_LINES:
        return f"the drawing would have over {n} elements (the limit is {SVG_MAX_LINES})"
    return None
