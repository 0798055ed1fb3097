"""Trace folders on disk: ``trace.json`` (node-link JSON) and ``values.safetensors``.

Nothing here unpickles: JSON and safetensors only.
"""

from __future__ import annotations

import json
import math
from itertools import count
from pathlib import Path

import networkx as nx

from .build import FORMAT, gc_paused

TRACE_FILE = "trace.json"
VALUES_FILE = "values.safetensors"
DOT_FILE = "graph.dot"


class TraceError(ValueError):
    """A trace folder or file that cannot be read; the message is one line."""


def _clean(obj):
    """JSON has no NaN or Inf: write them as strings that load back as floats."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        return obj
    if t is dict:
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, float):
        if obj != obj:
            return "nan"
        if obj in (math.inf, -math.inf):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (dict, str, int)):  # their subclasses
        return {k: _clean(v) for k, v in obj.items()} if isinstance(obj, dict) else obj
    return str(obj)


_STAT_FLOATS = ("min", "max", "mean", "norm")
_RESTORE_KEYS = frozenset(("stats", "prior", "received"))


def _restore(attrs: dict):
    for key in ("stats", "prior"):
        s = attrs.get(key)
        if isinstance(s, dict):
            for k in _STAT_FLOATS:
                if isinstance(s.get(k), str):
                    s[k] = float(s[k])
    rec = attrs.get("received")
    if isinstance(rec, dict):
        _restore(rec)


def _node_link_data(G: nx.MultiDiGraph) -> dict:
    """``networkx.node_link_data(G, edges="edges")``, the same dict in the same order,
    without networkx's per-edge view machinery."""
    if type(G) is not nx.MultiDiGraph:
        return nx.node_link_data(G, edges="edges")
    return {
        "directed": True,
        "multigraph": True,
        "graph": G.graph,
        "nodes": [{**d, "id": n} for n, d in G._node.items()],
        "edges": [
            {**d, "source": u, "target": v, "key": k}
            for u, nbrs in G._succ.items()
            for v, keydict in nbrs.items()
            for k, d in keydict.items()
        ],
    }


def _dumps(data) -> str:
    # json.dumps runs the C encoder (json.dump streams through the pure-Python one,
    # several times slower). The fast attempt refuses NaN and Inf; only a graph that
    # holds some pays for the cleaning pass.
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        pass
    data = dict(data)
    data["graph"] = _clean(data["graph"])
    data["nodes"] = [_clean_attrs(d) for d in data["nodes"]]
    data["edges"] = [_clean_attrs(d) for d in data["edges"]]
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def _clean_attrs(d: dict) -> dict:
    """``_clean`` for one node's or edge's attributes, touching only the values that
    are not plain strings, integers or None."""
    out = d
    for k, v in d.items():
        t = type(v)
        if t is str or t is int or v is None or t is bool:
            continue
        if out is d:
            out = dict(d)
        out[k] = _clean(v)
    return out


def save(G: nx.MultiDiGraph, folder, values: dict | None = None, dot: str | None = None) -> Path:
    """Write ``G`` (and captured values, and a DOT text) into ``folder``; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gc_paused():
        text = _dumps(_node_link_data(G))
    tmp = folder / (TRACE_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    del text
    tmp.replace(folder / TRACE_FILE)
    vpath = folder / VALUES_FILE
    if values:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in values.items()}, str(vpath))
    elif vpath.exists():
        vpath.unlink()
    if dot is not None:
        (folder / DOT_FILE).write_text(dot, encoding="utf-8")
    return folder


def trace_path(path) -> Path:
    """Return the ``trace.json`` of a trace folder (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        return p / TRACE_FILE
    return p


def load_graph(path) -> nx.MultiDiGraph:
    """Read a trace folder (or its ``trace.json``) and return its graph.

    Raises :class:`TraceError` with a one-line message for a missing, corrupt,
    foreign or newer-version file."""
    p = trace_path(path)
    if not Path(path).exists():
        raise TraceError(f"{path}: no such trace folder or file")
    if not p.is_file():
        raise TraceError(f"{path}: not a gradtrace trace (no {TRACE_FILE} in it)")
    try:
        with open(p, encoding="utf-8") as f, gc_paused():
            data = json.load(f)
    except UnicodeDecodeError:
        raise TraceError(f"{p}: not a gradtrace trace (not UTF-8 JSON)") from None
    except json.JSONDecodeError as e:
        raise TraceError(f"{p}: corrupt trace file (invalid JSON at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("graph"), dict) or "nodes" not in data:
        raise TraceError(f"{p}: not a gradtrace trace (no graph in it)")
    fmt = data["graph"].get("format")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("gradtrace/"):
            raise TraceError(f"{p}: trace format {fmt} is not supported (this gradtrace reads {FORMAT})")
        raise TraceError(f"{p}: not a gradtrace trace (format is {fmt!r}, expected {FORMAT!r})")
    try:
        with gc_paused():
            return _node_link_graph(data)
    except Exception as e:
        raise TraceError(f"{p}: corrupt trace file ({type(e).__name__}: {e})") from None


def _node_id(x):
    return tuple(_node_id(v) for v in x) if isinstance(x, list) else x


def _node_link_graph(data: dict) -> nx.MultiDiGraph:
    """``networkx.node_link_graph(data, directed=True, multigraph=True, edges="edges")``
    with the statistics restored, filling the graph's dictionaries directly (what
    ``add_node``/``add_edge`` would do, without their per-call checks and cache
    clearing); the result is an ordinary ``MultiDiGraph``."""
    if data.get("multigraph", True) is not True or data.get("directed", True) is not True:
        G = nx.node_link_graph(data, directed=True, multigraph=True, edges="edges")
        for _, attrs in G.nodes(data=True):
            _restore(attrs)
        for _, _, attrs in G.edges(data=True):
            _restore(attrs)
        return G
    G = nx.MultiDiGraph()
    graph = data.get("graph", {})
    G.graph = graph
    nodes, succ, pred = G._node, G._succ, G._pred
    restore = _RESTORE_KEYS.isdisjoint
    c = count()
    for d in data["nodes"]:
        n = _node_id(d.pop("id")) if "id" in d else next(c)
        if not restore(d):
            _restore(d)
        if n in nodes:
            nodes[n].update(d)
        else:
            nodes[n] = d
            succ[n] = {}
            pred[n] = {}
    for d in data["edges"]:
        u = d.pop("source")
        v = d.pop("target")
        k = d.pop("key", None)
        if isinstance(u, list):
            u = _node_id(u)
        if isinstance(v, list):
            v = _node_id(v)
        if not restore(d):
            _restore(d)
        for x in (u, v):
            if x not in nodes:
                nodes[x] = {}
                succ[x] = {}
                pred[x] = {}
        keydict = succ[u].get(v)
        if keydict is None:
            keydict = succ[u][v] = pred[v][u] = {}
        if k is None:
            k = len(keydict)
            while k in keydict:
                k += 1
        if k in keydict:
            keydict[k].update(d)
        else:
            keydict[k] = d
    return G


def load_values(path) -> dict:
    """Return the captured values of a trace folder as CPU tensors ({} when none)."""
    p = Path(path)
    v = (p if p.is_dir() else p.parent) / VALUES_FILE
    if not v.exists():
        return {}
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(v))
    except (SafetensorError, OSError, ValueError) as e:
        raise TraceError(f"{v}: corrupt values file ({e})") from None
