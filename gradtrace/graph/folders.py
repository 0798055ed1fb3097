"""Where traces lie on disk: a trace folder (a ``trace.json`` of its own) and a
multi-rank folder, one ``rank<k>`` trace folder per rank of a launched run (what
``gradtrace run`` writes under torchrun, and ``gradtrace replay`` for ``ddp:N``)."""

from __future__ import annotations

import re
from pathlib import Path

from .io import TRACE_FILE

__all__ = ["is_trace_folder", "rank_folder", "rank_folders"]

_RANK_DIR = re.compile(r"^rank(\d+)$")


def rank_folder(out, rank: int) -> Path:
    """Return the folder rank ``rank`` writes under ``out``: ``out/rank<rank>``."""
    return Path(out) / f"rank{int(rank)}"


def is_trace_folder(path) -> bool:
    """Return True for a folder with a ``trace.json`` of its own (or a ``trace.json`` file)."""
    p = Path(path)
    return (p / TRACE_FILE).is_file() if p.is_dir() else p.is_file()


def rank_folders(path) -> dict[int, Path]:
    """Return the ``rank<k>`` subfolders of ``path`` that hold a ``trace.json``, by rank,
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
