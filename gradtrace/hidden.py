"""Running the recorder's own torch work out of the user's sight.

What the recorder reads (metadata) and computes (statistics, value copies) must
not reach the user's torch function modes, Tensor subclasses, dispatch modes or
the profiler, and must not run inside a subclass's or a functorch transform's
own machinery.
"""

from __future__ import annotations

import torch

_NO_TF = torch._C.DisableTorchFunction
_NO_TD = getattr(torch._C, "_DisableTorchDispatch", None)
_profiling = getattr(torch._C._autograd, "_profiler_enabled", lambda: False)
_record_functions = getattr(torch._C._autograd, "_enable_record_function", None)
_plain_dispatch = torch.Tensor.__torch_dispatch__
_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)


class hidden:
    """``with hidden():`` torch calls inside reach no user mode, subclass hook or
    profiler."""

    __slots__ = ("_tf", "_td", "_rf")

    def __enter__(self):
        self._tf = _NO_TF()
        self._tf.__enter__()
        self._td = _NO_TD() if _NO_TD is not None else None
        if self._td is not None:
            self._td.__enter__()
        self._rf = _record_functions is not None and _profiling()
        if self._rf:
            _record_functions(False)
        return self

    def __exit__(self, et, ev, tb):
        if self._rf:
            _record_functions(True)
        if self._td is not None:
            self._td.__exit__(None, None, None)
        self._tf.__exit__(None, None, None)
        return False


no_function_modes = _NO_TF


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
