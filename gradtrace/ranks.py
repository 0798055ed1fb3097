"""Data-parallel runs on disk: one trace folder per rank.

Under a launcher (``torchrun``, ``python -m torch.distributed.run``: ``RANK`` and
``WORLD_SIZE`` in the environment) ``gradtrace run -o OUT`` writes each rank's trace
to ``OUT/rank<k>/``. The same layout is what ``gradtrace replay`` writes for a
``ddp:N`` target. Here is how such a folder is found and read::

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
import re
from pathlib import Path

from .graph.io import DOT_FILE, TRACE_FILE, VALUES_FILE, TraceError, check_path

_RANK_DIR = re.compile(r"^rank(\d+)$")
# What ``gradtrace run`` writes into a trace folder (report.write_run_outputs).
RUN_FILES = (TRACE_FILE, VALUES_FILE, DOT_FILE, "graph.svg", "graph.html")


def launcher_position(environ=None) -> tuple[int, int] | None:
    """``(rank, world_size)`` when this process was started by a launcher that sets
    ``RANK`` and ``WORLD_SIZE`` (torchrun, ``torch.distributed.run``), else None.

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


def rank_folder(out, rank: int) -> Path:
    """The folder rank ``rank`` writes under ``out``: ``out/rank<rank>``."""
    return Path(out) / f"rank{int(rank)}"


def is_trace_folder(path) -> bool:
    """True for a folder with a ``trace.json`` of its own (or a ``trace.json`` file)."""
    p = Path(path)
    return (p / TRACE_FILE).is_file() if p.is_dir() else p.is_file()


def rank_folders(path) -> dict[int, Path]:
    """The ``rank<k>`` subfolders of ``path`` that hold a ``trace.json``, by rank,
    in rank order; ``{}`` when there are none (or ``path`` is a trace itself)."""
    p = Path(path)
    if not p.is_dir() or is_trace_folder(p):
        return {}
    found = {}
    for d in p.iterdir():
        m = _RANK_DIR.match(d.name)
        if m and (d / TRACE_FILE).is_file():
            found[int(m.group(1))] = d
    return dict(sorted(found.items()))


def is_multi_rank(path) -> bool:
    """True for a folder of ``rank<k>`` trace folders (and no trace of its own)."""
    return bool(rank_folders(path))


def _ranks_text(ranks) -> str:
    return ", ".join(str(k) for k in ranks)


def _not_a_trace(path) -> TraceError:
    p = Path(path)
    if not p.exists():
        return TraceError(f"{path}: no such trace folder or file")
    return TraceError(f"{path}: not a gradtrace trace (no {TRACE_FILE} in it, and no rank<k> folders with one)")


def load_ranks(path) -> dict:
    """Load a trace folder or a multi-rank folder: ``{rank: gradtrace.Trace}``.

    A multi-rank folder gives one entry per ``rank<k>`` subfolder (keyed by ``k``);
    a single trace folder gives ``{its rank: trace}`` (0 for a run that was not
    distributed). Raises :class:`gradtrace.TraceError` (one line) for a folder that
    is neither, or for a rank whose trace cannot be read."""
    from .trace import load

    check_path(path)
    folders = rank_folders(path)
    if folders:
        return {k: load(d) for k, d in folders.items()}
    if not is_trace_folder(path):
        raise _not_a_trace(path)
    t = load(path)
    return {int(t.meta.get("rank") or 0): t}


def load_rank(path, rank: int | None = None):
    """Load one trace from a trace folder or a multi-rank folder.

    ``rank=None`` asks for the only trace there is: a multi-rank folder with several
    ranks raises :class:`gradtrace.TraceError` naming them. With ``rank``, a
    multi-rank folder gives that rank's trace and a single trace folder must be of
    that rank."""
    from .trace import load

    check_path(path)
    folders = rank_folders(path)
    if folders:
        if rank is None:
            if len(folders) == 1:
                return load(next(iter(folders.values())))
            raise TraceError(f"{path} holds the traces of ranks {_ranks_text(folders)}: pick one with --rank N "
                             f"(or use {rank_folder(path, next(iter(folders)))})")
        if rank not in folders:
            raise TraceError(f"{path} has no trace for rank {rank} (it has ranks {_ranks_text(folders)})")
        return load(folders[rank])
    if not is_trace_folder(path):
        raise _not_a_trace(path)
    t = load(path)
    have = int(t.meta.get("rank") or 0)
    if rank is not None and rank != have:
        raise TraceError(f"{path} is the trace of rank {have} only; --rank {rank} does not apply")
    return t


def missing_ranks(traces: dict) -> list[int]:
    """The ranks below the recorded world size that have no trace in ``traces``
    (``{rank: Trace}``), e.g. a rank that was killed before it wrote its folder."""
    world = max((int(t.meta.get("world_size") or 1) for t in traces.values()), default=1)
    return [k for k in range(world) if k not in traces]


def clear_single_trace(out) -> list[Path]:
    """Remove the files of a single-process trace from ``out`` (what ``gradtrace run``
    wrote there before); return what was removed. A folder with a ``trace.json`` of
    its own is read as one trace, so without this an earlier single-process run
    would hide the rank folders a launched run writes beside it."""
    removed = []
    for name in RUN_FILES:
        f = Path(out) / name
        if f.is_file():
            f.unlink()
            removed.append(f)
    return removed
