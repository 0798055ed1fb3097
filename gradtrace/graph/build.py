"""Turn a recorder's compact records into the trace-format graph (``gradtrace/1``)."""

from __future__ import annotations

import linecache

import networkx as nx

from ..record import stats as _stats
from ..record.scan import Opaque
from ..record.timing import read_times
from .gcpause import gc_paused

__all__ = ["build_graph", "label_numbers"]


def _args_text(scalars) -> str:
    """The text of an op's non-tensor arguments, from the record's flat
    ``(position, value, ...)`` tuple."""
    parts = []
    for pos, v in zip(scalars[0::2], scalars[1::2]):
        text = str(v) if isinstance(v, Opaque) else repr(v)
        if len(text) > 60:
            text = text[:57] + "..."
        parts.append(text if isinstance(pos, int) else f"{pos}={text}")
    return ", ".join(parts)


def _type_key(v):
    """The types of ``v`` and, for a tuple, of everything in it."""
    if type(v) is tuple:
        return tuple(_type_key(x) for x in v)
    return type(v)


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


def label_numbers(label_of: dict) -> dict:
    """Return ``{tid: k}`` for tensors whose label other tensors share: ``k`` (from 1)
    orders the tensors bound to that label by first sight (tid). Tensors with a label
    of their own are left out."""
    by_label: dict = {}
    for tid in sorted(label_of):
        by_label.setdefault(label_of[tid], []).append(tid)
    return {tid: k for tids in by_label.values() if len(tids) > 1 for k, tid in enumerate(tids, 1)}


def build_graph(rec, meta: dict) -> nx.MultiDiGraph:
    """Return the trace graph of a recording (a ``gradtrace.record.mode.Recorder``:
    its ``records``, ``labels`` and ``modules``), with ``meta`` as ``G.graph``."""
    with gc_paused():
        return _build(rec, meta)


class _Filler:
    """Fills a ``MultiDiGraph``'s dictionaries as ``add_node``/``add_edge`` would,
    without their per-call checks and cache clearing (a 200k-op trace has a million
    nodes and edges). The result is an ordinary ``MultiDiGraph``."""

    __slots__ = ("node", "succ", "pred")

    def __init__(self, G: nx.MultiDiGraph):
        self.node, self.succ, self.pred = G._node, G._succ, G._pred

    def add_node(self, n, attrs: dict):
        node = self.node
        if n in node:
            node[n].update(attrs)
        else:
            node[n] = attrs
            self.succ[n] = {}
            self.pred[n] = {}

    def add_edge(self, u, v, attrs: dict):
        succ = self.succ
        nbrs = succ.get(u)
        if nbrs is None:
            self.add_node(u, {})
            nbrs = succ[u]
        keydict = nbrs.get(v)
        if keydict is None:
            if v not in succ:
                self.add_node(v, {})
            keydict = nbrs[v] = self.pred[v][u] = {}
            keydict[0] = attrs
            return
        k = len(keydict)
        while k in keydict:
            k += 1
        keydict[k] = attrs


def _released(meta: dict) -> bool:
    """True when the graph built now is the trace's one graph (recording has ended):
    each list of records is then let go once turned into the graph, so the records
    and the graph are not both held at their full size."""
    return meta.get("status") not in (None, "running")


def _build(rec, meta: dict) -> nx.MultiDiGraph:
    records = rec.records
    G = nx.MultiDiGraph()
    G.graph.update(meta)
    G.graph["other_thread_module_calls"] = rec.modules.other_threads
    G.graph["grad_reads"] = records.grad_reads
    G.graph["unknown"] = [
        {"what": what, "error": msg, "count": n, "first_op": op}
        for (what, _), (n, msg, op) in records.unknown.items()
    ]
    f = _Filler(G)
    add_node, add_edge = f.add_node, f.add_edge
    release = _released(meta)

    variables = rec.modules.vars
    for path, typ in rec.modules.modules.items():
        add_node(f"mod:{path}", {"kind": "module", "path": path, "type": typ, "var": variables.get(path)})
    for child, parent in rec.modules.parents.items():
        add_edge(f"mod:{parent}", f"mod:{child}", {"kind": "parent"})

    nodes, succ, pred = f.node, f.succ, f.pred
    for sid, (device, nbytes, origin) in records.storages.items():
        if sid in nodes:
            add_node(sid, _StorageAttrs(device, nbytes, origin).__dict__)
        else:  # the common case, inline
            nodes[sid] = _StorageAttrs(device, nbytes, origin).__dict__
            succ[sid] = {}
            pred[sid] = {}
    if release:
        records.storages = {}
    for nid, attrs in records.numpy.items():
        add_node(nid, {"kind": "numpy", **attrs})
    for fid, attrs in records.fns.items():
        add_node(fid, {"kind": "grad_fn", **attrs})
    for bw, attrs in records.backwards.items():
        add_node(bw, {"kind": "backward", **attrs})
    for i, (seq, n, typ, lrs) in enumerate(records.optimizer_steps):
        add_node(f"opt:{i}", {"kind": "optimizer_step", "seq": seq, "optimizer": n, "type": typ, "lr": list(lrs)})
    for i, (seq, scale, skipped, new) in enumerate(records.loss_scales):
        add_node(f"ls:{i}", {"kind": "loss_scale", "seq": seq, "scale": scale, "skipped": skipped, "new_scale": new})
    for cid, attrs in records.collectives.items():
        attrs = {"kind": "collective", **attrs}
        for k in ("local", "reduced"):
            if k in attrs and not isinstance(attrs[k], dict):
                attrs[k] = _stats.finalize(attrs[k])
        add_node(cid, attrs)

    take = _drain if release else iter
    _add_tensors(rec, f, take(records.tensors))
    if release:  # names are in the graph now; a long loop has one entry per tensor
        rec.labels.release()
    _add_updates(G, take(records.updates))
    times = read_times(take(records.times))
    _add_ops(rec, f, take(records.ops))
    _add_times(G, times)
    _add_edges(take(records.edges), f)
    # A node an edge names but no record made (a read that failed half-way) is
    # kept, marked, rather than left without the attributes every reader expects.
    for data in G._node.values():
        if "kind" not in data:
            data["kind"] = "unknown"
    return G


# -- attribute dictionaries that share their keys -----------------------------------
#
# A trace holds hundreds of thousands of tensor, op and storage nodes and edges whose
# attribute dicts have the same keys in the same order. The instance dicts of one
# class share a single key table in CPython (PEP 412): each holds only its values,
# 288 bytes against a plain dict's 464 for a tensor's fourteen keys. The classes
# exist only for that; the graph holds plain ``dict`` objects, which users read and
# change as any other (a dict whose keys diverge just stops sharing).


class _TensorAttrs:
    def __init__(self, tid, ver, shape, dtype, device, stride, sid, offset, rg, leaf, fid, label, stats):
        self.kind = "tensor"
        self.tid = tid
        self.version = ver
        self.shape = shape
        self.dtype = dtype
        self.device = device
        self.stride = stride
        self.storage = sid
        self.storage_offset = offset
        self.requires_grad = rg
        self.is_leaf = leaf
        self.grad_fn = fid
        self.label = label
        self.stats = stats


class _OpAttrs:
    def __init__(self, name, seq, category, file, line, code, module, grad, args, phase, direct):
        self.kind = "op"
        self.name = name
        self.seq = seq
        self.category = category
        self.file = file
        self.line = line
        self.code = code
        self.module = module
        self.grad_enabled = grad
        self.args = args
        self.phase = phase
        self.direct = direct


class _StorageAttrs:
    def __init__(self, device, nbytes, origin):
        self.kind = "storage"
        self.device = device
        self.nbytes = nbytes
        self.origin = origin


class _KindAttrs:
    def __init__(self, kind):
        self.kind = kind


class _KindPosAttrs:
    def __init__(self, kind, pos):
        self.kind = kind
        self.pos = pos


def _drain(records: list):
    """Yield the items of ``records``, letting go of each as it is taken (its memory
    then serves the graph's next dictionaries), and leave the list empty."""
    for i in range(len(records)):
        r = records[i]
        records[i] = None
        yield r
    records.clear()


def _add_tensors(rec, f: _Filler, records):
    label_of = rec.labels.by_tid()
    label_n = label_numbers(label_of)
    params = rec.labels.params
    finalize = _stats.finalize
    nodes, succ, pred = f.node, f.succ, f.pred
    for node, tid, ver, shape, dtype, device, stride, sid, offset, rg, leaf, fid, st in records:
        attrs = _TensorAttrs(tid, ver, list(shape) if shape is not None else None, dtype, device,
                             list(stride) if stride is not None else None, sid, offset, rg, leaf, fid,
                             label_of.get(tid), finalize(st) if st is not None else None).__dict__
        if label_n:
            n = label_n.get(tid)
            if n is not None:
                attrs["label_n"] = n
        if params:
            param = params.get(tid)
            if param is not None:
                attrs["param_of"] = f"mod:{param[0]}"
                attrs["param_kind"] = param[2]
        if node in nodes:
            f.add_node(node, attrs)
            out = succ[node]
        else:  # the common case, inline: a new node
            nodes[node] = attrs
            out = succ[node] = {}
            pred[node] = {}
        # Its storage and autograd node are in the graph already: a first edge to each.
        if sid is not None:
            back = pred.get(sid)
            if back is None or sid in out:
                f.add_edge(node, sid, _KindAttrs("in_storage").__dict__)
            else:
                out[sid] = back[node] = {0: _KindAttrs("in_storage").__dict__}
        if fid is not None:
            back = pred.get(fid)
            if back is None or fid in out:
                f.add_edge(node, fid, _KindAttrs("grad_fn").__dict__)
            else:
                out[fid] = back[node] = {0: _KindAttrs("grad_fn").__dict__}


def _add_updates(G: nx.MultiDiGraph, records) -> None:
    """Each update's difference (``w' - w``) on the parameter's version after it."""
    nodes = G._node
    for after, before, st in records:
        d = nodes.get(after)
        if d is not None:
            d["update"] = {"from": before, "stats": _stats.finalize(st) if st is not None else None}


def _add_times(G: nx.MultiDiGraph, times: dict) -> None:
    """``--time``: each op's wall time, and its GPU time where it ran on CUDA."""
    nodes = G._node
    for seq, (ns, gpu) in times.items():
        d = nodes.get(f"op:{seq}")
        if d is not None:
            d["time_ns"] = ns
            if gpu is not None:
                d["device_time_ns"] = gpu


def _add_ops(rec, f: _Filler, records):
    add_node, add_edge = f.add_node, f.add_edge
    nodes, succ, pred = f.node, f.succ, f.pred
    codes: dict = {}  # (file, line) -> the source line, one string for all its ops
    args: dict = {}  # scalars -> text
    final_path = rec.modules.final_path if rec.modules.renamed else None
    for r in records:
        if r is None:  # an op still running (a graph read while recording)
            continue
        seq, name, cat, file, line, module, grad, scalars, bw, extra, direct = r
        if final_path is not None:
            module = final_path(module)
        key = (file, line)
        code = codes.get(key)
        if code is None and key not in codes:
            code = codes[key] = (linecache.getline(file, line).strip() or None) if file and line else None
        try:
            # 1 == 1.0 == True: the key tells them apart by type, or `a + 1.0` would
            # show the text of an earlier `a + 1`.
            types = tuple(map(type, scalars))
            akey = (scalars, _type_key(scalars) if tuple in types else types)
            text = args.get(akey)
            if text is None:
                text = args[akey] = _args_text(scalars)
        except TypeError:  # an unhashable argument (a slice, before Python 3.12)
            text = _args_text(scalars)
        attrs = _OpAttrs(name, seq, cat or "other", file, line, code, module, grad, text,
                         "backward" if bw else "forward", direct).__dict__
        if bw:
            attrs["during"] = bw
        if extra:
            attrs.update(extra)
            if "autocast" in extra:  # shared by the records of one autocast state
                attrs["autocast"] = dict(extra["autocast"])
        node = f"op:{seq}"
        if node in nodes:
            add_node(node, attrs)
        else:  # the common case, inline: a new node
            nodes[node] = attrs
            succ[node] = {}
            pred[node] = {}
        if module is not None:
            add_edge(node, f"mod:{module}", _KindAttrs("in_module").__dict__)


def _add_edges(edges, f: _Filler):
    succ, pred, add_edge = f.succ, f.pred, f.add_edge
    for e in edges:
        if len(e) == 4:
            u, v, kind, pos = e
            attrs = (_KindAttrs(kind) if pos is None else _KindPosAttrs(kind, pos)).__dict__
        else:
            u, v, attrs = e
            if type(attrs) is not tuple:
                attrs = dict(_edge_stats(attrs))
            elif type(attrs[0]) is str:  # flat: key, value, key, value, ...
                attrs = dict(zip(attrs[0::2], attrs[1::2]))
            else:
                attrs = dict(attrs)
        try:  # both ends are nodes already: the common case, inline
            nbrs = succ[u]
            back = pred[v]
        except KeyError:
            add_edge(u, v, attrs)
            continue
        if v not in nbrs:  # the first edge between u and v
            nbrs[v] = back[u] = {0: attrs}
        else:
            keydict = nbrs[v]
            k = len(keydict)
            while k in keydict:
                k += 1
            keydict[k] = attrs
