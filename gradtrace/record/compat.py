"""What differs between the torch versions gradtrace supports (2.4 and newer).

Each name here answers one question the recorder asks, the same way on every
version: how to call a torch function once more without re-entering
``__torch_function__``, whether torch is compiling or JIT-tracing, whether
saved-tensor hooks are active, whether ``torch.autograd.backward`` reaches a
function mode at all.
"""

from __future__ import annotations

import threading
import types

import torch

__all__ = [
    "AUTOGRAD_BACKWARD_DISPATCHES", "TORCH", "any_autocast", "autocast_state", "is_compiling", "jit_tracing_state",
    "redispatch_by_copy", "redispatch_function", "saved_hooks_patches", "saved_tensors_hooks_active",
    "saved_tensors_hooks_owner",
    "torch_is_building", "torch_is_busy",
]


def _release(v: str) -> tuple:
    parts = []
    for p in v.split("+")[0].split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


TORCH = _release(torch.__version__)

# torch.autograd.backward asks for __torch_function__ from torch 2.11 on; before
# that a direct call is invisible to a mode, so the trace patches it.
AUTOGRAD_BACKWARD_DISPATCHES = TORCH >= (2, 11)

_TF_CHECKS = ("has_torch_function", "has_torch_function_unary", "has_torch_function_variadic")
_copies: dict = {}


def _no_dispatch_copy(func):
    """Return a copy of the Python function ``func`` whose ``has_torch_function*``
    checks answer False: its body runs once more with every mode still active for
    the calls it makes, without handing itself to ``__torch_function__`` again."""
    f = _copies.get(func)
    if f is None:
        g = dict(func.__globals__)
        for name in _TF_CHECKS:
            if name in g:
                g[name] = _false
        f = types.FunctionType(func.__code__, g, func.__name__, func.__defaults__, func.__closure__)
        f.__kwdefaults__ = func.__kwdefaults__
        _copies[func] = f
    return f


def _false(*args, **kwargs):
    return False


def redispatch_by_copy(func, types_, args, kwargs):
    """Call ``func`` past one level of ``__torch_function__`` (torch before 2.13, which
    has no ``redispatch_function``); return what it returned."""
    return _no_dispatch_copy(getattr(func, "__func__", func))(*args, **kwargs)


# Call ``func`` skipping one level of __torch_function__ (public from torch 2.13;
# earlier releases have no such entry point, so a copy of the function runs).
redispatch_function = getattr(torch.overrides, "redispatch_function", None) or redispatch_by_copy

try:
    is_compiling = torch.compiler.is_compiling
except AttributeError:  # pragma: no cover - older releases
    import torch._dynamo

    is_compiling = torch._dynamo.is_compiling

jit_tracing_state = torch._C._get_tracing_state

_fast_tls = None  # the compile context's thread-local, where it can be read directly
try:
    from torch._guards import CompileContext as _CompileContext

    _compile_context = _CompileContext.try_get
    from torch._guards import _TLS as _guards_tls

    if isinstance(_guards_tls, threading.local) and "try_get" in vars(_CompileContext):
        # CompileContext.try_get() is getattr(_TLS, "compile_context", None): the
        # AttributeError it raises and swallows outside compilation costs a
        # microsecond on every op. The thread's own dict answers the same.
        _fast_tls = _guards_tls

        def _compile_context():
            return _guards_tls.__dict__.get("compile_context")
except Exception:  # pragma: no cover - a torch without Dynamo
    def _compile_context():
        return None


if _fast_tls is not None:
    # The recorder asks on every op, module call and backward hook: one Python call each.
    def torch_is_building() -> bool:
        """True while a compile context is open (AOT autograd on fake tensors: before 2.5
        its calls reach function modes) or ``torch.jit.trace`` records."""
        return _fast_tls.__dict__.get("compile_context") is not None or jit_tracing_state() is not None

    def torch_is_busy() -> bool:
        """True while torch compiles or JIT-traces: the recorder must do nothing then, or
        its own calls would become part of what torch builds."""
        return (is_compiling() or _fast_tls.__dict__.get("compile_context") is not None
                or jit_tracing_state() is not None)
else:  # pragma: no cover - older releases
    def torch_is_building() -> bool:
        """True while a compile context is open (AOT autograd on fake tensors: before 2.5
        its calls reach function modes) or ``torch.jit.trace`` records."""
        return _compile_context() is not None or jit_tracing_state() is not None

    def torch_is_busy() -> bool:
        """True while torch compiles or JIT-traces: the recorder must do nothing then, or
        its own calls would become part of what torch builds."""
        return is_compiling() or torch_is_building()


_top_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)


_pushed = threading.local()  # before torch 2.8: saved-tensor hooks pushed while tracing


def saved_tensors_hooks_active() -> bool:
    """True when saved-tensor hooks (``saved_tensors_hooks``, ``checkpoint``,
    ``save_on_cpu``) would pack what autograd saves now: reading such a saved
    tensor back would run the user's unpack hook."""
    if _top_hooks is None:  # torch before 2.8 cannot say: count what the trace saw pushed
        return getattr(_pushed, "depth", 0) > 0
    return _top_hooks(True) is not None


def saved_tensors_hooks_owner():
    """The module of the innermost saved-tensor pack hook active now
    (``torch.utils.checkpoint``, ``torch.autograd.graph`` for ``save_on_cpu``, or the
    program's own), or None."""
    try:
        if _top_hooks is None:
            stack = getattr(_pushed, "stack", None)
            pack = stack[-1] if stack else None
        else:
            top = _top_hooks(True)
            pack = top[0] if top else None
        return getattr(pack, "__module__", None) if pack is not None else None
    except Exception:
        return None


def saved_hooks_patches() -> list:
    """``(object, name, replacement)`` patches that count pushes of saved-tensor hooks,
    where torch has no ``_top_saved_tensors_default_hooks`` to ask (before 2.8)."""
    if _top_hooks is not None:
        return []
    ag = torch._C._autograd
    push, pop = ag._push_saved_tensors_default_hooks, ag._pop_saved_tensors_default_hooks

    def push_counted(*args, **kwargs):
        out = push(*args, **kwargs)
        _pushed.depth = getattr(_pushed, "depth", 0) + 1
        stack = getattr(_pushed, "stack", None)
        if stack is None:
            stack = _pushed.stack = []
        stack.append(args[0] if args else kwargs.get("pack_hook"))
        return out

    def pop_counted(*args, **kwargs):
        out = pop(*args, **kwargs)
        _pushed.depth = max(getattr(_pushed, "depth", 0) - 1, 0)
        stack = getattr(_pushed, "stack", None)
        if stack:
            stack.pop()
        return out

    return [(ag, "_push_saved_tensors_default_hooks", push_counted),
            (ag, "_pop_saved_tensors_default_hooks", pop_counted)]


def _any_autocast_fallback() -> bool:
    for dev in ("cpu", "cuda"):
        try:
            if torch.is_autocast_enabled(dev):
                return True
        except Exception:  # torch 2.4 takes no device argument
            return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()
    return False


# One C call answering "is autocast on for any device?" (where torch has it): the
# recorder asks it for every op, and the per-device state only when it says yes.
any_autocast = getattr(torch._C, "_is_any_autocast_enabled", _any_autocast_fallback)

_AUTOCAST_DEVICES = ["cpu", "cuda", "xpu", "mps", "hpu", "mtia", "xla"]


def _autocast_of(dev: str):
    try:
        return torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)
    except Exception:  # torch 2.4 asks per device by name
        if dev == "cpu":
            return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        if dev == "cuda":
            return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
        raise


def autocast_state() -> dict:
    """Return ``{device_type: torch dtype}`` of the autocast regions enabled now."""
    out = {}
    for dev in list(_AUTOCAST_DEVICES):
        try:
            on, dtype = _autocast_of(dev)
        except Exception:  # a device type this build does not know
            _AUTOCAST_DEVICES.remove(dev)
            continue
        if on:
            out[dev] = dtype
    return out
