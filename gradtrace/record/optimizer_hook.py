"""One hook in torch's global optimizer-step post hooks for all of gradtrace.

torch walks its dict of global hooks while it calls them, so a hook that adds or
removes one (a ``--steps`` window that starts a recording, with its own listeners, at
the end of a step) would break the program's ``opt.step()`` with "OrderedDict mutated
during iteration". Whatever in gradtrace hears optimizer steps listens here instead:
listeners join and leave a list of ours, and torch's dict changes only when no step is
being heard. A listener that joins while a step is heard first hears the next one.
"""

from __future__ import annotations

import threading

from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["listen"]

_listeners: list = []  # [fn, last, listening]
_lock = threading.Lock()
_hearing = 0  # optimizer steps being heard now, on any thread
_handle = None  # torch's handle of our hook, while anyone listens


def listen(fn, *, last: bool = False):
    """Call ``fn(optimizer, args, kwargs)`` at the end of every optimizer step, after
    the listeners that did not ask for ``last``; returns the function that stops it."""
    global _handle
    entry = [fn, last, True]
    with _lock:
        if last:
            _listeners.append(entry)
        else:
            at = next((i for i, e in enumerate(_listeners) if e[1]), len(_listeners))
            _listeners.insert(at, entry)
        if _handle is None and not _hearing:
            _handle = register_optimizer_step_post_hook(_heard)

    def stop() -> None:
        global _handle
        with _lock:
            if not entry[2]:
                return
            entry[2] = False
            _listeners.remove(entry)
            if not _listeners and not _hearing and _handle is not None:
                _handle.remove()
                _handle = None

    return stop


def _heard(optimizer, args, kwargs) -> None:
    global _hearing
    with _lock:
        _hearing += 1
        listeners = tuple(_listeners)
    try:
        for entry in listeners:
            if entry[2]:  # one that left during this step (a window closing) hears no more
                entry[0](optimizer, args, kwargs)
    finally:
        with _lock:
            _hearing -= 1
