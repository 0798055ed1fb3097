"""The tensors of the ``forward`` view, between the elements :mod:`.forward` drew:
edges labelled with their shape, or (with ``tensors``) tensor nodes in the frame of
the element that made them, with their writes and aliases.
"""

from __future__ import annotations

from ..graph.names import name_of
from . import fold
from .picture import MARK_COLOR, Picture, esc, lines, shape_text

__all__ = ["draw_flow", "draw_writes", "stack_lines"]


def draw_flow(p: Picture, owner: dict, calls: dict):
    """Draw the tensors between the elements of ``owner`` ({op: drawn element}) into
    ``p``; ``calls``: the modules called once per pass of a loop. Returns None."""
    G = p.G
    made, used, relays = {}, {}, {}
    for n, o in owner.items():
        seq = G.nodes[n].get("seq", 0)
        ins = set()
        for t, _, k in G.in_edges(n, data="kind"):
            if k == "input" and G.nodes[t].get("kind") == "tensor":
                ins.add(t)
                if not p.is_param(t):
                    used.setdefault(t, []).append((seq, o))
        for _, t, k in G.out_edges(n, data="kind"):
            if k == "output" and G.nodes[t].get("kind") == "tensor":
                if t in ins:  # it returned its own input (Dropout(p=0)): the flow passes through
                    relays.setdefault(t, []).append((seq, o))
                else:
                    made[t] = o
    pairs = set()
    groups = list(_flow_groups(G, made, used, relays))
    loop_inputs = _loop_inputs(p, calls, groups)
    for t, src, dsts in groups:
        d = G.nodes[t]
        if src is None:
            # library work for one line (opt.step()) reads many outside tensors: its
            # label counts them rather than one input node each
            dsts = [c for c in dsts if not (isinstance(c, str) and c.startswith("line:"))]
            if not dsts or p.is_param(t):
                continue
            if t in loop_inputs:  # one per pass of a loop: one node says how many
                src, count = loop_inputs[t]
                p.add_node(src, shape="ellipse", style="filled", fillcolor="#f3f3f3", fontsize="9",
                           label=lines(f"{count} × {name_of(d).split('#')[0]}", shape_text(d.get("shape"))))
                if (src, dsts[0]) not in pairs:
                    pairs.add((src, dsts[0]))
                    p.add_edge(src, dsts[0], label=lines(f"{count} tensors", shape_text(d.get("shape"))))
                continue
            src = ("in", t)
            p.add_node(src, shape="ellipse", style="filled", fillcolor="#f3f3f3", fontsize="9",
                       label=lines(name_of(d), shape_text(d.get("shape"))), codes=p.marks.get(t, ()))
        elif not dsts:
            if p.is_param(t) or not (d.get("label") and not src.startswith(("mod:", "run:", "line:"))):
                continue
            if p.tensors:  # the tensor node itself shows the result
                p.tensor_node(t, p.placed.get(src), codes=p.marks.get(t, ()))
                p.add_edge(src, t)
                continue
            dst = ("out", t)
            p.add_node(dst, shape="ellipse", style="filled", fillcolor="#f3f3f3", fontsize="9",
                       label=lines(name_of(d), shape_text(d.get("shape"))), codes=p.marks.get(t, ()))
            dsts = [dst]
        if p.tensors:
            where = p.placed.get(src)  # a tensor sits in the frame of the op that made it
            p.tensor_node(t, where, codes=p.marks.get(t, ()))
            p.add_edge(src, t)
            for c in dsts:
                p.add_edge(t, c)
            continue
        for c in dsts:
            if (src, c) in pairs:
                continue
            pairs.add((src, c))
            # named where it crosses out of a module (`out = model(x)`) or between
            # top-level ops; inside a module the forward's own names would crowd it
            top = not G.nodes.get(_op_of(src), {}).get("module") or \
                not G.nodes.get(_op_of(c), {}).get("module")
            name = name_of(d) if d.get("label") and top else ""
            label = lines(name, shape_text(d.get("shape")))
            attrs = {"label": label}
            if p.marks.get(t):
                attrs.update(color=MARK_COLOR, penwidth="2", fontcolor=MARK_COLOR,
                             label=label + "\\n" + esc("⚠ " + ", ".join(p.marks[t])))
                p.codes_drawn[t] = p.marks[t]
            p.add_edge(src, c, **attrs)


def _loop_inputs(p: Picture, calls: dict, groups) -> dict:
    """``{tensor: (input node key, count)}`` for the outside tensors that only a loop
    element reads (a module called once per pass, each pass with a new input)."""
    loops = {f"mod:{m}" for m in calls}
    by_element: dict = {}
    for t, src, dsts in groups:
        if src is None and len(dsts) == 1 and dsts[0] in loops and not p.is_param(t) \
                and not p.marks.get(t):
            by_element.setdefault(dsts[0], []).append(t)
    return {t: (("in-loop", e), len(ts)) for e, ts in by_element.items() if len(ts) >= fold.FOLD_AT_LEAST
            for t in ts}


def _flow_groups(G, made, used, relays):
    """``(tensor, source element, [consumer elements])`` for each tensor: a consumer
    reads it from its maker, or from the last op before it that passed it through."""
    for t in sorted(set(made) | set(used), key=lambda x: (G.nodes[x].get("tid", 0), G.nodes[x].get("version", 0))):
        groups = {made.get(t): []}
        for seq, c in used.get(t, ()):
            src = made.get(t)
            for rseq, r in relays.get(t, ()):
                if rseq < seq and r != c:
                    src = r
            groups.setdefault(src, []).append(c)
        for src, cs in groups.items():
            dsts = [c for c in dict.fromkeys(cs) if c != src]
            if src is not None and src == made.get(t) or dsts:
                yield t, src, dsts


def _op_of(element):
    return element if isinstance(element, str) and element.startswith("op:") else None


def stack_lines(p: Picture, first_seq):
    """Put the folded lines of library work (the model's construction, opt.step()) in
    program order (``first_seq``: an element's position) top to bottom, rather than
    side by side in one wide row. Returns None."""
    keys = sorted((k for k in p.drawn if isinstance(k, str) and k.startswith("line:")), key=first_seq)
    for a, b in zip(keys, keys[1:]):
        p.add_edge(a, b, style="invis")


def draw_writes(p: Picture):
    """Draw the writes to drawn tensors (their new versions) and their aliases into
    ``p`` (with ``tensors``). Returns None."""
    G = p.G
    # a write through a view also shows the base's new version, though no op outputs it
    edges = sorted(G.edges(data=True), key=lambda e: e[2].get("kind") != "next_version")
    for u, v, d in edges:
        k = d.get("kind")
        if k == "next_version" and u in p.drawn and not d.get("metadata_only"):
            p.tensor_node(v, p.placed.get(u))
            p.add_edge(u, v, color="#cc0000", style="dashed", penwidth="2", fontcolor="#cc0000",
                       label="write" if d.get("visible", True) else "hidden write")
        elif k == "view_of" and u in p.drawn and v in p.drawn:
            p.add_edge(u, v, color="#3d85c6", style="dotted", penwidth="2", constraint="false",
                       label=esc(d.get("alias") or "view"), fontcolor="#3d85c6")
