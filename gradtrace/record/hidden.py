"""Running the recorder's own torch work out of the user's sight.

What the recorder reads (metadata) and computes (statistics, value copies) must
not reach the user's torch function modes, Tensor subclasses, dispatch modes or
the profiler, and must not run inside a subclass's or a functorch transform's
own machinery.
"""

from __future__ import annotations

import contextlib
import threading

import torch

__all__ = ["close_open_blocks", "hidden", "is_plain", "out_of_sight", "restore_thread_state", "thread_state",
           "unobserved"]

_NO_TF = torch._C.DisableTorchFunction
_NO_TD = getattr(torch._C, "_DisableTorchDispatch", None)
_profiling = getattr(torch._C._autograd, "_profiler_enabled", lambda: False)
_record_functions = getattr(torch._C._autograd, "_enable_record_function", None)
_plain_dispatch = torch.Tensor.__torch_dispatch__
_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
_tf_enabled = torch._C._is_torch_function_enabled
_tf_all_off = getattr(torch._C, "_is_torch_function_all_disabled", None)  # torch 2.5 and later
_tf_modes = torch._C._len_torch_function_stack
_td_modes = torch._C._len_torch_dispatch_stack
_included = torch._C._dispatch_tls_is_dispatch_key_included
_PRE_DISPATCH = getattr(torch._C.DispatchKey, "PreDispatch", None)


_local = threading.local()  # .blocks: this thread's hidden blocks entered and not yet exited


def _blocks() -> list:
    b = getattr(_local, "blocks", None)
    if b is None:
        b = _local.blocks = []
    return b


class hidden:
    """``with hidden():`` torch calls inside reach no user mode, subclass hook or
    profiler."""

    __slots__ = ("_tf", "_td", "_rf")

    def __enter__(self):
        # A signal's KeyboardInterrupt can land between any two lines here, and a
        # with block whose __enter__ raised never runs __exit__: what was switched
        # off is switched back on before the exception goes on. One landing on the
        # first line of __exit__ (Python checks for signals there) leaves the block
        # open: the list of open blocks lets the trace close it as it ends
        # (close_open_blocks).
        self._tf = self._td = None
        self._rf = False
        _blocks().append(self)
        try:
            # Each guard is held before it is entered: one entered but not held would
            # restore what it found whenever its frame is freed, long after.
            self._tf = tf = _NO_TF()
            tf.__enter__()
            if _NO_TD is not None:
                self._td = td = _NO_TD()
                td.__enter__()
            if _record_functions is not None and _profiling():
                _record_functions(False)
                self._rf = True
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, et, ev, tb):
        try:
            if self._rf:
                self._rf = False
                _record_functions(True)
        finally:
            try:
                if self._td is not None:
                    td, self._td = self._td, None
                    try:
                        td.__exit__(None, None, None)
                    except Exception:  # never entered (the interrupt came first)
                        pass
            finally:
                if self._tf is not None:
                    tf, self._tf = self._tf, None
                    tf.__exit__(None, None, None)
                blocks = _blocks()
                if blocks and blocks[-1] is self:
                    blocks.pop()
                elif self in blocks:
                    blocks.remove(self)
        return False


def unobserved() -> bool:
    """True when a torch call made now on a plain tensor (:func:`is_plain`) reaches no
    function or dispatch mode, no subclass's handler and no profiler: all that
    :class:`hidden` would switch off is off already (the per-op path reads its
    results with function modes disabled), so the recorder may skip entering it."""
    return (not _tf_enabled() and (_tf_modes() == 0 or (_tf_all_off is not None and _tf_all_off()))
            and _td_modes() == 0 and not _profiling()
            and (_PRE_DISPATCH is None or not _included(_PRE_DISPATCH)))


_NOTHING = contextlib.nullcontext()


def out_of_sight():
    """A block for the recorder's torch work on plain tensors: :class:`hidden`, or one
    that does nothing where nothing would see that work (:func:`unobserved`)."""
    return _NOTHING if unobserved() else hidden()


def close_open_blocks() -> int:
    """Exit, innermost first, the hidden blocks of this thread that an interrupt left
    open; return how many. Called where none of the recorder's blocks can be running
    (a trace ending): each block's guards then restore the state they found, rather
    than their destructors doing so at some later garbage collection."""
    blocks = _blocks()
    n = 0
    while blocks:
        blocks[-1].__exit__(None, None, None)
        n += 1
    return n


no_function_modes = _NO_TF

# The dispatch keys torch._C._DisableTorchDispatch excludes while it is entered.
_PYTHON_KEYS = tuple(getattr(torch._C.DispatchKey, k) for k in ("Python", "PythonTLSSnapshot", "PreDispatch")
                     if hasattr(torch._C.DispatchKey, k))


def thread_state() -> tuple:
    """What :class:`hidden` switches off, as it stands now in this thread: whether
    torch functions reach modes and subclasses, and which Python dispatch keys are
    excluded."""
    return (torch._C._is_torch_function_enabled(),
            tuple(torch._C._dispatch_tls_is_dispatch_key_excluded(k) for k in _PYTHON_KEYS))


def restore_thread_state(before: tuple) -> bool:
    """Switch back on what was on at ``before`` (:func:`thread_state`) and is off now;
    return whether anything was. A KeyboardInterrupt landing on the first line of
    ``hidden.__exit__`` (Python checks for signals there) leaves torch functions off
    for the rest of the thread's life; the trace that ran the block calls this as it
    ends, when the user's state is the one it started with."""
    fixed = close_open_blocks() > 0
    tf_before, keys_before = before
    tf_now, keys_now = thread_state()
    if tf_before and not tf_now:
        _NO_TF().__exit__(None, None, None)  # a guard never entered restores "enabled"
        fixed = True
    for k, was, now in zip(_PYTHON_KEYS, keys_before, keys_now):
        if now and not was:
            torch._C._dispatch_tls_set_dispatch_key_excluded(k, False)
            fixed = True
    return fixed


def is_plain(t) -> bool:
    """True when ``t`` is a tensor whose values the recorder may compute on directly:
    not a subclass with its own dispatch, not a functorch wrapper (vmap, grad)."""
    cls = type(t)
    if cls is not torch.Tensor and getattr(cls, "__torch_dispatch__", _plain_dispatch) is not _plain_dispatch:
        return False
    try:
        return not (_wrapped is not None and _wrapped(t)) and not t.is_nested
    except Exception:
        return False
