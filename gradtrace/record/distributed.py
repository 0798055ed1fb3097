"""Data-parallel recording: hooks into torch.distributed / DDP while a trace runs.

While a trace is active, every ``DistributedDataParallel`` built gets a comm
hook that keeps DDP's default behaviour (the averaging all-reduce of
``allreduce_hook``) and records each gradient bucket as a ``collective`` node
``c:N`` with ``reduces`` edges to the bucket's parameters. A hook the user
registers later replaces the default inside the same recording wrapper, so it
is recorded too. Statistics of the reduced bucket are taken when its future
completes, without changing its result.

A ``--steps`` window opens mid-run, after the program built its DDP models: when it
opens, the models built before it get the same hook (:func:`attach_built`), unless the
program registered its own. The hook stays once the window closes (DDP takes one hook
and never gives it back), reducing as DDP's default does and recording nothing.

A Python comm hook leaves the process group's worker threads Python objects to free,
and torch before 2.8 destroys a process group holding the GIL while it joins those
threads (pytorch/pytorch#154976): a group destroyed just after a backward hangs the
program. The recorder therefore holds each group a recorded DDP uses until the trace
ends (a windowed trace: past its window), and lets go of it only once the workers have
had the GIL (:func:`release`).
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from contextlib import nullcontext

from . import stats as _stats

__all__ = ["attach_built", "gradtrace_comm_hook", "install", "release"]

_WORKERS_GIL_S = 0.05  # how long the workers get the GIL before a group may be destroyed


def _dist_position():
    """``(rank, world_size)`` of the default process group, or ``(0, 1)``."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:
        pass
    return 0, 1


def install(current) -> list:
    """Return ``(obj, name, replacement)`` patches that record collectives for the
    recorder ``current()`` names (the calling thread's) when a DDP model is built."""
    try:
        import torch.distributed as dist

        if not dist.is_available():
            return []
        from torch.nn.parallel import DistributedDataParallel as DDP
    except Exception:  # a torch built without distributed support
        return []

    orig_init = DDP.__init__
    orig_register = DDP.register_comm_hook

    def __init__(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        rec = current()
        if rec is not None:
            _attach(self, rec, orig_register)

    def register_comm_hook(self, state, hook):
        ours = getattr(self, "_gradtrace_state", None)
        if ours is not None and not ours["user"]:
            ours.update(hook=hook, state=state, user=True)  # recorded around the user's hook
            return None
        return orig_register(self, state, hook)

    return [(DDP, "__init__", __init__), (DDP, "register_comm_hook", register_comm_hook)]


def release(groups: list) -> None:
    """Let go of the process groups in ``groups`` (a recorder's, or a trace's held past
    its window), after giving the GIL away long enough for their worker threads to free
    what the comm hooks left them."""
    if not groups:
        return
    time.sleep(_WORKERS_GIL_S)  # sleeping releases the GIL
    groups.clear()


def attach_built(rec) -> int:
    """Record the all-reduces of the DDP models built before ``rec`` started (a
    ``--steps`` window opening mid-run), as those built while it runs are; return how
    many were attached. A model whose comm hook the program registered is left alone
    (DDP takes one hook), and one gradtrace attached earlier now records into ``rec``."""
    try:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return 0
        from torch.nn.parallel import DistributedDataParallel as DDP
    except Exception:
        return 0
    n = 0
    for obj in gc.get_objects():  # once, when the window opens
        if not isinstance(obj, DDP):
            continue
        ours = getattr(obj, "_gradtrace_state", None)
        if ours is not None:
            ours["rec"] = weakref.ref(rec)
            rec.process_groups.append(obj.process_group)
            n += 1
        elif not getattr(obj, "_comm_hooks", None) and _attach(obj, rec, DDP.register_comm_hook):
            n += 1
    return n


def _attach(ddp, rec, register) -> bool:
    """Give ``ddp`` the recording comm hook (DDP's default all-reduce inside), recording
    into ``rec``; False when DDP would not take it (recording never breaks the DDP)."""
    try:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        names = {id(p): n for n, p in ddp.module.named_parameters()}
        state = {"hook": allreduce_hook, "state": ddp.process_group, "names": names,
                 "pg": ddp.process_group, "user": False, "rec": weakref.ref(rec)}
        register(ddp, state, gradtrace_comm_hook)
        ddp._gradtrace_state = state
        rec.process_groups.append(ddp.process_group)
        return True
    except Exception:
        ddp._gradtrace_state = None
        return False


def gradtrace_comm_hook(state, bucket):
    """DDP's comm hook while gradtrace records: the bucket is recorded, then reduced by
    the hook DDP would have run (its default all-reduce, or the program's own); once
    the recording has ended it only reduces."""
    rec = state["rec"]()
    if rec is not None and rec.closed:
        rec = None
    cid = None
    if rec is not None:
        try:
            cid = _record_bucket(rec, state, bucket)  # before the hook divides the buffer
        except Exception:
            cid = None
    same_thread = rec is not None and threading.get_ident() == rec.thread
    with rec.quiet() if same_thread else nullcontext():
        fut = state["hook"](state["state"], bucket)
    if cid is None:
        return fut

    def done(f, rec_ref=weakref.ref(rec), cid=cid):
        value = f.value()
        r = rec_ref()
        if r is not None:
            try:
                t = value[0] if isinstance(value, (list, tuple)) else value
                # read when the graph is built: reading it here would wait for the device
                r.records.collectives[cid]["reduced"] = _stats.compute(t)
            except Exception:
                pass
        return value

    return fut.then(done)


def _record_bucket(rec, state, bucket):
    rank, world = _dist_position()
    pg = state.get("pg")
    try:
        world = pg.size() if pg is not None else world
    except Exception:
        pass
    params = list(bucket.parameters())
    names = state["names"]
    same_thread = threading.get_ident() == rec.thread
    with rec.quiet() if same_thread else nullcontext():
        buf = bucket.buffer()
        return rec.add_collective({
            "op": "allreduce",
            "bucket": int(bucket.index()),
            "numel": int(buf.numel()),
            "dtype": str(buf.dtype).replace("torch.", ""),
            "params": [names.get(id(p), f"param{i}") for i, p in enumerate(params)],
            "world_size": int(world),
            "rank": int(rank),
            "hook": getattr(state["hook"], "__name__", repr(state["hook"])),
            "local": _stats.compute(buf),  # finalized when the graph is built
        }, params)
