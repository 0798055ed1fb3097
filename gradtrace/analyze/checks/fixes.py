"""The user's own line, rewritten: fixes that ``gradtrace check`` writes for the line a
finding names, and the ``# gradtrace: ignore[CODE]`` comments that silence a line.

Rewrites work on the text of one source line; when a line does not have a shape they
know, they return None and the check falls back to a recipe that names the user's
variables.
"""

from __future__ import annotations

import linecache
import re

__all__ = [
    "assigned_name", "detach_instead_of_data", "drop_data", "guarded", "ignored_codes",
    "is_ignored", "optimizer_name", "out_of_place", "statement", "with_clone", "without_data",
]

_NAME = r"[A-Za-z_][\w.]*(?:\[[^\]]*\])?"
_AUG = re.compile(rf"^(?P<target>{_NAME})\s*(?P<op>\*\*|//|<<|>>|[-+*/%@&|^])=\s*(?P<rhs>.+)$")
_METHOD = re.compile(rf"^(?P<target>{_NAME})\.(?P<meth>[a-z][a-z0-9]*(?:_[a-z0-9]+)*)_\((?P<args>.*)\)$")
_SETITEM = re.compile(r"^(?P<base>[A-Za-z_]\w*)\[(?P<index>.+)\]\s*=\s*(?P<rhs>[^=].*)$")
_ASSIGN = re.compile(r"^(?P<lhs>[A-Za-z_][\w, ]*?)\s*=\s*(?P<rhs>[^=].*)$")
_IGNORE = re.compile(r"#\s*gradtrace:\s*ignore(?:\[(?P<codes>[^\]]*)\])?", re.IGNORECASE)


def statement(code) -> str | None:
    """The statement of a source line without its trailing comment, or None."""
    if not code:
        return None
    quote = None
    for i, ch in enumerate(code):
        if quote:
            if ch == quote and code[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            code = code[:i]
            break
    return code.strip() or None


def out_of_place(code) -> str | None:
    """``y = y * 2`` for ``y *= 2`` or ``y.mul_(2)``; ``p = p.clone(); p[i] = v`` for
    ``p[i] = v``. None when the line is not one in-place statement."""
    s = statement(code)
    if s is None:
        return None
    m = _AUG.match(s)
    if m and "[" not in m["target"]:
        t = m["target"]
        return f"{t} = {t} {m['op']} {m['rhs']}"
    m = _METHOD.match(s)
    if m and "[" not in m["target"] and "." not in m["target"]:
        t = m["target"]
        return f"{t} = {t}.{m['meth']}({m['args']})"
    m = _SETITEM.match(s)
    if m:
        return f"{m['base']} = {m['base']}.clone(); {s}"
    return None


def without_data(code) -> str | None:
    """``with torch.no_grad(): nn.init.normal_(w)`` for ``nn.init.normal_(w.data)``:
    the write autograd can see. None when the line has no ``.data``."""
    s = statement(code)
    if s is None or ".data" not in s:
        return None
    return "with torch.no_grad(): " + re.sub(r"\.data\b", "", s)


def detach_instead_of_data(code) -> str | None:
    """The line with ``.data`` replaced by ``.detach()`` (the same constant, said
    explicitly), or None."""
    s = statement(code)
    if s is None or ".data" not in s:
        return None
    return re.sub(r"\.data\b", ".detach()", s)


def drop_data(code) -> str | None:
    """The line with ``.data`` removed (gradients flow), or None."""
    s = statement(code)
    if s is None or ".data" not in s:
        return None
    return re.sub(r"\.data\b", "", s)


def with_clone(code) -> str | None:
    """``z = x.to(d).clone()`` for ``z = x.to(d)``, or None."""
    s = statement(code)
    m = _ASSIGN.match(s) if s else None
    if not m or "," in m["lhs"]:
        return None
    return f"{m['lhs'].strip()} = {m['rhs'].strip()}.clone()"


def assigned_name(code) -> str | None:
    """The variable a line assigns (``y`` for ``y = ...``), or None."""
    s = statement(code)
    m = _ASSIGN.match(s) if s else None
    if not m or "," in m["lhs"] or not m["lhs"].strip().isidentifier():
        return None
    return m["lhs"].strip()


_GUARDS = {"torch.log": "{x}.clamp_min(1e-12)", "Tensor.log": "{x}.clamp_min(1e-12)",
           "torch.sqrt": "{x}.clamp_min(1e-12)", "Tensor.sqrt": "{x}.clamp_min(1e-12)",
           "torch.rsqrt": "{x}.clamp_min(1e-12)"}


def guarded(code, op_name) -> str | None:
    """The line with the argument of ``log``/``sqrt`` clamped away from 0, or None."""
    s = statement(code)
    pattern = _GUARDS.get(op_name)
    if s is None or pattern is None:
        return None
    fn = op_name.split(".")[-1]
    m = re.search(rf"\b(torch\.{fn})\(([^()]*(?:\([^()]*\))*[^()]*)\)", s)
    if not m or "," in m[2]:
        return None
    return s[:m.start()] + f"{m[1]}({pattern.format(x=_paren(m[2].strip()))})" + s[m.end():]


def _paren(x):
    return x if re.fullmatch(r"[\w.]+(\([^()]*\))?", x) else f"({x})"


def ignored_codes(file, line):
    """The codes a ``# gradtrace: ignore[...]`` comment on that line silences: a set of
    codes, ``{"*"}`` for a bare ``# gradtrace: ignore``, or an empty set."""
    if not file or not line:
        return set()
    text = linecache.getline(file, line)
    m = _IGNORE.search(text) if text else None
    if not m:
        return set()
    if m["codes"] is None:
        return {"*"}
    return {c.strip().upper() for c in m["codes"].split(",") if c.strip()}


def is_ignored(code, file, line) -> bool:
    """True when the source line silences ``code`` (or every code)."""
    got = ignored_codes(file, line)
    return "*" in got or any(code.startswith(c) for c in got)


def optimizer_name(code) -> str | None:
    """``opt`` for a line ``opt.step()`` (or ``scaler.step(opt)``), or None."""
    s = statement(code)
    if not s:
        return None
    m = re.search(r"\b\w+\.step\(\s*([A-Za-z_]\w*)\s*\)", s) or re.search(r"\b([A-Za-z_]\w*)\.step\(\s*\)", s)
    return m[1] if m else None
