"""Questions every reader of a trace asks of its graph, answered the same way."""

from __future__ import annotations

__all__ = ["UNINITIALISED", "made_by", "numel", "op_inputs", "op_outputs", "pos_key"]

# Ops whose results hold whatever the memory held (a NaN there is no value the program made).
UNINITIALISED = ("torch.empty", "torch.empty_like", "Tensor.new_empty", "torch.empty_strided")


def pos_key(pos):
    """Sort key of an ``input``/``output`` edge's ``pos``: arguments in call order (``0``,
    ``1``, ``"1.0"`` for an element of a list argument), then keywords. A loaded trace
    lists a node's edges by their other end's order, not by argument."""
    if isinstance(pos, int) and not isinstance(pos, bool):
        return (0, pos)
    text = str(pos)
    head = text.split(".")
    if all(p.isdigit() for p in head):
        return (0, *map(int, head))
    return (1, text)


def op_inputs(G, op, kinds=("tensor",)) -> list:
    """The nodes op ``op`` read (tensor versions, by default), in argument order."""
    found = [(pos_key(e.get("pos")), u) for u, _, e in G.in_edges(op, data=True)
             if e.get("kind") == "input" and G.nodes[u].get("kind") in kinds]
    return [u for _, u in sorted(found, key=lambda t: t[0])]


def op_outputs(G, op, kinds=("tensor",)) -> list:
    """The nodes op ``op`` returned (tensor versions, by default), in output order."""
    found = [(pos_key(e.get("pos")), v) for _, v, e in G.out_edges(op, data=True)
             if e.get("kind") == "output" and G.nodes[v].get("kind") in kinds]
    return [v for _, v in sorted(found, key=lambda t: t[0])]


def made_by(G, t):
    """The op that returned tensor version ``t``, or None (made before the trace, or by a
    write: a later version). Only the few op predecessors are looked at, not the autograd
    nodes that saved ``t`` (one a step for a batch a training loop reads every step)."""
    N, pred = G._node, G._pred[t]
    return next((u for u, keyed in pred.items() if N[u].get("kind") == "op"
                 and any(e.get("kind") == "output" for e in keyed.values())), None)


def numel(shape) -> int:
    """Return the number of elements of a tensor of ``shape`` (a size that is not an int,
    a symbolic one, counts as 1)."""
    n = 1
    for s in shape or ():
        n *= int(s) if isinstance(s, int) else 1
    return n
