"""What each op, module and source line of a trace costs: FLOPs, and the memory its
autograd nodes keep alive for backward.

FLOPs come from the shapes the trace recorded, by the formulas torch ships in
``torch.utils.flop_counter`` (matrix products, convolutions, attention); an op with no
formula there counts as unknown, never as zero. Only the ops gradtrace records are
counted: the forward ops of the program, not the kernels autograd runs in backward.

Memory saved for backward is alias-aware: a storage counts once however many views of
it, and however many autograd nodes, saved it; at every level (an op, a module, a line,
the whole trace) the bytes are those of the distinct storages saved there. What is
saved is split by what keeps it alive:

- ``activation``: made by an op inside a module's forward, or requiring grad: only
  autograd keeps it until backward;
- ``parameter`` and ``buffer``: a module's own tensors (or a leaf that requires grad),
  which the program keeps anyway;
- ``input``: made outside any module (the batch), which the program holds itself.

A storage belongs to the first op (in call order, of the step asked for) whose autograd
node saved it. The peak of activation memory over a step's forward pass is the largest
sum of the activation storages saved and not yet consumed: each is let go at the first
backward call after it was saved. Autograd nodes whose saved tensors were not read (a
saved-tensor hook: ``save_on_cpu``, the program's own) are counted, as unknown; inside a
non-reentrant ``torch.utils.checkpoint`` block they keep nothing (the block reruns in
backward), and the block keeps its inputs: the tensors its ops read that were made
outside it (and, with ``preserve_rng_state``, the RNG states, which the trace does not
see: 5,056 bytes on the CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..graph.query import made_by, numel, op_inputs, op_outputs
from ..graph.steps import find_steps
from .summary import human_bytes

__all__ = ["Costs", "SAVED_KINDS", "by_line", "by_module", "costs", "costs_line", "flop_text", "op_costs", "op_flops",
           "totals"]

SAVED_KINDS = ("activation", "parameter", "buffer", "input")

_LINEAR = frozenset(("torch.nn.functional.linear", "torch._C._nn.linear"))
_MATMUL = frozenset(("torch.matmul", "Tensor.matmul", "Tensor.__matmul__"))
_MM = frozenset(("torch.mm", "Tensor.mm"))
_BMM = frozenset(("torch.bmm", "Tensor.bmm"))
_ADDMM = frozenset(("torch.addmm", "Tensor.addmm"))
_BADDBMM = frozenset(("torch.baddbmm", "Tensor.baddbmm"))
_CONV = frozenset(f"{p}conv{d}d" for p in ("torch.", "torch.nn.functional.") for d in (1, 2, 3))
_CONV_T = frozenset(f"{p}conv_transpose{d}d" for p in ("torch.", "torch.nn.functional.") for d in (1, 2, 3))
_SDPA = frozenset(("torch.nn.functional.scaled_dot_product_attention", "torch._C._nn.scaled_dot_product_attention"))


_NAMES = _LINEAR | _MATMUL | _MM | _BMM | _ADDMM | _BADDBMM | _CONV | _CONV_T | _SDPA


def _shapes(G, nodes) -> list | None:
    shapes = [G._node[n].get("shape") for n in nodes]
    return None if any(s is None for s in shapes) else [list(s) for s in shapes]


def _broadcast(a: list, b: list) -> list:
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    return [max(x, y) for x, y in zip(a, b)]


def _formulas():
    # torch is imported only when costs are asked for: reading a trace needs no torch
    from torch.utils import flop_counter

    return flop_counter


def _matmul(a: list, b: list):
    """FLOPs of ``torch.matmul(a, b)`` as torch runs it (a matrix-vector product, which
    ``flop_counter`` has no formula for, is unknown)."""
    if len(b) < 2 or not a:
        return None
    if len(a) == 1:
        a = [1, a[0]]
    batch = math.prod(_broadcast(a[:-2], b[:-2]))
    return _formulas().bmm_flop([batch, a[-2], a[-1]], [batch, b[-2], b[-1]])


def _unbatched(x: list, w: list, out: list):
    # conv on an unbatched input: torch adds the batch dimension of one
    return ([1, *x], [1, *out]) if len(x) == len(w) - 1 else (x, out)


def op_flops(G, op):
    """Return the FLOPs of op ``op`` of trace ``G`` by ``torch.utils.flop_counter``'s
    formulas, from the shapes of its tensors; None where there is no formula for it or
    a shape is unknown."""
    name = G._node[op].get("name")
    if name not in _NAMES:
        return None
    ins = _shapes(G, op_inputs(G, op))
    if ins is None:
        return None
    _fc = _formulas()
    try:
        if name in _LINEAR and len(ins) >= 2:
            x, w = ins[0], ins[1]
            return _fc.mm_flop([math.prod(x[:-1]), x[-1]], [w[1], w[0]])
        if name in _MATMUL and len(ins) == 2:
            return _matmul(ins[0], ins[1])
        if name in _MM and len(ins) == 2:
            return _fc.mm_flop(ins[0], ins[1])
        if name in _BMM and len(ins) == 2:
            return _fc.bmm_flop(ins[0], ins[1])
        if name in _ADDMM and len(ins) == 3:
            return _fc.addmm_flop(*ins)
        if name in _BADDBMM and len(ins) == 3:
            return _fc.baddbmm_flop(*ins)
        if (name in _CONV or name in _CONV_T) and len(ins) >= 2:
            out = _shapes(G, op_outputs(G, op)[:1])
            if not out:
                return None
            x, o = _unbatched(ins[0], ins[1], out[0])
            return _fc.conv_flop_count(x, ins[1], o, transposed=name in _CONV_T)
        if name in _SDPA and len(ins) >= 3:
            q, k, v = ([1, *s] if len(s) == 3 else s for s in ins[:3])
            return _fc.sdpa_flop_count(q, k, v)
    except Exception:  # shapes a formula does not take (symbolic, mismatched): unknown
        return None
    return None


@dataclass
class Costs:
    """The costs of a trace (or of one step of it): ``flops[op]`` (None: unknown),
    ``saved[op]`` (``{storage: kind}`` of the storages the op's autograd nodes saved
    first), ``unread[op]`` (its autograd nodes whose saved tensors were not read),
    ``nbytes[storage]``, ``params[module path]`` (parameter elements of the module
    itself), ``peak`` (``{bytes, op, step}`` of the largest sum of activation memory
    held for backward, or None), and in a trace recorded with ``time=True``, ``time[op]``
    (``(wall ns, GPU ns or None)`` of every timed op of the step, backward calls and
    optimizer steps included)."""

    flops: dict = field(default_factory=dict)
    time: dict = field(default_factory=dict)
    saved: dict = field(default_factory=dict)
    unread: dict = field(default_factory=dict)
    nbytes: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    peak: dict | None = None


class _Kinds:
    """What keeps each saved tensor version alive (one of :data:`SAVED_KINDS`), asked
    once a version: a batch every step saves is asked about once."""

    def __init__(self, G):
        self.G, self.keeps, self.of = G, _keeps(G), {}

    def __call__(self, t) -> str:
        kind = self.of.get(t)
        if kind is None:
            d = self.G._node[t]
            kind = self.keeps.get(d.get("storage"))
            if not kind:
                if d.get("requires_grad") and not d.get("is_leaf"):
                    kind = "activation"
                else:
                    made = made_by(self.G, t)
                    kind = "activation" if made is not None and self.G._node[made].get("module") else "input"
            self.of[t] = kind
        return kind


def _saved_by(G, fn, d, kind_of) -> dict:
    """``{storage: kind}`` of what autograd node ``fn`` (attributes ``d``) saved: its saved
    tensors' storages, the storages no live tensor was on, and what its op made for its
    own backward and never returned (``save_mean``; key ``fn:N:untracked``)."""
    N = G._node
    found = {}
    for t, keyed in G._succ[fn].items():
        if N[t].get("storage") and any(e.get("kind") == "saves" for e in keyed.values()):
            found.setdefault(N[t]["storage"], kind_of(t))
    for sid in d.get("saved_storages") or ():
        found.setdefault(sid, "activation")
    if d.get("saved_untracked_bytes"):
        found[f"{fn}:untracked"] = "activation"
    return found


def _nbytes(N, sid) -> int:
    """The bytes of storage ``sid``, or of what node ``fn:N`` of ``fn:N:untracked`` saved untracked."""
    if sid in N:
        return N[sid].get("nbytes") or 0
    return N[sid.rsplit(":", 1)[0]].get("saved_untracked_bytes") or 0


def _keeps(G) -> dict:
    """``{storage: "parameter" | "buffer"}`` of the storages a module's tensors (or a
    leaf that requires grad) are on."""
    keeps = {}
    for d in G._node.values():
        if d.get("kind") != "tensor" or d.get("storage") is None:
            continue
        kind = d.get("param_kind")
        if kind is None and d.get("is_leaf") and d.get("requires_grad"):
            kind = "parameter"
        if kind in ("parameter", "buffer") and keeps.get(d["storage"]) != "parameter":
            keeps[d["storage"]] = kind
    return keeps


def _module_params(G) -> dict:
    """``{module path: parameter elements}``, each parameter counted once (its first version)."""
    seen, out = set(), {}
    for d in G._node.values():
        if d.get("kind") == "tensor" and d.get("param_kind") == "parameter" and d.get("tid") not in seen:
            seen.add(d.get("tid"))
            path = (d.get("param_of") or "mod:")[len("mod:"):]
            out[path] = out.get(path, 0) + numel(d.get("shape"))
    return out


def costs(G, step: int | None = None, flops: bool = True, steps=None) -> Costs:
    """Return the :class:`Costs` of trace ``G``, of step ``step`` alone when given (its
    ops, and what their autograd nodes saved first); ``flops=False`` leaves FLOPs out
    (they need torch's formulas, and so torch imported); ``steps``: ``find_steps(G)``,
    when the caller has it."""
    N = G._node
    steps = steps or find_steps(G)
    ops = sorted((d["seq"], n) for n, d in N.items() if d.get("kind") == "op"
                 and (step is None or steps.step_of.get(n) == step))
    c = Costs(params=_module_params(G))
    kind_of = _Kinds(G)
    owner: dict = {}  # storage -> the first op whose autograd node saved it
    by_op: dict = {}
    chosen = {op for _, op in ops}
    checkpointed = set()  # forward ops whose autograd nodes torch.utils.checkpoint packed
    for n, d in N.items():
        if d.get("kind") != "grad_fn" or d.get("op") not in chosen:
            continue
        op = d["op"]
        if d.get("saved") == "unread":
            if d.get("saved_hook") != _CHECKPOINT:
                c.unread[op] = c.unread.get(op, 0) + 1
            elif steps.phase_of.get(op) != "backward":
                checkpointed.add(op)  # it keeps nothing: the block reruns in backward
            # (in backward: the rerun itself, whose memory backward frees as it goes)
            continue
        found = by_op.setdefault(op, {})
        for sid, kind in _saved_by(G, n, d, kind_of).items():
            found.setdefault(sid, kind)
    _checkpoint_inputs(G, ops, checkpointed, by_op, kind_of)
    for _, op in ops:
        for sid, kind in (by_op.get(op) or {}).items():
            owner.setdefault(sid, (op, kind))
    for sid, (op, kind) in owner.items():
        c.saved.setdefault(op, {})[sid] = kind
        c.nbytes[sid] = _nbytes(N, sid)
    for _, op in ops:
        d = N[op]
        if flops and steps.phase_of.get(op) in ("forward", "backward") and d.get("category") != "backward":
            c.flops[op] = op_flops(G, op)
        if d.get("time_ns") is not None:
            c.time[op] = (d["time_ns"], d.get("device_time_ns"))
    c.peak = _peak(G, ops, c, steps)
    return c


_CHECKPOINT = "torch.utils.checkpoint"  # the module of its saved-tensor hooks (grad_fn saved_hook)


def _checkpoint_inputs(G, ops, checkpointed: set, by_op: dict, kind_of) -> None:
    """What a checkpointed block keeps for backward: the tensors its ops read that were
    made outside it (its inputs, which it holds to rerun the block), each given to the
    first op of the block that read it."""
    if not checkpointed:
        return
    N = G._node
    for _, op in ops:
        if op not in checkpointed:
            continue
        for t in op_inputs(G, op):
            if N[t].get("storage") and made_by(G, t) not in checkpointed:
                by_op.setdefault(op, {}).setdefault(N[t]["storage"], kind_of(t))


def _peak(G, ops, c: Costs, steps):
    """The largest sum of activation bytes held for backward at any op, and where."""
    N = G._node
    held, best = 0, None
    for _, op in ops:
        if N[op].get("category") == "backward":
            held = 0  # the call consumes what the graph before it saved
            continue
        for sid, kind in (c.saved.get(op) or {}).items():
            if kind == "activation":
                held += c.nbytes.get(sid, 0)
        if held and (best is None or held > best["bytes"]):
            best = {"bytes": held, "op": op, "step": steps.step_of.get(op)}
    return best


def costs_line(G, step="last") -> str | None:
    """Return one line of the costs of a step of ``G`` (``"last"``: the last finished
    one; None or ``"all"``: the whole trace), for a picture's legend; None when the
    trace has no FLOPs or saved memory to tell."""
    N = G._node
    if not any(d.get("name") in _NAMES or (d.get("kind") == "grad_fn" and G._succ[n]) for n, d in N.items()):
        return None  # nothing to count: no op with a FLOP formula, no autograd node that saved anything
    steps = find_steps(G)
    if isinstance(step, str) and step.isdigit():
        step = int(step)
    if step == "last":
        step = steps.last_complete if steps.count > 1 else None
    elif step == "all":
        step = None
    t = totals(costs(G, step, steps=steps))
    act = t["saved"]["activation"]
    if not t["flops"] and not act:
        return None
    parts = [f"{flop_text(t['flops'])} known" + (f" (+{t['flops_unknown']} ops unknown)" if t["flops_unknown"] else "")]
    parts.append(f"{human_bytes(act)} of activations saved for backward")
    if "time_ns" in t:
        parts.append(f"{t['time_ns'] / 1e6:.3g} ms of op time (--time)")
    return f"costs of {'step ' + str(step) if step else 'the whole trace'}: " + ", ".join(parts)


def flop_text(n: int) -> str:
    """``2.28 GFLOP`` for 2,283,798,528."""
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {prefix}FLOP"
    return f"{n} FLOP"


def op_costs(G) -> dict:
    """Return ``{op: {"flops", "saved", "time_ns"}}`` for every op of ``G`` with one of
    them: its FLOPs (None: no formula), the activation bytes its own autograd nodes saved
    (each storage once, not shared out with other ops, as the viewer shows one op), and
    its wall time in a timed trace."""
    steps = find_steps(G)
    N = G._node
    kind_of = _Kinds(G)
    saved_of: dict = {}  # op -> {storage: kind} of all its autograd nodes
    for n, d in N.items():
        if d.get("kind") == "grad_fn" and d.get("op") in N and d.get("saved") != "unread":
            saved_of.setdefault(d["op"], {}).update(_saved_by(G, n, d, kind_of))
    out: dict = {}
    for op, storages in saved_of.items():
        saved = sum(_nbytes(N, sid) for sid, kind in storages.items() if kind == "activation")
        if saved:
            out[op] = {"flops": None, "saved": saved, "time_ns": None}
    for n, d in N.items():
        if d.get("kind") != "op":
            continue
        flops = op_flops(G, n) if steps.phase_of.get(n) in ("forward", "backward") else None
        if flops is not None or d.get("time_ns") is not None:
            row = out.setdefault(n, {"flops": None, "saved": 0, "time_ns": None})
            row["flops"], row["time_ns"] = flops, d.get("time_ns")
    return out


def _row(ops, c: Costs) -> dict:
    """FLOPs (known, and how many ops have none) and saved bytes by kind, of ``ops``:
    each storage once; in a timed trace, ``time_ns`` (wall) and, where ops ran on CUDA,
    ``device_time_ns``."""
    flops, unknown, storages, unread, wall, gpu = 0, 0, {}, 0, 0, 0
    for op in ops:
        t = c.time.get(op)
        if t is not None:
            wall += t[0]
            gpu += t[1] or 0
        if op in c.flops:
            f = c.flops[op]
            if f is None:
                unknown += 1
            else:
                flops += f
        storages.update(c.saved.get(op) or {})
        unread += c.unread.get(op, 0)
    saved = dict.fromkeys(SAVED_KINDS, 0)
    for sid, kind in storages.items():
        saved[kind] += c.nbytes.get(sid, 0)
    row = {"flops": flops, "flops_unknown": unknown, "saved": saved, "saved_unknown": unread}
    if c.time:
        row["time_ns"] = wall
        if any(t[1] is not None for t in c.time.values()):
            row["device_time_ns"] = gpu
    return row


def _ops(c: Costs) -> set:
    return set(c.flops) | set(c.saved) | set(c.unread) | set(c.time)


def totals(c: Costs) -> dict:
    """Return the figures (:func:`_row`) of every op of ``c``, with ``params``: the
    parameter elements of every module."""
    ops = _ops(c)
    return {"ops": len(ops), "params": sum(c.params.values()), **_row(ops, c)}


def by_module(G, c: Costs) -> list:
    """Return a row per module (path order; ``""`` for ops outside every module), each
    with its ops' figures (:func:`_row`) over the module and the modules inside it,
    ``ops``, and its parameter elements (``params``, inside it too)."""
    ops_of: dict = {}
    for op in _ops(c):
        ops_of.setdefault(G._node[op].get("module") or "", []).append(op)
    paths = set(ops_of) | set(c.params)
    for p in list(paths):
        while "." in p:
            p = p.rsplit(".", 1)[0]
            paths.add(p)
    rows = []
    for path in sorted(paths):
        inside = [m for m in ops_of if m == path or (path and m.startswith(path + "."))] if path else [""]
        ops = [op for m in inside for op in ops_of[m]]
        params = sum(n for m, n in c.params.items() if m == path or (path and m.startswith(path + ".")))
        rows.append({"module": path, "ops": len(ops), "params": params, **_row(ops, c)})
    return rows


def by_line(G, c: Costs) -> list:
    """Return a row per source line of the user's (``file``, ``line``, ``code``) with
    its ops' figures (:func:`_row`) and ``ops``, largest saved activation memory first,
    then FLOPs."""
    ops_of: dict = {}
    for op in _ops(c):
        d = G._node[op]
        ops_of.setdefault((d.get("file"), d.get("line")), []).append(op)
    rows = []
    for (file, line), ops in ops_of.items():
        code = next((G._node[op].get("code") for op in ops if G._node[op].get("code")), None)
        rows.append({"file": file, "line": line, "code": code, "ops": len(ops), **_row(ops, c)})
    rows.sort(key=lambda r: (-r["saved"]["activation"], -r["flops"], str(r["file"]), r["line"] or 0))
    return rows
