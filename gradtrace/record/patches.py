"""What ``__torch_function__`` cannot see, patched into torch while any trace runs.

``torch.from_numpy`` and ``inference_mode`` never reach a function mode, nor DDP's
construction, nor (before torch 2.11) a direct ``torch.autograd.backward`` call.
The patches are installed once for the whole process when the first trace
starts and removed when the last one ends; each routes the call to the
recorder of the calling thread, so that two threads tracing at once each see
their own calls and neither leaves anything behind.
"""

from __future__ import annotations

import sys
import threading

import torch

from . import compat, modestack, ops, source
from .modules import ModuleStack

__all__ = ["active", "attach", "current", "detach"]

_lock = threading.Lock()
_recorders: dict = {}  # thread id -> the recorders tracing on that thread, the innermost last
_undo: list = []  # (object, attribute, original), in the order patched


def current():
    """Return the recorder tracing on the calling thread (the innermost of nested
    traces: the outer ones are paused while it runs), or None."""
    recs = _recorders.get(threading.get_ident())
    return recs[-1] if recs else None


def attach(rec):
    """Route the patched calls of ``rec``'s thread to ``rec``; patch torch if no
    other trace is running."""
    with _lock:
        if not _recorders:
            try:
                _install()
            except Exception:
                _uninstall()
                raise
        _recorders.setdefault(rec.thread, []).append(rec)


def detach(rec):
    """Stop routing to ``rec``; restore torch when it was the last trace."""
    with _lock:
        recs = _recorders.get(rec.thread)
        if recs is not None and rec in recs:
            recs.remove(rec)
            if not recs:
                del _recorders[rec.thread]
        if not _recorders:
            _uninstall()


def active() -> int:
    """How many traces are running now (in any thread)."""
    return sum(len(recs) for recs in _recorders.values())


_MISSING = object()


def _set(obj, name, value):
    _undo.append((obj, name, obj.__dict__.get(name, _MISSING) if isinstance(obj, type) else getattr(obj, name)))
    setattr(obj, name, value)


def _uninstall():
    while _undo:
        obj, name, orig = _undo.pop()
        if orig is _MISSING:
            delattr(obj, name)
        else:
            setattr(obj, name, orig)


def _install():
    orig_from_numpy = torch.from_numpy

    def from_numpy(ndarray):
        rec = current()
        if rec is None:
            return orig_from_numpy(ndarray)
        return rec.from_numpy(orig_from_numpy, ndarray)

    from_numpy.__doc__ = orig_from_numpy.__doc__
    _set(torch, "from_numpy", from_numpy)

    im = torch.autograd.grad_mode.inference_mode
    enter, exit_ = im.__enter__, im.__exit__

    def __enter__(self_):
        out = enter(self_)
        if source.called_by_user(2) and not compat.torch_is_busy():  # not torch's own use
            _grad_mode(self_.mode)
        return out

    def __exit__(self_, *exc):
        out = exit_(self_, *exc)
        if source.called_by_user(2) and not compat.torch_is_busy():
            _grad_mode("exit")
        return out

    _set(im, "__enter__", __enter__)
    _set(im, "__exit__", __exit__)

    if not compat.AUTOGRAD_BACKWARD_DISPATCHES:
        _patch_autograd_backward()
    for obj, name, value in compat.saved_hooks_patches():
        _set(obj, name, value)

    from torch.nn.modules import module as _module

    if hasattr(_module, "_has_any_global_hook"):
        _set(_module, "_has_any_global_hook", _has_a_users_global_hook)

    if "torch._dynamo.eval_frame" in sys.modules:
        _patch_compiled_calls()
    else:  # importing Dynamo costs seconds: wait until the program compiles something
        orig_compile = torch.compile

        def compile(*args, **kwargs):
            if _recorders and not _compiled_calls_patched():
                with _lock:
                    if _recorders and not _compiled_calls_patched():
                        _patch_compiled_calls()
            return orig_compile(*args, **kwargs)

        compile.__doc__, compile.__wrapped__ = orig_compile.__doc__, orig_compile
        _set(torch, "compile", compile)

    from . import distributed, scaler

    for obj, name, value in distributed.install(current) + scaler.install(current):
        _set(obj, name, value)


def _grad_mode(arg):
    rec = current()
    if rec is None:
        return
    try:
        with torch._C.DisableTorchFunction():
            rec.grad_mode_changed("torch.inference_mode", arg)
    except Exception as e:
        rec.note_unknown("grad mode", e)


def _patch_autograd_backward():
    """Before torch 2.11 ``torch.autograd.backward`` does not ask for
    ``__torch_function__``: hand a direct call to the recorder as a mode would."""
    orig = torch.autograd.backward
    spec = ops.Spec("torch.autograd.backward", ops.BACKWARD)

    def backward(*args, **kwargs):
        rec = current()
        if rec is None or rec.is_quiet() or rec.backward.current is not None or not modestack.on_top(rec):
            return orig(*args, **kwargs)  # Tensor.backward's own inner call, or untraced
        with torch.overrides._pop_mode_temporarily():  # as torch does before __torch_function__
            return rec.run_backward(orig, spec, args, kwargs)

    backward.__doc__ = orig.__doc__
    backward.__wrapped__ = orig
    _set(torch.autograd, "backward", backward)


_wrapper_code = None


def _compiled_calls_patched() -> bool:
    return any(name == "enter_exit_hooks" for _, name, _ in _undo)


def _patch_compiled_calls():
    try:
        _patch_compile_wrappers()
    except Exception:  # a torch whose Dynamo is laid out otherwise: compiled code is
        pass  # then left to the recorder's compile checks


def _patch_compile_wrappers():
    """Every call of a ``torch.compile``d function or module runs through its
    wrapper's ``enter_exit_hooks``: there the recorder steps off the mode stack for
    the call (the compiled code runs, and is cached, exactly as untraced) and
    records the call as one op. A property on the class reaches wrappers made
    before the trace began too."""
    import torch._dynamo.eval_frame as ef

    ctx = ef._TorchDynamoContext
    optimize = getattr(ef, "OptimizeContext", ctx)
    global _wrapper_code
    if _wrapper_code is None:
        # The code of every compile wrapper (nothing is compiled until it is called).
        _wrapper_code = getattr(torch.compile, "__wrapped__", torch.compile)(_nothing, backend="eager").__code__
    wrapper_code = _wrapper_code

    def enter():
        rec = current()
        if rec is None or rec.is_quiet() or compat.torch_is_busy() or not modestack.on_top(rec):
            return _nothing
        torch._C._pop_torch_function_stack()
        f = sys._getframe(1)
        while f is not None and f.f_code is not wrapper_code:
            f = f.f_back
        call = rec.compiled_call_begin(f.f_locals if f is not None else {})

        def cleanup():
            result = sys._getframe(1).f_locals.get("result", _MISSING)  # torch 2.13 and newer
            torch._C._push_on_torch_function_stack(rec)
            rec.compiled_call_end(call, None if result is _MISSING else result)

        return cleanup

    def get(self):
        hooks = self.__dict__.get("enter_exit_hooks", [])
        return [*hooks, enter] if isinstance(self, optimize) else hooks

    def set_(self, value):
        self.__dict__["enter_exit_hooks"] = value

    _set(ctx, "enter_exit_hooks", property(get, set_))


def _nothing(*args, **kwargs):
    return None


def _has_a_users_global_hook():
    """``torch.compile(module)`` warns that global module hooks fire twice; the
    recorder's own hooks must not make it warn where it would not untraced."""
    from torch.nn.modules import module as m

    if m._global_backward_pre_hooks or m._global_backward_hooks:
        return True
    return any(not isinstance(getattr(h, "__self__", None), ModuleStack)
               for h in (*m._global_forward_pre_hooks.values(), *m._global_forward_hooks.values()))
