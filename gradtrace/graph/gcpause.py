"""A pause of the cyclic garbage collector around work that makes or reads millions of
small acyclic containers (building, saving and loading a trace graph)."""

from __future__ import annotations

import gc
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while millions of small acyclic dicts are
    made: each collection would walk them all again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if gc.get_freeze_count() == 0:
                # The graph's objects join the oldest generation without a young-
                # generation pass over each of them (a second for a 200k-op trace);
                # a program that froze objects itself is left as it is.
                gc.freeze()
                gc.unfreeze()
            gc.enable()
