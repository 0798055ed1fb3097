"""Data-parallel runs on disk: one trace folder per rank.

Under a launcher (``torchrun``, ``python -m torch.distributed.run``: ``RANK`` and
``WORLD_SIZE`` in the environment) ``gradtrace run -o OUT`` writes each rank's trace
to ``OUT/rank<k>/``. The same layout is what ``gradtrace replay`` writes for a
``ddp:N`` target. Such a folder is found by :mod:`gradtrace.graph.folders` and read
here::

    >>> from gradtrace.ranks import load_ranks
    >>> traces = load_ranks("gradtrace-out/train")     # {0: Trace, 1: Trace, ...}
    >>> traces[1].graph.graph["rank"], traces[1].graph.graph["world_size"]
    (1, 2)

A folder with a ``trace.json`` of its own is one trace (``load_ranks`` gives
``{its rank: trace}``); a folder without one whose ``rank<k>`` subfolders hold
traces is a multi-rank folder; anything else raises :class:`gradtrace.TraceError`
with a one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path

from .graph.folders import is_trace_folder, rank_folder, rank_folders
from .graph.head import read_head
from .graph.io import TRACE_FILE, TraceError, check_path, load_graph
from .trace import load

__all__ = ["launcher_position", "load_rank", "load_ranks", "missing_ranks", "rank_path"]


def launcher_position(environ=None) -> tuple[int, int] | None:
    """Return ``(rank, world_size)`` when this process was started by a launcher that
    sets ``RANK`` and ``WORLD_SIZE`` (torchrun, ``torch.distributed.run``), else None.

    Raises :class:`ValueError` (one line) when they are set but make no sense."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except ValueError:
        raise ValueError(f"RANK={env['RANK']!r} and WORLD_SIZE={env['WORLD_SIZE']!r} in the environment "
                         "are not integers") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} in the environment: the rank must be in "
                         f"0..WORLD_SIZE-1")
    return rank, world


def _ranks_text(ranks) -> str:
    return ", ".join(str(k) for k in ranks)


def _not_a_trace(path) -> TraceError:
    p = Path(path)
    if not p.exists():
        return TraceError(f"{path}: no such trace folder or file")
    return TraceError(f"{path}: not a gradtrace trace (no {TRACE_FILE} in it, and no rank<k> folders with one)")


def load_ranks(path) -> dict:
    """Load a trace folder or a multi-rank folder; return ``{rank: gradtrace.Trace}``.

    A multi-rank folder gives one entry per ``rank<k>`` subfolder (keyed by ``k``);
    a single trace folder gives ``{its rank: trace}`` (0 for a run that was not
    distributed). Raises :class:`gradtrace.TraceError` (one line) for a folder that
    is neither, or for a rank whose trace cannot be read."""
    check_path(path)
    folders = rank_folders(path)
    if folders:
        return {k: load(d) for k, d in folders.items()}
    if not is_trace_folder(path):
        raise _not_a_trace(path)
    t = load(path)
    return {int(t.meta.get("rank") or 0): t}


def rank_path(path, rank: int | None = None) -> Path:
    """Return the folder of one trace in ``path``, a trace folder or a multi-rank folder.

    ``rank=None`` asks for the only trace there is: a multi-rank folder with several
    ranks raises :class:`gradtrace.TraceError` naming them. With ``rank``, a
    multi-rank folder gives that rank's folder and a single trace folder must be of
    that rank (read from the head of its trace)."""
    check_path(path)
    folders = rank_folders(path)
    if folders:
        if rank is None:
            if len(folders) == 1:
                return Path(next(iter(folders.values())))
            raise TraceError(f"{path} holds the traces of ranks {_ranks_text(folders)}: pick one with --rank N "
                             f"(or use {rank_folder(path, next(iter(folders)))})")
        if rank not in folders:
            raise TraceError(f"{path} has no trace for rank {rank} (it has ranks {_ranks_text(folders)})")
        return Path(folders[rank])
    if not is_trace_folder(path):
        raise _not_a_trace(path)
    if rank is not None:
        meta = read_head(path) or load_graph(path).graph
        have = int(meta.get("rank") or 0)
        if rank != have:
            raise TraceError(f"{path} is the trace of rank {have} only; --rank {rank} does not apply")
    return Path(path)


def load_rank(path, rank: int | None = None):
    """Load one trace from a trace folder or a multi-rank folder (chosen as
    :func:`rank_path` chooses) and return it."""
    return load(rank_path(path, rank))


def missing_ranks(traces: dict) -> list[int]:
    """Return the ranks below the recorded world size that have no trace in ``traces``
    (``{rank: Trace}``), e.g. a rank that was killed before it wrote its folder."""
    world = max((int(t.meta.get("world_size") or 1) for t in traces.values()), default=1)
    return [k for k in range(world) if k not in traces]
