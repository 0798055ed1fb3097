"""Moving the recorder within this thread's stack of torch function modes.

A mode the user entered keeps its place: the recorder goes under it for a
backward call (so the user's mode sees that call as it would untraced), and
comes off the stack from wherever it is when tracing ends.
"""

from __future__ import annotations

from torch._C import _len_torch_function_stack as _depth
from torch._C import _pop_torch_function_stack as _pop
from torch._C import _push_on_torch_function_stack as _push

__all__ = ["depth", "on_top", "push", "push_at", "push_under", "remove", "remove_top", "sweep"]


def push_under(mode):
    """Put ``mode`` at the bottom of the stack, below every mode now on it."""
    above = []
    try:
        while _depth() > 0:
            above.append(_pop())
        _push(mode)
    finally:
        for m in reversed(above):
            _push(m)


def depth() -> int:
    """How many function modes are on this thread's stack."""
    return _depth()


def push_at(mode, level: int) -> None:
    """Put ``mode`` at position ``level`` of the stack (0: the bottom), below the modes
    entered since the stack was that deep: their ``with`` blocks pop themselves, not it."""
    above = []
    try:
        while _depth() > max(level, 0):
            above.append(_pop())
        _push(mode)
    finally:
        for m in reversed(above):
            _push(m)


def push(mode) -> None:
    """Put ``mode`` on top of the stack (what ``with mode:`` does on entry)."""
    _push(mode)


def remove_top(mode) -> bool:
    """Take the innermost entry of ``mode`` off the stack, leaving every other mode
    where it is (what ``with mode:`` does on exit, without raising when a signal has
    already taken it off); return whether it was there."""
    above = []
    found = False
    try:
        while _depth() > 0:
            m = _pop()
            if m is mode:
                found = True
                break
            above.append(m)
        return found
    finally:
        for m in reversed(above):
            _push(m)


def remove(mode) -> bool:
    """Take every entry of ``mode`` off the stack, wherever it is (a signal landing
    between a push and its ``with`` block can leave one more); return whether it
    was there."""
    return sweep(lambda m: m is mode) > 0


def sweep(dead) -> int:
    """Take every mode for which ``dead(mode)`` is true off the stack; return how many."""
    kept, n = [], 0
    try:
        while _depth() > 0:
            m = _pop()
            if dead(m):
                n += 1
            else:
                kept.append(m)
        return n
    finally:
        for m in reversed(kept):
            _push(m)


def on_top(mode) -> bool:
    """True when ``mode`` is the innermost active function mode."""
    from torch._C import _get_function_stack_at

    n = _depth()
    return n > 0 and _get_function_stack_at(n - 1) is mode
