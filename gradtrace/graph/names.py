"""How a tensor node is named in printed and drawn output.

A trace's ``label`` is the variable name; several tensors may share it (``a = a * 2``,
``loss`` in a training loop). The tensor attribute ``label_n`` numbers those tensors
(first bound is 1), so every display site tells them apart the same way.
"""

from __future__ import annotations

__all__ = ["display_name", "name_of"]


def display_name(G, node, version: bool = False) -> str:
    """Return the name to show for tensor ``node`` of trace ``G``: ``a`` for the only
    tensor labelled ``a``, ``a#2`` for the second of several, ``t5`` for unlabelled
    tensor 5; with ``version``, ``@vV`` follows (``a#2@v1``). Other nodes give their id."""
    d = G.nodes[node] if node in G.nodes else {}
    if d.get("kind") != "tensor":
        return str(node)
    return name_of(d, version)


def name_of(d: dict, version: bool = False) -> str:
    """Return :func:`display_name` for a tensor node's attribute dict ``d``."""
    label = d.get("label")
    if label:
        n = d.get("label_n")
        name = f"{label}#{n}" if isinstance(n, int) and not isinstance(n, bool) else str(label)
    else:
        name = f"t{d.get('tid')}"
    return f"{name}@v{d.get('version')}" if version else name
