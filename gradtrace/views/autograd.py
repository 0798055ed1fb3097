"""The ``autograd`` view: the grad_fn nodes of the drawn step's ops, the backward calls
that ran through them and the gradients they sent (``∇ #k``: the norm in call k);
grad_fns of collapsed modules and repeated blocks fold into one box each, as in the
forward view, and a parameter's AccumulateGrad into the grad_fn that feeds it.
"""

from __future__ import annotations

from ..graph.names import name_of
from ..graph.query import numel
from . import fold
from .picture import FOLDED_FILL, Picture, cut, lines, shape_text, stat

__all__ = ["draw_autograd", "weighting_text"]


def draw_autograd(p: Picture):
    """Draw the autograd view of ``p``'s step into ``p``. Returns None."""
    G = p.G
    micro_of = p.steps.micro_of
    step_ops = {n for n, s in p.steps.step_of.items() if p.step is None or (
        s == p.step and (p.micro is None or micro_of.get(n) == p.micro))}
    fns = _grad_fns(G, step_ops)
    bws = {d.get("backward") for n in step_ops for d in [G.nodes[n]] if d.get("backward")}
    every = sorted((n for n, d in G.nodes(data=True) if d.get("kind") == "backward"),
                   key=lambda b: G.nodes[b].get("seq", 0))
    order = {b: i for i, b in enumerate(every) if b in bws}  # #k: the program's k-th backward call
    made_by, leaf_of, grads, leaf_grads = {}, {}, {}, {}
    for u, v, d in G.edges(data=True):
        k = d.get("kind")
        if k == "grad_fn" and v in fns:
            made_by.setdefault(v, u)
        elif k == "accumulates" and u in fns:
            leaf_of[u] = v
        elif k == "grad" and u in order and d.get("stats"):
            grads.setdefault(G.nodes[v].get("grad_fn"), []).append((order[u], d["stats"]))
        elif k == "leaf_grad" and u in order and d.get("stats"):
            leaf_grads.setdefault(G.nodes[v].get("tid"), []).append((order[u], d["stats"]))
    folded = {}  # grad_fn -> the element that draws it (a collapsed module, or the
    # grad_fn whose label lists a parameter's AccumulateGrad)
    boxes = _fold_grad_fns(p, fns, folded)
    for f in sorted(fns, key=lambda x: int(x.split(":")[1]) if x.split(":")[1].isdigit() else 0):
        if f in folded or (G.nodes[f].get("name") == "AccumulateGrad" and leaf_of.get(f)
                           and p.is_param(leaf_of[f])):
            continue
        _grad_fn_node(p, f, made_by, leaf_of, grads, leaf_grads, fns, folded)
    for key, members in boxes.items():
        _grad_fn_box(p, key, members)
    for b in order:
        _backward_node(p, b, order, folded)
    pairs = set()
    for u, v, k in G.edges(data="kind"):
        if k == "next" and u in fns and v in fns:
            a, c = _drawn_as(u, folded), _drawn_as(v, folded)
            if a != c and a in p.drawn and c in p.drawn and (a, c) not in pairs:
                pairs.add((a, c))
                p.add_edge(a, c)
    if p.saved:
        _saved_tensors(p, fns)


def _grad_fns(G, step_ops) -> set:
    """The grad_fns of ``step_ops``, with the AccumulateGrad nodes and others made
    outside an op that they lead to."""
    fns = {n for n, d in G.nodes(data=True) if d.get("kind") == "grad_fn" and d.get("op") in step_ops}
    frontier = list(fns)
    while frontier:
        f = frontier.pop()
        for _, g, k in G.out_edges(f, data="kind"):
            gd = G.nodes[g]
            # an AccumulateGrad lives as long as its leaf: made in an earlier step, it serves this one too
            if k == "next" and g not in fns and gd.get("kind") == "grad_fn" and (
                    not gd.get("op") or gd.get("name") == "AccumulateGrad"):
                fns.add(g)
                frontier.append(g)
    return fns


def _drawn_as(f, folded):
    seen = set()
    while f in folded and f not in seen:
        seen.add(f)
        f = folded[f]
    return f


def _fold_grad_fns(p: Picture, fns, folded) -> dict:
    """Fold the grad_fns of ops in collapsed modules (and runs of repeated blocks)
    into one box each, as the forward view does; return {box: [grad_fns]}."""
    G = p.G
    runs = p.runs()
    boxes: dict = {}
    for f in sorted(fns, key=_fn_order):  # set order would change the picture from run to run
        mod = G.nodes.get(G.nodes[f].get("op") or "", {}).get("module")
        key = fold.element_of(G, mod, p.depth, runs)
        if key:
            folded[f] = "ag" + key
            boxes.setdefault("ag" + key, []).append(f)
    for f in sorted(fns, key=_fn_order):  # a parameter's AccumulateGrad goes where the grad_fn that feeds it went
        for g in G.successors(f):
            if g in fns and G.nodes[g].get("name") == "AccumulateGrad" and f in folded and g not in folded:
                folded[g] = folded[f]
                boxes[folded[f]].append(g)
    return boxes


def _grad_fn_box(p: Picture, key, members):
    G = p.G
    accs = [f for f in members if G.nodes[f].get("name") == "AccumulateGrad"]
    path = key[len("agmod:"):] if key.startswith("agmod:") else None
    if path:
        where = path.rsplit(".", 1)[0] if "." in path else None
        head = [path.rsplit(".", 1)[-1], fold.mod_type(G, path)]
    else:
        _, parent, typ, first, last = key[len("ag"):].split(":")
        where = parent
        head = [f"{int(last) - int(first) + 1} × {typ}", f"{parent.rsplit('.', 1)[-1]}.{first}–{last}"]
    label = lines(*head, f"{len(members) - len(accs)} grad_fns", f"{len(accs)} parameter grads" if accs else "")
    p.add_node(key, p.cluster(where), shape="box3d", style="filled", fillcolor=FOLDED_FILL, label=label)
    p.counts["ops"] += len(members) - len(accs)
    p.counts["params"] += len(accs)


def _grad_fn_node(p: Picture, f, made_by, leaf_of, grads, leaf_grads, fns, folded):
    G = p.G
    d = G.nodes[f]
    op = G.nodes.get(d.get("op") or "", {})
    where, leaf = _fn_cluster(p, op.get("module")) if op else (None, None)
    body = [f"{leaf}: {d.get('name')}" if leaf else d.get("name") or "?"]
    if op:
        body.append(f"← {p.where_loc(op)}: {cut(op.get('code'), 30)}")
    t = made_by.get(f) or leaf_of.get(f)
    if t is not None and d.get("name") == "AccumulateGrad":
        body.append(f"{name_of(G.nodes[t])} {shape_text(G.nodes[t].get('shape'))}")
    for i, s in sorted(grads.get(f, []), key=_call_order):
        body.append(f"∇ #{i + 1} {stat(s)}")
    for _, g, k in G.out_edges(f, data="kind"):
        if k != "next" or G.nodes[g].get("name") != "AccumulateGrad" or g not in fns or g in folded:
            continue
        leaf = leaf_of.get(g)
        if leaf is None or not p.is_param(leaf):
            continue
        folded[g] = f
        ld = G.nodes[leaf]
        gs = " ".join(f"#{i + 1} {stat(s)}" for i, s in sorted(leaf_grads.get(ld.get("tid"), []), key=_call_order))
        body.append(f".grad {fold.relative(ld.get('label'), op.get('module'))} {gs}")
        p.counts["params"] += 1
    if t is not None and d.get("name") == "AccumulateGrad":
        gs = " ".join(f"#{i + 1} {stat(s)}" for i, s in sorted(leaf_grads.get(G.nodes[t].get("tid"), []),
                                                                 key=_call_order))
        body.append(f".grad {gs}" if gs else "")
    color = "#d9ead3" if d.get("name") == "AccumulateGrad" else "#cfe2f3"
    p.add_node(f, p.cluster(where), shape="box", style="filled", fillcolor=color, label=lines(*body))
    p.counts["ops"] += 1


def _fn_cluster(p: Picture, mod):
    """(the module whose frame holds a grad_fn of an op of ``mod``, the leaf
    module's name to put in its label or None)."""
    if not mod:
        return None, None
    top = fold.collapsed_at(p.G, mod, p.depth)
    if top:
        return top, None
    if not fold.has_children(p.G, mod):  # a leaf module: named in the label, no frame
        return (mod.rsplit(".", 1)[0] if "." in mod else None), mod.rsplit(".", 1)[-1]
    return mod, None


def _backward_node(p: Picture, b, order, folded):
    G = p.G
    d = G.nodes[b]
    op = G.nodes.get(d.get("op") or "", {})
    w = ""
    for _, t, e in G.out_edges(b, data=True):
        if e.get("kind") != "weights":
            continue
        root = G.nodes[t]
        w = weighting_text(G, e, d)
        p.add_node(b, shape="doubleoctagon", style="filled", fillcolor="#ead1dc", label=lines(
            f"#{order[b] + 1} {cut(op.get('code') or d.get('api'), 30)}", f"{p.where_loc(op)}", w))
        fn = _drawn_as(root.get("grad_fn"), folded)
        if fn in p.drawn:
            p.add_edge(b, fn, color="#a64d79", penwidth="2",
                       label=lines(name_of(root), shape_text(root.get("shape"))))
    if b not in p.drawn:
        p.add_node(b, shape="doubleoctagon", style="filled", fillcolor="#ead1dc",
                   label=lines(f"#{order[b] + 1} {d.get('api')}()", w))


def _saved_tensors(p: Picture, fns):
    """Each drawn grad_fn's saved tensors: a note beside it, one per tensor it
    saved (parameters and buffers by their short name in one note)."""
    G = p.G
    saves: dict = {}
    for u, v, k in G.edges(data="kind"):
        if k == "saves" and u in fns and u in p.drawn:
            saves.setdefault(u, []).append(v)
    for f, ts in saves.items():
        mod = G.nodes.get(G.nodes[f].get("op") or "", {}).get("module")
        params = [fold.relative(G.nodes[t].get("label"), mod) for t in ts if p.is_param(t)]
        rest = [t for t in ts if not p.is_param(t)]
        text = [f"{name_of(G.nodes[t])} {shape_text(G.nodes[t].get('shape'))}" for t in rest]
        if params:
            text.append(", ".join(params))
        key = ("saved", f)
        p.add_node(key, p.placed.get(f), shape="note", style="filled", fillcolor="#fff2cc", fontsize="8",
                   label=lines("saved:", *text))
        p.add_edge(f, key, style="dotted", arrowhead="none", weight="0")


def weighting_text(G, e, bw) -> str:
    """Return what a backward call weighted its root by: ``w = 1 (implicit)``, the
    number passed, or the weighting tensor by its summary (values when it is small)."""
    w = e.get("gradient")
    if w is None:
        if bw.get("implicit"):
            return "w = 1 (implicit)"
        if e.get("gradient_value") is not None:
            return f"w = {e['gradient_value']}"
        r = (e.get("received") or {}).get("stats")
        return f"w {stat(r)}" if r else "w"
    wd = G.nodes.get(w, {})
    s = wd.get("stats") or {}
    shape = wd.get("shape")
    if shape is not None and numel(shape) == 1 and s.get("mean") is not None:
        return f"w = {name_of(wd)} = {s['mean']:.4g}"
    if s.get("min") is not None and s.get("min") == s.get("max"):
        return f"w = {name_of(wd)}: {shape_text(shape)} all {s['min']:.4g}"
    return f"w = {name_of(wd)}: {shape_text(shape)} {stat(s)}" + (
        f" [{s['min']:.3g}, {s['max']:.3g}]" if s.get("min") is not None else "")


def _call_order(entry) -> int:
    """Sort key of a ``(backward call index, statistics)`` entry: the call alone (two
    gradients reaching one node in one call keep their order; dicts do not compare)."""
    return entry[0]


def _fn_order(f) -> tuple:
    """Sort key of a ``fn:N`` node id: by N."""
    head, _, tail = str(f).partition(":")
    return (head, int(tail) if tail.isdigit() else 0, str(f))
