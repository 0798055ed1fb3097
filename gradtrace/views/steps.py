"""Which ops a picture draws: the phases of a step (see :mod:`gradtrace.graph.steps`,
which finds the steps and phases) and the step chosen."""

from __future__ import annotations

from ..graph.steps import Steps, find_steps

__all__ = ["DEFAULT_PHASES", "PHASES", "Steps", "find_steps", "parse_phases", "select_ops"]

PHASES = ("init", "data", "forward", "backward", "optimizer")
DEFAULT_PHASES = frozenset({"forward", "backward"})


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


def select_ops(G, steps: Steps, step, phases) -> tuple[set, int | None, int | None]:
    """Return (the op nodes to draw, the step drawn or None for every step, the
    micro-step drawn or None for all of the step's).

    ``step``: None for the default (the last micro-step of the last complete step: with
    gradient accumulation one forward and backward, not each of them side by side;
    every step when only ``init`` is asked for, since initialisation comes before the
    first step), ``"all"``, or a number from 1 to ``steps.count`` (``ValueError``
    otherwise)."""
    if step is None and phases != {"init"} and steps.count:
        chosen = steps.last_complete
        last = steps.micros.get(chosen, 1)
        ops = {n for n, p in steps.phase_of.items() if p in phases and (p == "init" or (
            steps.step_of[n] == chosen and steps.micro_of.get(n, 1) == last))}
        return ops, chosen, (last if last > 1 else None)
    if step is None:
        step = "all"
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
    return ops, chosen, None
