"""The head of ``trace.json``: the graph attributes (with the run's ``summary`` and its
``steps``), read without the nodes and edges.

gradtrace writes the graph object first (``{"directed":true,"multigraph":true,"graph":{...},
"nodes":[...``), so a reader that wants what a run was and its headline figures
(``gradtrace show``) parses a few kilobytes of a file that may hold hundreds of
megabytes. Nothing here unpickles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .io import TRACE_FILE, TraceError, check_path, trace_path
from .schema import FORMAT, FormatViolation, check_graph_attrs, restore_head_floats, short_repr

__all__ = ["read_head"]

_PREFIX = b'{"directed":true,"multigraph":true,"graph":'
_AFTER = ',"nodes":['
_END = b"]}"
_FIRST_READ = 1 << 16


def read_head(path) -> dict | None:
    """Return the graph attributes of a trace folder (or its ``trace.json``), checked
    against the format, reading only the start and the end of the file; None when the
    file is not laid out as gradtrace writes it (another writer's JSON, a file cut
    short), which only reading the whole trace can judge (:func:`gradtrace.graph.io.load_graph`).

    Raises :class:`TraceError` (one line) for a path that names no trace, a trace of
    another format version, or graph attributes the format does not allow."""
    check_path(path)
    p = trace_path(path)
    if not p.is_file():
        raise TraceError(f"{path}: not a gradtrace trace (no {TRACE_FILE} in it)")
    try:
        graph = _parse_head(p)
    except OSError as e:
        raise TraceError(f"{p}: cannot be read ({e.strerror or e})") from None
    if graph is None:
        return None
    fmt = graph.get("format")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("gradtrace/"):
            raise TraceError(f"{p}: trace format {fmt} is not supported (this gradtrace reads {FORMAT})")
        raise TraceError(f"{p}: not a gradtrace trace (format is {short_repr(fmt)}, expected {FORMAT!r})")
    try:
        check_graph_attrs(graph)
    except FormatViolation as e:
        raise TraceError(f"{p}: malformed trace: {e}") from None
    restore_head_floats(graph)
    return graph


def _parse_head(p: Path):
    """The graph object at the head of ``p``, or None when the file does not start and
    end as gradtrace writes it."""
    with open(p, "rb") as f:
        if not _ends_whole(f) or f.read(len(_PREFIX)) != _PREFIX:
            return None
        buf, size = b"", _FIRST_READ
        while True:
            chunk = f.read(size)
            buf += chunk
            found = _decode(buf)
            if found is not None:
                return found
            if not chunk:
                return None
            size *= 2  # a big head (a long traceback, many values not saved): fewer, larger reads


def _decode(buf: bytes):
    """The graph object at the start of ``buf`` when ``buf`` holds all of it and the
    nodes follow it; else None (more must be read, or the file is not gradtrace's)."""
    try:
        text = _text(buf)
        graph, end = json.JSONDecoder().raw_decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if type(graph) is not dict or not text.startswith(_AFTER, end):
        return None
    return graph


def _text(buf: bytes) -> str:
    """``buf`` as text, less a character the read cut in two at its end."""
    try:
        return buf.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(buf) - 3:
            raise
        return buf[:e.start].decode("utf-8")


def _ends_whole(f) -> bool:
    """Whether the file ends as a written trace does: a file cut short (a full disk, a
    killed copy) is left to the whole read, which names what is wrong."""
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - 16))
    whole = f.read().rstrip().endswith(_END)
    f.seek(0)
    return whole
