"""``gradtrace check``: the aliasing, in-place and autograd mistakes PyTorch users hit
most, found by graph queries over a trace (the user's code is never rerun).

>>> findings = gradtrace.check(tr)            # a Trace, a graph, or a trace folder
>>> for f in findings: print(format_finding(f))

Each check is a small function registered in :data:`CHECKS` with a stable code, one
module per family: ``saved`` (GT101-GT102), ``memory`` (GT103-GT105, GT109, GT111),
``gradients`` (GT106-GT108, GT112), ``values`` (GT110), ``checkpointing`` (GT113).
``graph`` indexes the trace once
for all of them.
"""

from __future__ import annotations

import gc
import os

from ...graph.io import load_graph
from . import checkpointing, gradients, memory, saved, values  # noqa: F401  (each registers its checks)
from . import fixes as fx
from .findings import CHECKS, SEVERITIES, SEVERITY_RANK, WRITES, Check, Finding
from .graph import Query

# Registration follows import order; the codes' own order is the stable one.
_ordered = dict(sorted(CHECKS.items()))
CHECKS.clear()
CHECKS.update(_ordered)

__all__ = ["CHECKS", "SEVERITIES", "WRITES", "Check", "Finding", "check", "check_graph", "finding_codes",
           "finding_nodes", "format_finding"]

# -- API ------------------------------------------------------------------------------


def _codes(spec):
    """Expand 'GT101,GT102' / ['GT101', 'GT11'] (prefixes allowed) into known codes."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = [spec]
    out = set()
    for item in spec:
        for c in str(item).split(","):
            c = c.strip().upper()
            if not c:
                continue
            hits = [k for k in CHECKS if k.startswith(c)]
            if not hits:
                raise ValueError(f"unknown check code {c!r} (known: {', '.join(CHECKS)})")
            out.update(hits)
    return out


def _order(q, f):
    seqs = [q.seq(o["node"]) for o in f.ops if o.get("node") in q.N]
    return (SEVERITY_RANK.get(f.severity, 3), min(seqs) if seqs else 1 << 60, f.code)


def check_graph(G, select=None, ignore=None, suppress=True) -> list:
    """Run the checks on a trace graph; return findings, errors first, then in op order.
    ``select``/``ignore``: codes (or prefixes), as a list or a comma-separated string.
    The same finding on the same lines (a loop) is reported once with ``count``. A finding
    whose line carries ``# gradtrace: ignore[CODE]`` (or a bare ``# gradtrace: ignore``)
    is left out unless ``suppress`` is false."""
    sel, ign = _codes(select), _codes(ignore) or set()
    # The indexes are millions of small containers with no cycles: a cyclic collection
    # pass over them would take longer than the checks.
    was = gc.isenabled()
    gc.disable()
    try:
        return _run(G, sel, ign, suppress)
    finally:
        if was:
            gc.enable()


def _run(G, sel, ign, suppress):
    q = Query(G)
    found, index = [], {}
    for code, c in CHECKS.items():
        if (sel is not None and code not in sel) or code in ign:
            continue
        for f in c.func(q):
            if suppress and fx.is_ignored(f.code, f.file, f.line):
                continue
            key = (f.code, f.severity, tuple((o.get("file"), o.get("line"), o.get("role")) for o in f.ops))
            if key in index and f.ops:
                index[key].count += 1
                continue
            index[key] = f
            found.append(f)
    # An info on a line that already has a warning or error of the same code adds nothing
    # the user must act on: the line is being fixed anyway.
    serious = {(f.code, f.file, f.line) for f in found if f.severity != "info"}
    found = [f for f in found if f.severity != "info" or (f.code, f.file, f.line) not in serious]
    found.sort(key=lambda f: _order(q, f))
    return found


def check(trace_or_graph, select=None, ignore=None, suppress=True) -> list:
    """Return the findings of a :class:`gradtrace.Trace`, a trace graph, or a saved
    trace folder (a path); ``suppress=False`` keeps findings on lines that carry a
    ``# gradtrace: ignore`` comment."""
    if isinstance(trace_or_graph, (str, os.PathLike)):
        G = load_graph(trace_or_graph)
    elif hasattr(trace_or_graph, "graph") and not hasattr(trace_or_graph, "nodes"):
        G = trace_or_graph.graph
    else:
        G = trace_or_graph
    return check_graph(G, select=select, ignore=ignore, suppress=suppress)


def finding_codes(G, findings=None) -> dict:
    """Return ``{node: [codes]}``: for every node a finding involves, the codes of the
    findings that involve it, sorted (what a picture writes on an outlined node)."""
    if findings is None:
        findings = check_graph(G)
    codes = {}
    for f in findings:
        for n in f.nodes:
            codes.setdefault(n, set()).add(f.code)
    return {n: sorted(c) for n, c in codes.items()}


def finding_nodes(G, findings=None) -> set:
    """Every node involved in a finding (for highlighting in the DOT view)."""
    if findings is None:
        findings = check_graph(G)
    return {n for f in findings for n in f.nodes}


def _short(path):
    if not path:
        return "?"
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path
    except ValueError:
        return path


def format_finding(f: Finding, explain: bool = False) -> str:
    """A few lines: ``file:line: GT101 error: message``, the ops, the tensors, the fix."""
    head = f"{_short(f.file)}:{f.line or '?'}: " if f.file else ""
    times = f" (x{f.count})" if f.count > 1 else ""
    lines = [f"{head}{f.code} {f.severity}: {f.message}{times}"]
    for o in f.ops:
        where = f"{_short(o.get('file'))}:{o.get('line')}" if o.get("file") else "?"
        role = f"{o['role']}: " if o.get("role") else ""
        code = f"  | {o['code']}" if o.get("code") else ""
        lines.append(f"    {role}{o.get('name')} at {where}{code}")
    if f.tensors:
        ts = ", ".join((t.get("name") or t.get("label") or "an unnamed tensor") + (f" ({t['role']})" if t.get("role") else "")
                       for t in f.tensors)
        lines.append(f"    tensors: {ts}")
    if explain and f.explanation:
        lines.append(f"    why: {f.explanation}")
    if f.fix:
        lines.append(f"    fix: {f.fix}")
    return "\n".join(lines)

