"""Small queries over trace graphs, shared by the tests."""

from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent  # the tests folder: its corpora and helpers


def ops(G, name=None, category=None):
    """Op attrs in call order, optionally filtered by name and category."""
    out = sorted((d for _, d in G.nodes(data=True) if d["kind"] == "op"), key=lambda d: d["seq"])
    if name is not None:
        out = [d for d in out if d["name"] == name]
    if category is not None:
        out = [d for d in out if d["category"] == category]
    return out


def op_node(G, seq):
    return f"op:{seq}"


def tensors(G, label):
    """Tensor node ids with this variable label, oldest tid and version first."""
    found = [(d["tid"], d["version"], n) for n, d in G.nodes(data=True)
             if d["kind"] == "tensor" and d.get("label") == label]
    return [n for _, _, n in sorted(found)]


def edges(G, kind, u=None, v=None):
    return [(a, b, d) for a, b, d in G.edges(data=True)
            if d["kind"] == kind and (u is None or a == u) and (v is None or b == v)]


def outputs(G, op_attrs):
    return [v for _, v, k in G.out_edges(f"op:{op_attrs['seq']}", data="kind") if k == "output"]


def inputs(G, op_attrs):
    return [u for u, _, k in G.in_edges(f"op:{op_attrs['seq']}", data="kind") if k == "input"]


def grad_reaching(G, node):
    """The stats of the gradients that reached a tensor node (one per backward call)."""
    return [d["stats"] for _, _, d in edges(G, "grad", v=node)]


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8) if a.numel() else a,
                                                                      b.view(-1).view(torch.uint8) if b.numel() else b)
