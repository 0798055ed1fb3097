"""Steps and phases of a traced program, found from what it did.

A *step* ends with a backward call and the update work that follows it. Each op gets
one *phase*:

- ``init``: library work outside any module before the first backward call (parameter
  initialisation, ``model.to(...)``);
- ``data``: in a step that calls a module, the work before anything requires grad,
  outside modules and on tensors that do not (loading a batch: a collate, ``get_batch``'s
  indexing, ``x.to(device)``);
- ``forward``;
- ``backward``: the backward call itself and code run inside it (non-reentrant
  checkpointing's recomputation);
- ``optimizer``: after a backward call, the update work: library code under no_grad by
  no module (``opt.step()``, an EMA or ``clip_grad_norm_``), the user's own updates under
  no_grad, and ops that read only parameters, their gradients and what such ops made
  (``p.data.add_(p.grad, alpha=-lr)``); with a loss scaler, everything from the last
  backward call to ``GradScaler.update`` (``scaler.step``'s unscaling runs in grad mode).

Reading a value out (``total += loss.item()``) between the backward call and the update
is neither: it stays in the step and ends nothing.

A program that calls ``gradtrace.step()`` says itself where its steps end: each call
is an op of category ``step``, and once a trace holds one, a step is what runs up to and
including such a mark (the ops after the last mark are one more, unfinished, step,
unless they only leave a grad mode).
Phases are found as above.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

__all__ = ["MARK", "Steps", "find_steps", "first_step"]

MARK = "step"  # the category of the op ``gradtrace.step()`` records


@dataclass
class Steps:
    """The ops of a trace split into steps: ``step_of[op]`` (1-based) and
    ``phase_of[op]``; ``count`` steps, of which ``complete`` are finished (their
    backward call ran); ``last_complete`` is the default step to draw (0 when none)."""

    step_of: dict = field(default_factory=dict)
    phase_of: dict = field(default_factory=dict)
    count: int = 0
    complete: int = 0
    # Several backward calls before one update (gradient accumulation): micro-steps,
    # numbered from 1 within their step; ``micros[step]`` says how many it has.
    micro_of: dict = field(default_factory=dict)
    micros: dict = field(default_factory=dict)

    @property
    def last_complete(self) -> int:
        """Return the last finished step (the last step when none finished)."""
        return self.complete or self.count


def _first(t):
    return t[0]


def _library(d) -> bool:
    return d.get("direct") is False and not d.get("module")


def _backward_phase(d) -> bool:
    return d.get("category") == "backward" or d.get("phase") == "backward"


class _Tensors:
    """What the step finder asks of an op's tensors, read from the graph's own dicts."""

    def __init__(self, G):
        self.N = G._node if hasattr(G, "_node") else dict(G.nodes(data=True))
        self.succ = G._succ if hasattr(G, "_succ") else G.succ
        self.pred = G._pred if hasattr(G, "_pred") else G.pred

    def _ends(self, adj, n, kind):
        N = self.N
        return [m for m, keyed in adj[n].items() if N[m].get("kind") == "tensor"
                and any(e.get("kind") == kind for e in keyed.values())]

    def inputs(self, op):
        return self._ends(self.pred, op, "input")

    def outputs(self, op):
        return self._ends(self.succ, op, "output")

    def requires_grad(self, t) -> bool:
        return bool(self.N[t].get("requires_grad"))

    def is_gradient(self, t) -> bool:
        return any(e.get("kind") == "grad_of" for keyed in self.succ[t].values() for e in keyed.values())

    def of_the_update(self, t, made) -> bool:
        """A parameter, a gradient the user read, or a tensor the update work made."""
        d = self.N[t]
        return d.get("tid") in made or (d.get("is_leaf") and d.get("requires_grad")) or self.is_gradient(t)


def _update_work(T: _Tensors, op, d, made) -> bool:
    if d.get("module") or d.get("category") in ("backward", "grad_mode"):
        return False
    if not d.get("grad_enabled", True):
        return True
    ins = T.inputs(op)
    return bool(ins) and all(T.of_the_update(t, made) for t in ins)


def find_steps(G, data: bool = True) -> Steps:
    """Return the :class:`Steps` of trace ``G``; ``data=False`` leaves the ``data`` phase
    unmarked (its ops stay ``forward``), for readers that need only the steps."""
    items = G._node.items() if hasattr(G, "_node") else G.nodes(data=True)
    ops = sorted(((d.get("seq", 0), n, d) for n, d in items if d.get("kind") == "op"), key=_first)
    T = _Tensors(G)
    s = Steps()
    scaling = _scaler_updates(T.N, ops)
    seen_backward, in_tail = False, False
    made: set = set()  # tids the update work of the tail made
    ends = []  # (op that ends a tail, whether that tail updated anything)
    updated = False
    for _, n, d in ops:
        if _backward_phase(d):
            phase = "backward"
            # Ops run inside the backward call (non-reentrant checkpointing recomputes
            # the forward there) are part of it: the tail starts at the call.
            in_tail = in_tail or d.get("category") == "backward"
            seen_backward = True
        elif in_tail and (d.get("category") == "grad_mode" or n in scaling or _update_work(T, n, d, made)):
            phase = "optimizer"
            updated = updated or d.get("category") != "grad_mode"
            made.update(T.N[t].get("tid") for t in T.outputs(n))
        elif in_tail and not T.outputs(n) and not d.get("module"):
            phase = "forward"  # a value read out (`loss.item()`): no new step
        elif _library(d) and not seen_backward:
            phase = "init"
        else:
            if in_tail:
                ends.append((n, updated))
                in_tail, updated, made = False, False, set()
            phase = "forward"
        s.phase_of[n] = phase
    # A step ends with its update. Several backward calls before one update (gradient
    # accumulation) are one step; a program that updates nothing has a step per call.
    any_update = updated or any(u for _, u in ends)
    starts = {n for n, u in ends if u or not any_update}
    micro_starts = {n for n, _ in ends} - starts
    marks = {n for _, n, d in ops if d.get("category") == MARK}
    if marks:  # the program's own marks, and nothing else, end its steps
        # ...but leaving a `with torch.no_grad():` after the last mark starts no step
        last = max((i for i, (_, _, d) in enumerate(ops) if d.get("category") != "grad_mode"), default=-1)
        starts = {ops[i + 1][1] for i in range(min(last, len(ops) - 1)) if ops[i][1] in marks}
        micro_starts = set()
    step, micro, complete = 1, 1, 0
    for _, n, d in ops:
        if n in starts:
            step, micro = step + 1, 1
        elif n in micro_starts:
            micro += 1
        s.step_of[n] = step
        s.micro_of[n] = micro
        s.micros[step] = micro
        if d.get("category") == (MARK if marks else "backward"):
            complete = step
    s.count = step if ops else 0
    s.complete = complete
    if data:
        _mark_data(T, ops, s)
    return s


def _scaler_updates(N, ops) -> set:
    """The ops between a loss scaler's update (a ``loss_scale`` node) and the last
    backward call before it: ``scaler.step``'s work, whatever its grad mode."""
    ends = sorted(d["seq"] for d in N.values() if d.get("kind") == "loss_scale")
    if not ends:
        return set()
    seqs = [q for q, _, _ in ops]
    calls = [q for q, _, d in ops if d.get("category") == "backward"]
    found = set()
    for e in ends:
        i = bisect_left(calls, e) - 1
        if i >= 0:
            found.update(n for _, n, _ in ops[bisect_left(seqs, calls[i]) + 1:bisect_left(seqs, e)])
    return found


def _mark_data(T: _Tensors, ops, s: Steps) -> None:
    """Phase ``data`` for the work that makes a step's batch: ops outside modules whose
    inputs and outputs require no grad and were made from nothing the model computed
    (a collate, ``get_batch``'s indexing, ``x.to(device)``), in steps that call a module."""
    with_module = {s.step_of[n] for _, n, d in ops if d.get("module")}
    model = set()  # tids computed by the model or from what it computed
    for _, n, d in ops:
        outs = T.outputs(n)
        ins = T.inputs(n)
        tids = [T.N[t].get("tid") for t in ins]
        phase = s.phase_of[n]
        if phase == "init":
            continue
        if d.get("module") or phase != "forward" or any(t in model for t in tids) \
                or any(T.requires_grad(t) for t in ins + outs):
            model.update(T.N[t].get("tid") for t in outs)
            continue
        if s.step_of[n] in with_module and d.get("category") != "grad_mode":
            s.phase_of[n] = "data"


def first_step(G, steps: Steps | None = None) -> int:
    """The run's number of the trace's first step: 1, or A for a trace of ``--steps A:B``,
    or the first step a ``--last N`` trace kept whole. Given ``steps`` (the trace's
    :func:`find_steps`): where a ``--last N`` trace's first step only finishes the last
    step whose row the ring kept (its ops ran before that row's last), that step's number."""
    n = G.graph.get("first_step")
    n = n if isinstance(n, int) and n >= 1 else 1
    earlier = G.graph.get("earlier_steps")
    if steps is None or not earlier or not isinstance(earlier[-1].get("last_seq"), int):
        return n
    cut, N = earlier[-1]["last_seq"], G._node
    firsts = [N[op].get("seq", 0) for op, k in steps.step_of.items() if k == 1]
    return n - 1 if firsts and max(firsts) <= cut else n
