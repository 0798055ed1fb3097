"""Trace folders on disk: ``trace.json`` (node-link JSON) and ``values.safetensors``.

Nothing here unpickles: JSON and safetensors only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import networkx as nx

from .build import FORMAT

TRACE_FILE = "trace.json"
VALUES_FILE = "values.safetensors"
DOT_FILE = "graph.dot"


class TraceError(ValueError):
    """A trace folder or file that cannot be read; the message is one line."""


def _clean(obj):
    """JSON has no NaN or Inf: write them as strings that load back as floats."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


_STAT_FLOATS = ("min", "max", "mean", "norm")


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


def save(G: nx.MultiDiGraph, folder, values: dict | None = None, dot: str | None = None) -> Path:
    """Write ``G`` (and captured values, and a DOT text) into ``folder``; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = nx.node_link_data(G, edges="edges")
    tmp = folder / (TRACE_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_clean(data), f, separators=(",", ":"), allow_nan=False)
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
        with open(p, encoding="utf-8") as f:
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
        G = nx.node_link_graph(data, directed=True, multigraph=True, edges="edges")
    except Exception as e:
        raise TraceError(f"{p}: corrupt trace file ({type(e).__name__}: {e})") from None
    for _, attrs in G.nodes(data=True):
        _restore(attrs)
    for _, _, attrs in G.edges(data=True):
        _restore(attrs)
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
