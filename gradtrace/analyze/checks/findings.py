"""What a finding is, the registry of checks, and the pieces every check uses to build
one: references to the user's ops and tensors, their statements, their names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import fixes as fx

__all__ = [
    "CHECKS", "Check", "Finding", "SEVERITIES", "SEVERITY_RANK", "WRITES", "code_of", "finding",
    "has_bad", "names_of", "register", "statement_of", "stats_text",
]

SEVERITIES = ("error", "warning", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
WRITES = ("inplace", "setitem", "out")  # op categories that write into an existing tensor


@dataclass
class Finding:
    """One mistake found in a trace."""

    code: str
    severity: str  # "error" | "warning" | "info"
    message: str  # one line
    ops: list = field(default_factory=list)  # {node, name, file, line, code, role}
    tensors: list = field(default_factory=list)  # {node, label, shape, role}
    explanation: str = ""
    fix: str = ""
    nodes: list = field(default_factory=list)  # every graph node involved
    title: str = ""
    count: int = 1  # how many times the same finding occurred (same code and lines)

    @property
    def file(self):
        return next((o["file"] for o in self.ops if o.get("file")), None)

    @property
    def line(self):
        return next((o["line"] for o in self.ops if o.get("file")), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["file"], d["line"] = self.file, self.line
        return d


@dataclass(frozen=True)
class Check:
    code: str
    severity: str  # the usual severity; a finding may say otherwise
    title: str
    example: str
    explanation: str
    fix: str
    func: object


CHECKS: dict = {}


def register(code, severity, title, example, explanation, fix):
    def deco(func):
        CHECKS[code] = Check(code, severity, title, example, explanation, fix, func)
        return func

    return deco



def stats_text(s) -> str:
    if not s:
        return "no statistics"
    parts = [f"{k}={s[k]:.4g}" for k in ("min", "max", "mean") if isinstance(s.get(k), (int, float))]
    if s.get("nan"):
        parts.append(f"nan={s['nan']}")
    if s.get("inf"):
        parts.append(f"inf={s['inf']}")
    return " ".join(parts)


def has_bad(s, what):
    return bool(s) and bool(s.get(what))


def finding(q, code, message, ops=(), tensors=(), nodes=(), severity=None, explanation=None, fix=None):
    """Build a finding; ``ops`` are (op node, role) and ``tensors`` (tensor node, role)."""
    c = CHECKS[code]
    op_refs = [q.op_ref(o, r) for o, r in ops if o in q.N]
    t_refs, seen = [], set()
    for t, r in tensors:
        if t in q.N and t not in seen:
            seen.add(t)
            t_refs.append(q.t_ref(t, r))
    all_nodes = []
    for n in [o["node"] for o in op_refs] + [t["node"] for t in t_refs] + list(nodes):
        if n is not None and n not in all_nodes:
            all_nodes.append(n)
    return Finding(code, severity or c.severity, message, op_refs, t_refs,
                   explanation or c.explanation, fix or c.fix, all_nodes, c.title)



def code_of(q, op):
    return (q.N.get(op) or {}).get("code")


def statement_of(q, op):
    s = fx.statement(code_of(q, op))
    return f"`{s}`" if s else f"{q.N[op]['name']}"



def names_of(q, ts, k=3):
    names = [q.name(t) for t in ts]
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


