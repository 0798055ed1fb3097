"""The targets a replay runs on (``cpu``, ``cpu64``, ``cuda:N``, ``ddp:N``): parsing
them, checking that this machine can run them, and where a ``ddp:N`` target's ranks run."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

__all__ = ["Target", "TargetError", "check_target", "ddp_placement", "parse_target", "parse_targets"]

_TARGET_RE = re.compile(r"^(cpu|cpu64|cuda(?::(\d+))?|ddp:(\d+)(?::(cpu|cuda))?)$")


class TargetError(ValueError):
    """A target that is unknown or cannot run on this machine (a usage error)."""


@dataclass
class Target:
    """One target of a replay, and the folder its run is written to."""

    name: str  # as the user wrote it: cpu, cuda:1, ddp:2
    kind: str  # cpu, cpu64, cuda, ddp
    device: str | None = None  # the device requests are mapped to; None: the script's own
    world_size: int = 1
    folder: str = ""


def parse_target(text: str) -> Target:
    """Parse ``cpu``, ``cpu64``, ``cuda``, ``cuda:N``, ``ddp:N`` (or ``ddp:N:cpu``,
    ``ddp:N:cuda``) and return its :class:`Target`; raise :class:`TargetError` for
    anything else."""
    m = _TARGET_RE.match(text.strip())
    if not m:
        raise TargetError(f"unknown target {text!r} (targets: cpu, cpu64, cuda, cuda:N, ddp:N)")
    t = text.strip()
    if t in ("cpu", "cpu64"):
        return Target(t, t, "cpu", folder=t)
    if t.startswith("cuda"):
        return Target(t, "cuda", f"cuda:{m.group(2) or 0}", folder=t)
    n = int(m.group(3))
    if n < 1:
        raise TargetError(f"target {t}: a data-parallel run needs at least 1 rank")
    dev = m.group(4)
    return Target(t, "ddp", dev, world_size=n, folder=t)


def check_target(t: Target):
    """Raise :class:`TargetError` (one line) when ``t`` cannot run on this machine."""
    if t.device is not None and t.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TargetError(f"target {t.name} needs a CUDA GPU, and torch.cuda.is_available() is "
                              f"False on this machine (torch {torch.__version__})")
        idx = int(t.device.split(":")[1]) if ":" in t.device else 0
        if idx >= torch.cuda.device_count():
            raise TargetError(f"target {t.name}: this machine has {torch.cuda.device_count()} GPU(s)")
    if t.kind == "ddp":
        import torch.distributed as dist  # lazy: optional in a torch build, and only ddp:N needs it

        if not dist.is_available():
            raise TargetError(f"target {t.name}: this torch build has no torch.distributed")


def parse_targets(names) -> list:
    """Parse and check the ``--on`` targets; return the :class:`Target` list, repeated
    names getting ``-2``, ``-3`` folders."""
    out, seen = [], {}
    for n in names:
        t = parse_target(n)
        check_target(t)
        k = seen.get(t.name, 0) + 1
        seen[t.name] = k
        if k > 1:
            t.folder = f"{t.name}-{k}"
        out.append(t)
    if not out:
        raise TargetError("no target: give at least one --on (cpu, cpu64, cuda, ddp:N)")
    return out


def ddp_placement(target: Target, gpus: int) -> dict:
    """Return where the ranks of a ``ddp:N`` target run on a machine with ``gpus`` GPUs:
    ``{backend, gpus, shared, devices, text}``. N GPUs or more (and no ``:cpu``): one
    rank per GPU over NCCL; fewer: the ranks share the GPUs over gloo (NCCL refuses
    two ranks on one GPU); none, or ``ddp:N:cpu``: gloo on CPU."""
    n = target.world_size
    if target.device == "cpu" or gpus <= 0:
        return {"backend": "gloo", "gpus": 0, "shared": False, "devices": ["cpu"] * n,
                "text": f"{n} ranks on CPU, gloo"}
    if gpus >= n:
        devices = [f"cuda:{k}" for k in range(n)]
        return {"backend": "nccl", "gpus": gpus, "shared": False, "devices": devices,
                "text": f"{n} ranks, one per GPU ({', '.join(devices)}), NCCL"}
    devices = [f"cuda:{k % gpus}" for k in range(n)]
    return {"backend": "gloo", "gpus": gpus, "shared": True, "devices": devices,
            "text": f"{n} ranks share {_plural_gpus(gpus)} ({', '.join(sorted(set(devices)))}), gloo: "
                    f"fewer GPUs than ranks, so ranks share a device"}


def _plural_gpus(n):
    return "1 GPU" if n == 1 else f"{n} GPUs"
