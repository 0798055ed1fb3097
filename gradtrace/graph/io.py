"""Trace folders on disk: ``trace.json`` (node-link JSON) and ``values.safetensors``.

Nothing here unpickles: JSON and safetensors only.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from itertools import count
from pathlib import Path

import networkx as nx

from .gcpause import gc_paused
from .schema import FORMAT, FormatViolation, check_data, check_refs, check_values, short_repr

__all__ = [
    "DOT_FILE", "HEAD_ATTRS", "STEPS", "SUMMARY", "TRACE_FILE", "TraceError", "VALUES_FILE", "check_path", "clean", "load_graph",
    "load_values", "save", "trace_path",
]

TRACE_FILE = "trace.json"
VALUES_FILE = "values.safetensors"
DOT_FILE = "graph.dot"
SUMMARY = "summary"  # the graph attribute of trace.json's head that holds the run's summary
STEPS = "steps"  # ... and the one that holds a row per step
HEAD_ATTRS = (SUMMARY, STEPS)  # figures of the file for readers of its head, made from the graph


class TraceError(ValueError):
    """A trace folder or file that cannot be read; the message is one line."""


def clean(obj):
    """JSON has no NaN or Inf: write them as strings that load back as floats."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        return obj
    if t is dict:
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, float):
        if obj != obj:
            return "nan"
        if obj in (math.inf, -math.inf):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (dict, str, int)):  # their subclasses
        return {k: clean(v) for k, v in obj.items()} if isinstance(obj, dict) else obj
    return str(obj)


_STAT_FLOATS = ("min", "max", "mean", "norm")
_FLOAT_WORDS = ("nan", "inf", "-inf")
_RESTORE_KEYS = frozenset(("stats", "prior", "received", "local", "reduced", "update"))


def _restore(attrs: dict):
    for key in ("stats", "prior", "local", "reduced"):
        s = attrs.get(key)
        if isinstance(s, dict):
            for k in _STAT_FLOATS:
                if s.get(k) in _FLOAT_WORDS:
                    s[k] = float(s[k])
    for key in ("received", "update"):
        inner = attrs.get(key)
        if isinstance(inner, dict):
            _restore(inner)


_CHUNK = 4096  # nodes or edges per encoder call: C-encoder speed, bounded memory


def _encode(items: list) -> str:
    """JSON text of a list of node or edge dicts, without the brackets."""
    # json.dumps runs the C encoder (json.dump streams through the pure-Python one,
    # several times slower). The fast attempt refuses NaN and Inf; only a chunk that
    # holds some pays for the cleaning pass.
    # Without the encoder's cycle check (a set of container ids, 12% of the time):
    # a cyclic attribute (only a user's own edit of the graph could make one) ends in
    # RecursionError, and takes the checked route, which reports it as before.
    try:
        text = json.dumps(items, separators=(",", ":"), allow_nan=False, default=str, check_circular=False)
    except (ValueError, RecursionError):
        text = json.dumps([_clean_attrs(d) for d in items], separators=(",", ":"), allow_nan=False, default=str)
    return text[1:-1]


def _write_items(f, items) -> None:
    first = True
    chunk = []
    for d in items:
        chunk.append(d)
        if len(chunk) == _CHUNK:
            f.write(("" if first else ",") + _encode(chunk))
            first, chunk = False, []
    if chunk:
        f.write(("" if first else ",") + _encode(chunk))


def _write_json(G: nx.MultiDiGraph, f, graph: dict) -> None:
    """Write ``networkx.node_link_data(G, edges="edges")`` as JSON to ``f``, node by
    node and edge by edge (the text of a large trace is never held whole)."""
    try:
        head = json.dumps(graph, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        head = json.dumps(clean(graph), separators=(",", ":"), allow_nan=False, default=str)
    f.write('{"directed":true,"multigraph":true,"graph":' + head + ',"nodes":[')
    _write_items(f, ({**d, "id": n} for n, d in G._node.items()))
    f.write('],"edges":[')
    _write_items(f, ({**d, "source": u, "target": v, "key": k}
                     for u, nbrs in G._succ.items()
                     for v, keydict in nbrs.items()
                     for k, d in keydict.items()))
    f.write("]}")


def _clean_attrs(d: dict) -> dict:
    """``clean`` for one node's or edge's attributes, touching only the values that
    are not plain strings, integers or None."""
    out = d
    for k, v in d.items():
        t = type(v)
        if t is str or t is int or v is None or t is bool:
            continue
        if out is d:
            out = dict(d)
        out[k] = clean(v)
    return out


@functools.cache
def _safetensors_dtypes() -> frozenset:
    """What safetensors holds faithfully; anything else is recorded in ``values_not_saved``."""
    import torch  # here, not above: reading a trace needs no torch

    return frozenset(
        getattr(torch, n) for n in (
            "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
            "complex64", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
            "float8_e5m2fnuz")
        if hasattr(torch, n))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}"


def _value_to_save(v):
    """``(CPU contiguous tensor, None)`` for a value safetensors can hold as it is,
    else ``(None, why not)``."""
    import torch

    if not isinstance(v, torch.Tensor):
        return None, f"not a tensor ({type(v).__name__})"
    try:
        if v.is_quantized:
            return None, f"quantized tensor ({str(v.dtype).replace('torch.', '')}): safetensors has no such dtype"
        if v.layout != torch.strided:
            return None, f"{str(v.layout).replace('torch.', '')} layout: safetensors holds strided tensors only"
        if v.dtype not in _safetensors_dtypes():
            return None, f"dtype {str(v.dtype).replace('torch.', '')}: safetensors has no such dtype"
        t = v.detach()
        if t.device.type != "cpu":
            t = t.to("cpu")
        t = t.contiguous()
        t.data_ptr()  # a tensor without storage (torch.func wrappers) raises here, not in save_file
        return t, None
    except Exception as e:
        return None, _one_line(e)


def _save_values(values: dict, vpath: Path) -> dict:
    """Write the values safetensors can hold to ``vpath``; return ``{key: why not}``
    for the others (all of them when the file cannot be written)."""
    import torch
    from safetensors.torch import save_file

    keep, not_saved, first, shared = {}, {}, {}, {}
    for k, v in values.items():
        key = str(k)
        if isinstance(v, torch.Tensor) and id(v) in first:
            # one copy shared by versions whose value did not change: written once
            shared[key] = first[id(v)]
            continue
        t, why = _value_to_save(v)
        if why is None:
            keep[key] = t
            first[id(v)] = key
        else:
            not_saved[key] = why
    if vpath.exists():
        vpath.unlink()
    if keep:
        try:
            save_file(keep, str(vpath), metadata={_SHARED: json.dumps(shared)} if shared else None)
            _chmod_like_open(vpath)
        except Exception as e:
            why = f"values.safetensors could not be written ({_one_line(e)})"
            not_saved.update(dict.fromkeys(keep, why))
            vpath.unlink(missing_ok=True)
    return not_saved


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it
    os.umask(mask)
    return mask


def _chmod_like_open(path: Path) -> None:
    # safetensors writes through a private temporary file (mode 0600); the other
    # files of the folder are made by open(), 0666 less the umask.
    os.chmod(path, 0o666 & ~_umask())


def save(G: nx.MultiDiGraph, folder, values: dict | None = None, dot: str | None = None,
         head: dict | None = None) -> Path:
    """Write ``G`` (and captured values, a DOT text, and ``head``: figures of ``G`` for
    readers of the head alone, ``{"summary": ..., "steps": ...}``, see
    :mod:`gradtrace.graph.head`) into ``folder``; return its path.

    Values safetensors cannot hold faithfully (quantized, complex32, sparse, tensors
    without storage) are left out, each with its reason in the written graph attribute
    ``values_not_saved``; the trace itself is always written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if type(G) is not nx.MultiDiGraph:
        G = nx.MultiDiGraph(G)
    # Head figures are written only as given: ones read with the graph may no longer describe it.
    graph = {k: v for k, v in G.graph.items() if k not in HEAD_ATTRS}
    graph.update({k: v for k, v in (head or {}).items() if k in HEAD_ATTRS and v is not None})
    not_saved = _save_values(values, folder / VALUES_FILE) if values else None
    if not values and (folder / VALUES_FILE).exists():
        (folder / VALUES_FILE).unlink()
    if not_saved:
        graph["values_not_saved"] = not_saved
        print(f"gradtrace: note: {len(not_saved)} captured value(s) not saved in {VALUES_FILE} (why: "
              f"values_not_saved in {TRACE_FILE})", file=sys.stderr)
    tmp = folder / (TRACE_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f, gc_paused():
        _write_json(G, f, graph)
    tmp.replace(folder / TRACE_FILE)
    if dot is not None:
        (folder / DOT_FILE).write_text(dot, encoding="utf-8")
    return folder


def trace_path(path) -> Path:
    """Return the ``trace.json`` of a trace folder (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        return p / TRACE_FILE
    return p


def check_path(path) -> Path:
    """Return ``path`` as a Path when it names something that can be read.

    Raises :class:`TraceError` (one line) for an empty path, a missing one, a broken
    or looping symbolic link, or one that cannot be read."""
    if path is None or str(path) == "":
        raise TraceError("no trace folder given (the path is empty)")
    p = Path(path)
    try:
        os.stat(p)
    except FileNotFoundError:
        if os.path.lexists(p):
            raise TraceError(f"{path}: a symbolic link to nothing ({os.readlink(p)} does not exist)") from None
        raise TraceError(f"{path}: no such trace folder or file") from None
    except OSError as e:
        raise TraceError(f"{path}: cannot be read ({e.strerror})") from None
    return p


def load_graph(path) -> nx.MultiDiGraph:
    """Read a trace folder (or its ``trace.json``), check it against the format
    (:mod:`gradtrace.schema`) and return its graph.

    Raises :class:`TraceError` with a one-line message for a missing, corrupt,
    foreign, newer-version or malformed file."""
    check_path(path)
    p = trace_path(path)
    if not p.is_file():
        raise TraceError(f"{path}: not a gradtrace trace (no {TRACE_FILE} in it)")
    with gc_paused():  # millions of acyclic dicts: each collection would walk them all again
        return _read_graph(p)


def _read_graph(p: Path) -> nx.MultiDiGraph:
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
    except UnicodeDecodeError:
        raise TraceError(f"{p}: not a gradtrace trace (not UTF-8 JSON)") from None
    except json.JSONDecodeError as e:
        raise TraceError(f"{p}: corrupt trace file (invalid JSON at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise TraceError(f"{p}: corrupt trace file (JSON nested too deeply to read)") from None
    except ValueError as e:  # e.g. an integer too long to convert
        raise TraceError(f"{p}: corrupt trace file ({' '.join(str(e).split())[:200]})") from None
    except OSError as e:
        raise TraceError(f"{p}: cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("graph"), dict) or "nodes" not in data:
        raise TraceError(f"{p}: not a gradtrace trace (no graph in it)")
    fmt = data["graph"].get("format")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("gradtrace/"):
            raise TraceError(f"{p}: trace format {fmt} is not supported (this gradtrace reads {FORMAT})")
        raise TraceError(f"{p}: not a gradtrace trace (format is {short_repr(fmt)}, expected {FORMAT!r})")
    try:
        refs = check_data(data)
        G = _node_link_graph(data)
        check_refs(refs, G._node)
    except FormatViolation as e:
        raise TraceError(f"{p}: malformed trace: {e}") from None
    for k in HEAD_ATTRS:  # figures of the file for readers of its head; the graph itself is the truth
        G.graph.pop(k, None)
    return G


def _node_id(x):
    return tuple(_node_id(v) for v in x) if isinstance(x, list) else x


def _node_link_graph(data: dict) -> nx.MultiDiGraph:
    """``networkx.node_link_graph(data, directed=True, multigraph=True, edges="edges")``
    of data that passed :func:`gradtrace.schema.check_data`, with the statistics
    restored, filling the graph's dictionaries directly (what ``add_node``/``add_edge``
    would do, without their per-call checks and cache clearing); the result is an
    ordinary ``MultiDiGraph``."""
    G = nx.MultiDiGraph()
    G.graph = data["graph"]
    nodes, succ, pred = G._node, G._succ, G._pred
    restore = _RESTORE_KEYS.isdisjoint
    c = count()
    for d in data["nodes"]:
        n = d.pop("id") if "id" in d else next(c)
        if not restore(d):
            _restore(d)
        if n in nodes:
            nodes[n].update(d)
        else:
            nodes[n] = d
            succ[n] = {}
            pred[n] = {}
    for i, d in enumerate(data.get("edges", ())):
        u = d.pop("source")
        v = d.pop("target")
        k = d.pop("key", None)
        if not restore(d):
            _restore(d)
        try:
            keydict = succ[u].get(v)
            if keydict is None:
                keydict = succ[u][v] = pred[v][u] = {}
        except KeyError as e:
            raise FormatViolation(f"edge #{i} ({d.get('kind')}): {'source' if e.args[0] == u else 'target'} "
                                  f"{short_repr(e.args[0])} is not a node of the trace") from None
        if type(k) not in (int, str):
            k = len(keydict)
            while k in keydict:
                k += 1
        if k in keydict:
            keydict[k].update(d)
        else:
            keydict[k] = d
    return G


_SHARED = "gradtrace.shared"  # values file metadata: {key: the key whose copy it shares}


def _shared_values(vfile: Path, values: dict) -> dict:
    """The values written once for several keys (a version whose value did not
    change shares its previous version's copy), under each of their other keys."""
    from safetensors import safe_open

    with safe_open(str(vfile), framework="pt") as f:
        meta = f.metadata() or {}
    text = meta.get(_SHARED)
    if not text:
        return {}
    try:
        shared = json.loads(text)
        return {str(k): values[str(src)] for k, src in shared.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"its list of shared values is broken ({type(e).__name__}: {e})") from None


def load_values(path, G: nx.MultiDiGraph | None = None) -> dict:
    """Return the captured values of a trace folder as CPU tensors ({} when none).

    With ``G`` (the folder's graph) each value is checked against it
    (:func:`gradtrace.schema.check_values`). Raises :class:`TraceError` (one line) for
    a corrupt file or a value that does not match the graph."""
    p = Path(path)
    v = (p if p.is_dir() else p.parent) / VALUES_FILE
    if not v.exists():
        return {}
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        values = load_file(str(v))
        values.update(_shared_values(v, values))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise TraceError(f"{v}: corrupt values file ({' '.join(str(e).split())})") from None
    if G is not None:
        try:
            check_values(values, G)
        except FormatViolation as e:
            raise TraceError(f"{v}: {e}") from None
    return values
