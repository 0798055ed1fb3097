"""Turn a recorder's compact records into the trace-format graph (``gradtrace/1``)."""

from __future__ import annotations

import gc
import linecache
from contextlib import contextmanager

import networkx as nx

from . import stats as _stats
from .recorder import Opaque, Recorder

FORMAT = "gradtrace/1"


def _args_text(scalars) -> str:
    parts = []
    for pos, v in scalars:
        text = str(v) if isinstance(v, Opaque) else repr(v)
        if len(text) > 60:
            text = text[:57] + "..."
        parts.append(text if isinstance(pos, int) else f"{pos}={text}")
    return ", ".join(parts)


def _edge_stats(attrs: dict) -> dict:
    for k in ("stats", "prior"):
        v = attrs.get(k)
        if v is not None and not isinstance(v, dict):
            attrs[k] = _stats.finalize(v)
    rec = attrs.get("received")
    if rec is not None and rec.get("stats") is not None and not isinstance(rec["stats"], dict):
        rec["stats"] = _stats.finalize(rec["stats"])
    gv = attrs.get("gradient_value")
    if gv is not None and not isinstance(gv, (int, float, bool)):
        attrs["gradient_value"] = repr(gv)
    return attrs


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while millions of small acyclic dicts are
    made: each collection would walk them all again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def build_graph(rec: Recorder, meta: dict) -> nx.MultiDiGraph:
    """Return the trace graph of a finished recording, with ``meta`` as ``G.graph``."""
    with gc_paused():
        return _build(rec, meta)


def _build(rec: Recorder, meta: dict) -> nx.MultiDiGraph:
    G = nx.MultiDiGraph()
    G.graph.update(meta)
    G.graph["other_thread_module_calls"] = rec.modules.other_threads
    G.graph["grad_reads"] = rec.grad_reads
    G.graph["unknown"] = [
        {"what": what, "error": msg, "count": n, "first_op": op}
        for (what, _), (n, msg, op) in rec.unknown.items()
    ]

    for path, typ in rec.modules.modules.items():
        G.add_node(f"mod:{path}", kind="module", path=path, type=typ)
    for child, parent in rec.modules.parents.items():
        G.add_edge(f"mod:{parent}", f"mod:{child}", kind="parent")

    for sid, (device, nbytes, origin) in rec.storages.items():
        G.add_node(sid, kind="storage", device=device, nbytes=nbytes, origin=origin)
    for nid, attrs in rec.numpy.items():
        G.add_node(nid, kind="numpy", **attrs)
    for fid, attrs in rec.fns.items():
        G.add_node(fid, kind="grad_fn", **attrs)
    for bw, attrs in rec.backwards.items():
        G.add_node(bw, kind="backward", **attrs)
    for cid, attrs in rec.collectives.items():
        G.add_node(cid, kind="collective", **attrs)

    labels, fallback = rec.labels, rec.fallback_labels
    for node, tid, ver, shape, dtype, device, stride, sid, offset, rg, leaf, fid, st in rec.tensors:
        G.add_node(
            node, kind="tensor", tid=tid, version=ver, shape=list(shape) if shape is not None else None,
            dtype=dtype,
            device=device, stride=list(stride) if stride is not None else None, storage=sid,
            storage_offset=offset, requires_grad=rg, is_leaf=leaf, grad_fn=fid,
            label=labels.get(tid) or fallback.get(tid), stats=_stats.finalize(st),
        )
        param = rec.params.get(tid)
        if param is not None:
            G.nodes[node]["param_of"] = f"mod:{param[0]}"
            G.nodes[node]["param_kind"] = param[2]
        if sid is not None:
            G.add_edge(node, sid, kind="in_storage")
        if fid is not None:
            G.add_edge(node, fid, kind="grad_fn")

    for r in rec.ops:
        if r is None:  # an op still running (a graph read while recording)
            continue
        seq, name, cat, file, line, module, grad, scalars, bw, extra, direct = r
        code = linecache.getline(file, line).strip() if file and line else None
        attrs = dict(
            kind="op", name=name, seq=seq, category=cat or "other", file=file, line=line,
            code=code or None, module=module, grad_enabled=grad, args=_args_text(scalars),
            phase="backward" if bw else "forward", direct=direct,
        )
        if bw:
            attrs["during"] = bw
        if extra:
            attrs.update(extra)
        node = f"op:{seq}"
        G.add_node(node, **attrs)
        if module is not None:
            G.add_edge(node, f"mod:{module}", kind="in_module")

    for e in rec.edges:
        if len(e) == 4:
            u, v, kind, pos = e
            if pos is None:
                G.add_edge(u, v, kind=kind)
            else:
                G.add_edge(u, v, kind=kind, pos=pos)
        else:
            u, v, attrs = e
            G.add_edge(u, v, **(dict(attrs) if type(attrs) is tuple else _edge_stats(attrs)))
    # A node an edge names but no record made (a read that failed half-way) is
    # kept, marked, rather than left without the attributes every reader expects.
    for node, data in G.nodes(data=True):
        if "kind" not in data:
            data["kind"] = "unknown"
    return G
