"""Which drawn element each op belongs to: itself, a collapsed module, a run of
repeated blocks (``12 × GPTBlock``) or one node for a line of library work.

Module depth counts the modules a person thinks of as levels: containers
(``Sequential``, ``ModuleList``, ``ModuleDict``) add no level, so at the default depth a
2-layer ``nn.TransformerEncoder`` shows its two layers."""

from __future__ import annotations

import re

__all__ = [
    "CONTAINERS", "FOLD_AT_LEAST", "collapsed_at", "element_of", "has_children", "level", "mod_type", "outermost",
    "prefixes", "relative", "repeated_calls", "repeated_lines", "repeated_runs", "runs_among", "user_path",
]

CONTAINERS = {"Sequential", "ModuleList", "ModuleDict"}
FOLD_AT_LEAST = 3  # runs of two stay drawn: a 2-layer encoder shows both layers


def mod_type(G, path) -> str:
    """Return the type of module ``path`` (``Conv2d``), or ``module`` when unknown."""
    return (G.nodes.get(f"mod:{path}") or {}).get("type") or "module"


def user_path(G, path: str) -> str:
    """Module ``path`` as the user knows it: the root by the variable it was called
    through (``model.conv1`` rather than ``SmallCNN.conv1``)."""
    root, _, rest = path.partition(".")
    var = (G.nodes.get(f"mod:{root}") or {}).get("var")
    return (var + ("." + rest if rest else "")) if var else path


def prefixes(path: str) -> list[str]:
    """Return the paths from the root down to module ``path`` (``a``, ``a.b``, ``a.b.c``)."""
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def level(G, path: str) -> int:
    """How many levels deep module ``path`` is (the root is 1; containers add none)."""
    ps = prefixes(path)
    return 1 + sum(1 for p in ps[1:] if mod_type(G, p) not in CONTAINERS)


def has_children(G, path: str) -> bool:
    """Return whether module ``path`` has submodules."""
    return any(k == "parent" for _, _, k in G.out_edges(f"mod:{path}", data="kind")) if f"mod:{path}" in G else False


def collapsed_at(G, path: str, depth: int):
    """The module an op of module ``path`` collapses into at ``depth``, or None when
    the op is drawn on its own: its module is less than ``depth`` levels deep, or
    exactly ``depth`` and a leaf (a ``Conv2d`` shows its op; a block at that level is
    one box, its own ops included)."""
    for p in prefixes(path):
        if level(G, p) >= depth and mod_type(G, p) not in CONTAINERS:
            return p if (p != path or has_children(G, p)) else None
    return None


_INDEX = re.compile(r"^(.*)\.(\d+)$")


def repeated_runs(G, collapsed: set) -> dict:
    """Return {collapsed module path: run key} for runs of at least FOLD_AT_LEAST
    numbered siblings of one type (``blocks.0`` ... ``blocks.11``); the run key is
    ``run:PARENT:TYPE:FIRST:LAST``."""
    groups: dict = {}
    for p in collapsed:
        m = _INDEX.match(p)
        if m:
            groups.setdefault((m.group(1), mod_type(G, p)), []).append(int(m.group(2)))
    out = {}
    for (parent, typ), idx in groups.items():
        idx.sort()
        run = [idx[0]]
        for i in idx[1:] + [None]:
            if i is not None and i == run[-1] + 1:
                run.append(i)
                continue
            if len(run) >= FOLD_AT_LEAST:
                key = f"run:{parent}:{typ}:{run[0]}:{run[-1]}"
                for j in run:
                    out[f"{parent}.{j}"] = key
            if i is not None:
                run = [i]
    return out


def relative(name: str, module: str | None) -> str:
    """``name`` (a dotted path) shortened relative to ``module``: a parameter of the
    op's own module shows as ``weight``, a sibling's as ``fc.weight``."""
    if not name:
        return "?"
    if module:
        if name.startswith(module + "."):
            return name[len(module) + 1:]
        parent = module.rsplit(".", 1)[0]
        if "." in module and name.startswith(parent + "."):
            return name[len(parent) + 1:]
    return name.split(".", 1)[1] if "." in name and module else name


def runs_among(G, modules) -> dict:
    """{module path: run key} for every numbered module, at any depth above the
    modules in ``modules``, that is part of a run of repeated blocks."""
    paths = {p for m in modules if m for p in prefixes(m)}
    return repeated_runs(G, paths)


def element_of(G, mod: str | None, depth: int, runs: dict):
    """The folded element an op of module ``mod`` is drawn in: a run key
    (``run:...``), ``mod:PATH`` of the module it collapses into, or None when it is
    drawn on its own."""
    if not mod:
        return None
    for p in prefixes(mod):
        if p in runs:
            return runs[p]
    top = collapsed_at(G, mod, depth)
    return f"mod:{top}" if top else None


def repeated_calls(modules) -> dict:
    """``{module path: calls}`` for the modules called at least ``FOLD_AT_LEAST`` times
    in ``modules`` (the module of each op, in call order; None outside any): a call is
    a run of consecutive ops inside the module."""
    calls: dict = {}
    inside: tuple = ()
    for m in modules:
        now = tuple(prefixes(m)) if m else ()
        for p in now:
            if p not in inside:
                calls[p] = calls.get(p, 0) + 1
        inside = now
    return {p: c for p, c in calls.items() if c >= FOLD_AT_LEAST}


def outermost(mod, calls: dict):
    """The outermost module of ``mod``'s path in ``calls``, or None."""
    if not mod or not calls:
        return None
    for p in prefixes(mod):
        if p in calls:
            return p
    return None


def repeated_lines(ops) -> dict:
    """``{(file, line): times}`` for the user's lines outside modules that ran at least
    ``FOLD_AT_LEAST`` times in ``ops`` (op attribute dicts in call order): a run of the
    line is a stretch of consecutive ops on it."""
    runs: dict = {}
    prev = None
    for d in ops:
        key = (d.get("file"), d["line"]) if d.get("line") and not d.get("module") else None
        if key is not None and key != prev:
            runs[key] = runs.get(key, 0) + 1
        prev = key
    return {k: c for k, c in runs.items() if c >= FOLD_AT_LEAST}
