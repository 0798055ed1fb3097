"""Steps and phases of a traced program, found from what it did.

A *step* ends with a backward call and the optimizer work that follows it (library
ops run under ``no_grad`` by no module, as ``opt.step()`` does). Each op gets one
*phase*: ``init`` (library work outside any module before the first backward call:
parameter initialisation, ``model.to(...)``), ``forward``, ``backward`` (the backward
call itself and code run inside it) or ``optimizer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PHASES = ("init", "forward", "backward", "optimizer")
DEFAULT_PHASES = frozenset({"forward", "backward"})


@dataclass
class Steps:
    """The ops of a trace split into steps: ``step_of[op]`` (1-based) and
    ``phase_of[op]``; ``count`` steps, of which ``complete`` are finished (their
    backward call ran); ``last_complete`` is the default step to draw (0 when none)."""

    step_of: dict = field(default_factory=dict)
    phase_of: dict = field(default_factory=dict)
    count: int = 0
    complete: int = 0

    @property
    def last_complete(self) -> int:
        return self.complete or self.count


def _library(d) -> bool:
    return d.get("direct") is False and not d.get("module")


def _backward_phase(d) -> bool:
    return d.get("category") == "backward" or d.get("phase") == "backward"


def find_steps(G) -> Steps:
    """Return the :class:`Steps` of trace ``G``."""
    ops = sorted(((d.get("seq", 0), n, d) for n, d in G.nodes(data=True) if d.get("kind") == "op"),
                 key=lambda t: t[0])
    s = Steps()
    step, seen_backward, in_tail, complete = 1, False, False, 0
    for _, n, d in ops:
        if _backward_phase(d):
            phase = "backward"
            in_tail = d.get("category") == "backward"
            seen_backward = True
            complete = step
        elif in_tail and _library(d) and not d.get("grad_enabled", True):
            phase = "optimizer"
        elif _library(d) and not seen_backward:
            phase = "init"
        else:
            if in_tail:  # the first op after a backward call and its optimizer work starts a step
                step += 1
                in_tail = False
            phase = "forward"
        s.step_of[n] = step
        s.phase_of[n] = phase
    s.count = step if ops else 0
    s.complete = complete
    return s


def parse_phases(phase) -> frozenset:
    """Return the set of phases named by ``phase`` (None: forward and backward;
    ``all``; one phase; or several joined by commas). Raises ``ValueError`` naming
    the choices for an unknown one."""
    if phase is None:
        return DEFAULT_PHASES
    if isinstance(phase, (set, frozenset, list, tuple)):
        names = list(phase)
    else:
        names = [p.strip() for p in str(phase).split(",") if p.strip()]
    if "all" in names:
        return frozenset(PHASES)
    bad = [p for p in names if p not in PHASES]
    if bad or not names:
        raise ValueError(f"unknown phase {bad[0] if bad else phase!r}: choose from "
                         f"{', '.join(PHASES)} or all")
    return frozenset(names)


def select_ops(G, steps: Steps, step, phases) -> tuple[set, int | None]:
    """Return (the op nodes to draw, the step drawn or None for every step).

    ``step``: None for the default (the last complete step; every step when only
    ``init`` is asked for, since initialisation comes before the first step), ``"all"``,
    or a number from 1 to ``steps.count`` (``ValueError`` otherwise)."""
    if step is None:
        step = "all" if phases == {"init"} or steps.count == 0 else steps.last_complete
    if step == "all":
        chosen = None
    else:
        try:
            chosen = int(step)
        except (TypeError, ValueError):
            raise ValueError(f"--step must be a number or 'all', not {step!r}") from None
        if not 1 <= chosen <= max(steps.count, 1):
            raise ValueError(f"step {chosen} is not in this trace: it has {steps.count} step(s)")
    ops = {n for n, p in steps.phase_of.items()
           if p in phases and (chosen is None or p == "init" or steps.step_of[n] == chosen)}
    return ops, chosen
