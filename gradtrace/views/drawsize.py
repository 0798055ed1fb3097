"""How big a drawing may be and still be drawn: shared by ``Trace.save`` (graph.dot)
and the run report (graph.svg), without either importing the other."""

from __future__ import annotations

from .forward import count_elements

__all__ = ["SVG_MAX_LINES", "drawn_elements", "forward_elements_at_least", "too_big_to_draw"]

SVG_MAX_LINES = 6000  # Graphviz lays out a few thousand elements in seconds, not tens of thousands


def forward_elements_at_least(G, depth: int) -> int:
    """A lower bound on the number of elements (lines) of the ``forward`` DOT view of
    ``G`` with every step drawn, at module depth ``depth``: the op nodes it draws one by
    one, plus one per collapsed module or source line (tensors and edges come on top).
    Counted from the graph, without drawing it."""
    return _quick_count(G, depth)[0]


def _quick_count(G, depth: int) -> tuple:
    ops, backward = 0, False
    collapsed = set()
    for n, d in G._node.items():
        if d.get("kind") != "op":
            continue
        if d.get("category") == "backward":
            backward = True
        mod = d.get("module")
        if not mod and d.get("direct") is False and d.get("line"):
            collapsed.add((d.get("file"), d.get("line")))
        elif mod and isinstance(mod, str) and mod.count(".") + 1 > depth:
            collapsed.add(".".join(mod.split(".")[:depth]))
        else:
            ops += 1
    return ops + len(collapsed), backward


def drawn_elements(G, depth: int) -> int:
    """The number of elements the default drawing of ``G`` would have: the quick bound
    of :func:`forward_elements_at_least` where that is within the limit, else, for a
    program with backward calls (so with steps, of which the default drawing shows one),
    the exact count of that one step."""
    n, steps = _quick_count(G, depth)
    if n > SVG_MAX_LINES and steps:
        return count_elements(G, depth)
    return n


def too_big_to_draw(G, depth: int) -> str | None:
    """Why the forward view of ``G`` would not be drawn (a phrase), or None when it may be."""
    n = drawn_elements(G, depth)
    if n > SVG_MAX_LINES:
        return f"the drawing would have {n} elements or more (the limit is {SVG_MAX_LINES})"
    return None
