"""Which op of one run is which op of the other: exact keys (module path, op name,
occurrence within the module) first, a sequence alignment on op name and output
shape for the rest; and the tensor nodes those aligned ops map onto each other."""

from __future__ import annotations

import bisect
import difflib

from .runs import Run

__all__ = ["align", "tensor_map"]


def align(ra: Run, rb: Run):
    """Return ``(pairs, how)``: aligned op nodes ``[(a, b)]`` in A's order, and
    ``{a: "key" | "sequence"}``."""
    by_key = {rb.key[n]: n for n, _ in rb.ops}
    cand = []
    for n, d in ra.ops:
        b = by_key.get(ra.key[n])
        if b is not None:
            cand.append((n, b))
    # a key can match an op that ran at another point of B: only a chain in order in both runs holds
    pairs = _monotone(cand, ra.seq, rb.seq)
    how = {a: "key" for a, _ in pairs}
    used_a = {a for a, _ in pairs}
    used_b = {b for _, b in pairs}
    rest_a = [n for n, _ in ra.ops if n not in used_a]
    rest_b = [n for n, _ in rb.ops if n not in used_b]
    if rest_a and rest_b:
        ta = [(ra.G.nodes[n]["name"], ra.shape(n)) for n in rest_a]
        tb = [(rb.G.nodes[n]["name"], rb.shape(n)) for n in rest_b]
        sm = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
        extra = []
        for blk in sm.get_matching_blocks():
            for i in range(blk.size):
                extra.append((rest_a[blk.a + i], rest_b[blk.b + i]))
        for a, b in extra:
            how[a] = "sequence"
        pairs = sorted(pairs + extra, key=lambda p: ra.seq[p[0]])
    return pairs, how


def _monotone(cand, sa, sb):
    """Longest subsequence of ``cand`` (sorted by A) whose B order also increases."""
    if not cand:
        return []
    tails, tails_i, prev = [], [], [-1] * len(cand)
    for i, (_, b) in enumerate(cand):
        v = sb[b]
        j = bisect.bisect_left(tails, v)
        if j == len(tails):
            tails.append(v)
            tails_i.append(i)
        else:
            tails[j] = v
            tails_i[j] = i
        prev[i] = tails_i[j - 1] if j > 0 else -1
    out, i = [], tails_i[-1]
    while i >= 0:
        out.append(cand[i])
        i = prev[i]
    return out[::-1]


def tensor_map(ra: Run, rb: Run, pairs) -> dict:
    """Return ``{tensor node of A: tensor node of B}``, from the aligned ops ``pairs``
    (outputs, inputs and writes by position) and from variable labels."""
    m = {}
    for a, b in pairs:
        oa, ob = dict(ra.outputs.get(a, [])), dict(rb.outputs.get(b, []))
        for p, t in oa.items():
            if p in ob:
                m.setdefault(t, ob[p])
        ia, ib = dict(ra.inputs.get(a, [])), dict(rb.inputs.get(b, []))
        for p, t in ia.items():
            if p in ib:
                m.setdefault(t, ib[p])
        for (u1, v1), (u2, v2) in zip(ra.writes.get(a, []), rb.writes.get(b, [])):
            m.setdefault(u1, u2)
            m.setdefault(v1, v2)
    # parameters and named variables match by name even where no aligned op reached them
    lb = {}
    for n, d in rb.G.nodes(data=True):
        if d.get("kind") == "tensor" and d.get("label"):
            lb.setdefault((d["label"], d.get("version")), n)
    for n, d in ra.G.nodes(data=True):
        if d.get("kind") == "tensor" and d.get("label") and n not in m:
            b = lb.get((d["label"], d.get("version")))
            if b is not None:
                m[n] = b
    return m
