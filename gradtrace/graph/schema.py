"""The trace format (docs/trace-format.md) as data, and the one check of a trace against it.

``check_data`` runs once, on load, over the parsed ``trace.json`` (before any graph is
built), and ``check_values`` over the captured values; after them every consumer may
index what the format promises (``d["name"]`` of an op, ``stats["norm"]``, ...) without
guarding against the wrong type. Both raise :class:`FormatViolation` with a one-line
message naming the node, edge or attribute that is wrong.

The format is extensible: attributes and kinds not named here are accepted with any
JSON value; the attributes named here must have the types given, when present.
"""

from __future__ import annotations

__all__ = [
    "EDGE_ATTRS", "EDGE_REFS", "FORMAT", "FormatViolation", "GRAPH_ATTRS", "NODE_ATTRS", "NODE_REQUIRED",
    "STEP_ROW", "SUMMARY_ATTRS", "check_data", "check_graph_attrs", "check_refs", "check_values", "restore_head_floats", "short_repr", "value_refs",
]

FORMAT = "gradtrace/1"  # the version of the trace format a trace declares

_NONE = type(None)
S = frozenset((str,))
I = frozenset((int,))  # noqa: E741
B = frozenset((bool,))
L = frozenset((list,))
D = frozenset((dict,))


def _opt(*ts) -> frozenset:
    return frozenset().union(*ts) | {_NONE}


SN, IN, BN, LN, DN = _opt(S), _opt(I), _opt(B), _opt(L), _opt(D)

# Statistics (``stats``, ``prior``, collective ``local``/``reduced``): floats that JSON
# cannot hold are written as "nan", "inf", "-inf".
_STAT_FLOATS = ("min", "max", "mean", "norm")
_STAT_COUNTS = ("nan", "inf")
_FLOAT_WORDS = frozenset(("nan", "inf", "-inf"))

GRAPH_ATTRS = {
    "format": S, "torch_version": SN, "python_version": SN, "gradtrace_version": SN,
    "script": SN, "argv": LN, "target": SN, "rank": IN, "world_size": IN,
    "math": DN, "math_start": DN, "status": SN, "error": DN, "values": SN,
    "grad_reads": LN, "unknown": LN, "recorder_errors": LN, "replay": DN,
    "values_not_saved": DN, "summary": DN, "steps": LN, "interrupted": SN, "stopped_at": DN,
    "steps_window": LN, "first_step": IN, "steps_seen": IN, "last": IN, "earlier_steps": LN,
}
# What the list-valued graph attributes hold.
_GRAPH_LIST_ITEMS = {"grad_reads": D, "unknown": D, "recorder_errors": S}

# Per node kind: the attribute types (``_DIMS``/``_STATS`` are checked element by element).
_DIMS = "dims"
_STATS = "stats"
_RECEIVED = "received"
_UPDATE = "update"
NODE_ATTRS = {
    "op": {"name": S, "seq": I, "category": SN, "file": SN, "line": IN, "code": SN, "module": SN,
           "grad_enabled": BN, "args": SN, "phase": SN, "during": SN, "backward": SN, "random": BN,
           "inference": BN, "direct": BN, "autocast": DN, "time_ns": IN, "device_time_ns": IN},
    "tensor": {"tid": I, "version": I, "shape": _DIMS, "dtype": SN, "device": SN, "stride": _DIMS,
               "storage": SN, "storage_offset": IN, "requires_grad": BN, "is_leaf": BN, "grad_fn": SN,
               "label": SN, "label_n": IN, "stats": _STATS, "param_of": SN, "param_kind": SN, "update": _UPDATE},
    "storage": {"device": SN, "nbytes": IN, "origin": SN},
    "numpy": {"shape": _DIMS, "dtype": SN},
    "grad_fn": {"name": S, "op": SN, "saved": SN, "saved_storages": LN, "saved_untracked_bytes": IN,
                "saved_hook": SN},
    "backward": {"seq": I, "api": S, "implicit": BN, "op": SN},
    "optimizer_step": {"seq": I, "optimizer": IN, "type": SN, "lr": LN},
    "loss_scale": {"seq": I, "scale": _opt(frozenset((int, float))), "skipped": BN,
                   "new_scale": _opt(frozenset((int, float)))},
    "module": {"path": S, "type": SN, "var": SN},
    "collective": {"op": SN, "bucket": IN, "numel": IN, "params": LN, "world_size": IN, "dtype": SN,
                   "rank": IN, "hook": SN, "during": SN, "local": _STATS, "reduced": _STATS},
}
# What consumers index without a default: a node of that kind must have it.
NODE_REQUIRED = {"op": ("name", "seq"), "tensor": ("tid", "version"), "grad_fn": ("name",),
                 "backward": ("api", "seq"), "module": ("path",), "optimizer_step": ("seq",),
                 "loss_scale": ("seq",)}

EDGE_ATTRS = {
    "input": {"pos": _opt(I, S)},
    "output": {"pos": _opt(I, S)},
    "next_version": {"op": SN, "visible": BN, "external": BN, "seen_at": SN, "metadata_only": BN, "data_set": BN},
    "view_of": {"alias": SN},
    "moved_to": {"src_device": SN, "dst_device": SN, "src_dtype": SN, "dst_dtype": SN, "copy": BN, "op": SN,
                 "autocast": BN},
    "saves": {"via": SN},
    "next": {"input_nr": IN},
    "weights": {"gradient": SN, "received": _RECEIVED, "gradient_value": SN},
    "grad": {"stats": _STATS, "value": SN},
    "leaf_grad": {"stats": _STATS, "value": SN, "prior": _STATS, "accumulated": BN},
}
_EDGE_REQUIRED = {None: ("source", "target"), **{k: ("source", "target") for k in EDGE_ATTRS}}
# Edge attributes that name a node, which consumers look up in the graph.
EDGE_REFS = {"next_version": ("op",), "moved_to": ("op",), "weights": ("gradient",)}


class FormatViolation(ValueError):
    """A trace that does not follow the format; the message is one line."""


def short_repr(x, n=60) -> str:
    """``repr(x)`` cut to ``n`` characters (what an error message quotes of bad input)."""
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


def _jtype(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", _NONE: "null"}.get(type(v), type(v).__name__)


def _want(types) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object",
             float: "a number", _NONE: "null"}
    return " or ".join(names[t] for t in sorted(types, key=lambda t: t is _NONE))


def _dims_error(v):
    if v is None:
        return None
    if type(v) is not list:
        return f"is {_jtype(v)}, not a list of integers"
    for x in v:
        if type(x) is not int:
            return f"holds {short_repr(x)}, not an integer"
    return None


def _stats_error(v):
    if v is None:
        return None
    if type(v) is not dict:
        return f"is {_jtype(v)}, not an object of statistics"
    for k in _STAT_FLOATS:
        x = v.get(k)
        t = type(x)
        if not (t is float or t is int or x is None or (t is str and x in _FLOAT_WORDS)):
            return f"{k} is {short_repr(x)}, not a number"
    for k in _STAT_COUNTS:
        x = v.get(k)
        if not (type(x) is int or x is None):
            return f"{k} is {short_repr(x)}, not a count"
    return None


def _received_error(v):
    if v is None:
        return None
    if type(v) is not dict:
        return f"is {_jtype(v)}, not an object"
    return (_stats_error(v.get("stats")) or _dims_error(v.get("shape"))
            or (None if type(v.get("value")) in SN else "value is not a string"))


def _update_error(v):
    if v is None:
        return None
    if type(v) is not dict:
        return f"is {_jtype(v)}, not an object"
    return _stats_error(v.get("stats")) or (None if type(v.get("from")) in SN else "from is not a string")


_DEEP = {_DIMS: _dims_error, _STATS: _stats_error, _RECEIVED: _received_error, _UPDATE: _update_error}

_ANY = None  # a field whose value is printed as text whatever it is
_NUMBER = "number"  # a float, an integer, null, or a word for a float JSON cannot hold
_ID = frozenset((str, int))

# Graph attribute ``summary``: the headline figures of the trace, written at the head of
# trace.json so that they can be read without the rest (gradtrace.analyze.summary's dict).
# A frozenset is the types a value may have, a list [spec] a list of such items, a tuple
# ("map", spec) an object with any keys, ("optional", spec) a key an object may lack,
# ("or null", spec) null or what spec says, a dict an object with those keys.
SUMMARY_ATTRS = {
    "status": SN, "ops": I, "categories": ("map", I), "tensors": I, "tensor_versions": I, "storages": I,
    "views": I, "aliases": I, "writes": I, "hidden_writes": I,
    "moves": [{"src": S, "dst": S, "copy": BN, "file": SN, "line": IN}],
    "backward": [{"id": _ID, "api": S, "error": _ANY, "grads": I, "grad_norm": ("optional", _NUMBER),
                  "roots": [{"root": _ID, "label": SN, "shape": _DIMS, "w": S, "value": ("optional", _NUMBER)}]}],
    "unknown": I, "unknown_reasons": [S],
    "top_lines": [{"file": SN, "line": I, "ops": I, "code": SN}],
    "scaler": ("optional", {"updates": I, "skipped": I, "first_scale": _NUMBER, "last_scale": _NUMBER}),
}
# Graph attribute ``steps``: a row per step of a training run (gradtrace.analyze.step_rows),
# also at the head of trace.json.
STEP_ROW = {
    "step": I, "ops": I, "first_seq": I, "last_seq": I, "backward": [_ID], "losses": [_NUMBER],
    "grad_norm": _NUMBER, "max_grad": ("or null", {"tensor": SN, "norm": _NUMBER}),
    "max_change": ("or null", {"tensor": SN, "ratio": _NUMBER}),
    "max_update": ("optional", ("or null", {"tensor": SN, "ratio": _NUMBER, "norm": _NUMBER})),
    "lr": ("optional", [_NUMBER]),
    "scaler": ("optional", {"scale": _NUMBER, "skipped": BN}), "nan": I, "inf": I,
}
_HEAD_SPECS = {"summary": SUMMARY_ATTRS, "steps": [STEP_ROW], "earlier_steps": [STEP_ROW]}


def _spec_error(v, spec, where: str):
    """Where ``v`` departs from ``spec`` (see :data:`SUMMARY_ATTRS`), as text, or None."""
    if spec is _ANY:
        return None
    if spec == _DIMS:
        err = _dims_error(v)
        return f"{where} {err}" if err else None
    if spec == _NUMBER:
        t = type(v)
        ok = t is float or t is int or v is None or (t is str and v in _FLOAT_WORDS)
        return None if ok else f"{where} is {_jtype(v)} ({short_repr(v)}), expected a number"
    if isinstance(spec, frozenset):
        return None if type(v) in spec else f"{where} is {_jtype(v)} ({short_repr(v)}), expected {_want(spec)}"
    if isinstance(spec, list):
        if type(v) is not list:
            return f"{where} is {_jtype(v)}, expected a list"
        return next((e for i, x in enumerate(v) if (e := _spec_error(x, spec[0], f"{where}[{i}]"))), None)
    if isinstance(spec, tuple) and spec[0] == "or null":
        return None if v is None else _spec_error(v, spec[1], where)
    if type(v) is not dict:
        return f"{where} is {_jtype(v)}, expected an object"
    if isinstance(spec, tuple):
        return next((e for k, x in v.items() if (e := _spec_error(x, spec[1], f"{where}.{k}"))), None)
    for k, s in spec.items():
        if isinstance(s, tuple) and s[0] == "optional":
            if k not in v:
                continue
            s = s[1]
        elif k not in v:
            return f"{where}.{k} is missing"
        err = _spec_error(v[k], s, f"{where}.{k}")
        if err:
            return err
    return None


_NODE_COMMON = {"id": _ID}
_EDGE_COMMON = {"source": _ID, "target": _ID}


def _split(attrs: dict, common: dict):
    """(flat types by attribute, [(attribute, element checker)])."""
    flat = {**common, **{k: t for k, t in attrs.items() if isinstance(t, frozenset)}}
    deep = [(k, _DEEP[t]) for k, t in attrs.items() if not isinstance(t, frozenset)]
    return flat, deep


_NODE_SPECS = {k: _split(a, _NODE_COMMON) for k, a in NODE_ATTRS.items()}
_EDGE_SPECS = {k: _split(a, _EDGE_COMMON) for k, a in EDGE_ATTRS.items()}
_NODE_OTHER = (_NODE_COMMON, [])
_EDGE_OTHER = (_EDGE_COMMON, [])


def _check_item(d: dict, flat: dict, what: str):
    for k, v in d.items():
        t = flat.get(k)
        if t is not None and type(v) not in t:
            raise FormatViolation(f"{what}: attribute {k!r} is {_jtype(v)} ({short_repr(v)}), expected {_want(t)}")


def _check_items(items, specs, other, what: str, required: dict, refs=None):
    """Check a list of nodes or edges; for edges, append to ``refs`` the
    ``(edge #, kind, attribute, node id)`` of each attribute that names a node."""
    if type(items) is not list:
        raise FormatViolation(f"{what}s is {_jtype(items)}, expected a list")
    ok_sigs = set()  # (kind, keys, value types) already found flat-valid
    for i, d in enumerate(items):
        if type(d) is not dict:
            raise FormatViolation(f"{what} #{i} is {_jtype(d)}, expected an object")
        kind = d.get("kind")
        if type(kind) is not str:
            raise FormatViolation(f"{_item_name(d, i, what)}: 'kind' is {_jtype(kind)}, expected a string")
        flat, deep = specs.get(kind, other)
        sig = (kind, *d, *map(type, d.values()))
        if sig not in ok_sigs:
            name = _item_name(d, i, what)
            _check_item(d, flat, name)
            for k in required.get(kind, required.get(None, ())):
                if k not in d:
                    raise FormatViolation(f"{name}: attribute {k!r} is missing (a {kind} must have it)")
            ok_sigs.add(sig)
        for k, check in deep:
            v = d.get(k)
            if v is not None:
                err = check(v)
                if err:
                    raise FormatViolation(f"{_item_name(d, i, what)}: {k} {err}")
        if refs is not None:
            for k in EDGE_REFS.get(kind, ()):
                n = d.get(k)
                if n is not None:
                    refs.append((i, kind, k, n))


def _item_name(d, i, what) -> str:
    if type(d.get("id")) is str:
        return f"node {short_repr(d['id'], 40)}"
    return f"{what} #{i} ({short_repr(d.get('kind'), 30)})"


def check_refs(refs: list, nodes) -> None:
    """Check that each ``(edge #, kind, attribute, node id)`` of :func:`check_data`
    names a node in ``nodes`` (a container of node ids); raise :class:`FormatViolation`."""
    for i, kind, k, n in refs:
        if type(n) not in _ID or n not in nodes:
            raise FormatViolation(f"edge #{i} ({kind}): {k} {short_repr(n)} is not a node of the trace")


def check_graph_attrs(graph) -> None:
    """Check the graph attributes (``G.graph``) of a trace against the format; return
    None, or raise :class:`FormatViolation` (one line) at the first thing wrong."""
    if type(graph) is not dict:
        raise FormatViolation(f"'graph' is {_jtype(graph)}, expected an object")
    for k, v in graph.items():
        t = GRAPH_ATTRS.get(k)
        if t is not None and type(v) not in t:
            raise FormatViolation(f"graph attribute {k!r} is {_jtype(v)} ({short_repr(v)}), expected {_want(t)}")
    vns = graph.get("values_not_saved")
    if vns and not all(type(v) is str for v in vns.values()):
        raise FormatViolation("graph attribute 'values_not_saved' must map value keys to reasons (strings)")
    for k, t in _GRAPH_LIST_ITEMS.items():
        for x in graph.get(k) or ():
            if type(x) not in t:
                raise FormatViolation(f"graph attribute {k!r} holds {_jtype(x)} ({short_repr(x)}), expected {_want(t)}")
    err = graph.get("error")
    for k in ("type", "message", "traceback"):
        if err and type(err.get(k)) not in SN:
            raise FormatViolation(f"graph attribute 'error': {k} is {_jtype(err.get(k))}, expected a string")
    for k, spec in _HEAD_SPECS.items():
        err = graph.get(k) is not None and _spec_error(graph[k], spec, k)
        if err:
            raise FormatViolation(f"graph attribute {err}")


def restore_head_floats(graph: dict) -> None:
    """Turn the words JSON holds NaN and Inf as (``"nan"``, ``"inf"``, ``"-inf"``) back into
    floats where the head's ``summary`` and ``steps`` (checked) hold numbers."""
    for k, spec in _HEAD_SPECS.items():
        if graph.get(k) is not None:
            graph[k] = _floats(graph[k], spec)


def _floats(v, spec):
    if spec == _NUMBER:
        return float(v) if type(v) is str else v
    if v is None or spec is _ANY or isinstance(spec, frozenset) or spec == _DIMS:
        return v
    if isinstance(spec, list):
        return [_floats(x, spec[0]) for x in v]
    if isinstance(spec, tuple):
        if spec[0] == "map":
            return {k: _floats(x, spec[1]) for k, x in v.items()}
        return _floats(v, spec[1])
    return {k: _floats(x, spec[k]) if k in spec else x for k, x in v.items()}


def check_data(data) -> list:
    """Check parsed ``trace.json`` data (node-link JSON) against the format, all but
    which nodes the edges name (the graph's construction finds those).

    Returns the node references to check once the nodes are known (see
    :func:`check_refs`); raises :class:`FormatViolation` (one line) at the first thing
    wrong."""
    if type(data) is not dict:
        raise FormatViolation(f"the file holds {_jtype(data)}, expected an object")
    check_graph_attrs(data.get("graph"))
    for k in ("directed", "multigraph"):
        if data.get(k, True) is not True:
            raise FormatViolation(f"{k!r} is {short_repr(data.get(k))}: a trace is a directed multigraph")
    edges = data.get("edges", [])
    refs = []
    _check_items(data.get("nodes"), _NODE_SPECS, _NODE_OTHER, "node", NODE_REQUIRED)
    _check_items(edges, _EDGE_SPECS, _EDGE_OTHER, "edge", _EDGE_REQUIRED, refs)
    return refs


def value_refs(G) -> dict:
    """``{value key: (shape or None, dtype or None, where)}``: what each key of
    ``values.safetensors`` may name in graph ``G``: a tensor node, or the ``value`` of a
    gradient edge (shaped as the tensor it reaches) or of a root's ``received``."""
    refs = {}
    nodes = G._node
    for n, d in nodes.items():
        if d.get("kind") == "tensor":
            refs[n] = (d.get("shape"), d.get("dtype"), f"its tensor node {n}")
    for u, v, d in G.edges(data=True):
        k = d.get("value")
        if k is not None:
            refs[k] = (nodes[v].get("shape"), None, f"the tensor {v} its {d.get('kind')} edge reaches")
        rec = d.get("received")
        if rec and rec.get("value") is not None:
            refs[rec["value"]] = (rec.get("shape"), rec.get("dtype"), f"what the root {v} received")
    return refs


def check_values(values: dict, G) -> None:
    """Check captured values against graph ``G``: every key names a tensor node or a
    gradient edge of ``G``, with the shape (and dtype, where recorded) it has there.

    Returns None; raises :class:`FormatViolation` (one line) at the first mismatch."""
    if not values:
        return
    refs = value_refs(G)
    for key, t in values.items():
        ref = refs.get(key)
        if ref is None:
            raise FormatViolation(f"value {short_repr(key)} matches no tensor node or gradient edge of the trace")
        shape, dtype, where = ref
        if shape is not None and list(t.shape) != shape:
            raise FormatViolation(f"value {short_repr(key)} has shape {list(t.shape)}, but {where} has shape {shape}")
        got = str(t.dtype).replace("torch.", "")
        if dtype is not None and got != dtype:
            raise FormatViolation(f"value {short_repr(key)} has dtype {got}, but {where} has dtype {dtype}")
