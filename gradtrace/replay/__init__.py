"""Replay one program on several targets (CPU, a GPU, data-parallel ranks, a float64
reference) and diff every run against a baseline.

Each target runs in its own process (``python -m gradtrace.replay.child``), traced;
``ddp:N`` runs N ranks through torch.distributed's own launcher
(``python -m torch.distributed.run``) on a free port of 127.0.0.1. See
docs/replay.md.

The parts: :mod:`.targets` (what a target is, where ranks run), :mod:`.device_map`
(the child's device mapping and seeded random numbers), :mod:`.child` (the child
process), :mod:`.processes` (starting the children, reading back what they wrote),
:mod:`.switches` (a re-run with a likely cause of divergence switched off) and
:mod:`.run` (the replay itself).
"""

from .device_map import DeviceMap, setup_child
from .processes import DEFAULT_TIMEOUT, RunResult, run_target
from .run import RNG_MODES, replay
from .switches import explain_divergence
from .targets import Target, TargetError, check_target, ddp_placement, parse_target, parse_targets

__all__ = ["DEFAULT_TIMEOUT", "RNG_MODES", "DeviceMap", "RunResult", "Target", "TargetError", "check_target",
           "ddp_placement", "explain_divergence", "parse_target", "parse_targets", "replay", "run_target",
           "setup_child"]
