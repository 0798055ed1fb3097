"""Where an op came from: the user's frame, and the name its result is bound to.

Both run on the recorder's per-op path, so each is a dict lookup after the first
time a code object is seen: no ``inspect.stack()``, no source reading.
"""

from __future__ import annotations

import dis
import os
import sys
import sysconfig
import types

import torch

_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_STDLIB = os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep
_SITE = ("site-packages", "dist-packages")

# Caches keyed by id(code), each entry holding its code object (so the id is not
# reused while cached): hashing a code object hashes its constants, nested code
# included, every time: tens of microseconds for a long script's module code.
# id(code) -> (code, True when its frames belong to torch, gradtrace or the stdlib)
_internal: dict[int, tuple] = {}
# id(code) -> (code, {instruction offset: name or tuple of names the result is stored to})
_stores: dict[int, tuple] = {}


def _internal_code(code) -> bool:
    """True when frames of ``code`` belong to torch, gradtrace or the stdlib (cached)."""
    e = _internal.get(id(code))
    if e is None or e[0] is not code:
        e = _internal[id(code)] = (code, _is_internal(code.co_filename))
    return e[1]

_STORE_OPS = {"STORE_NAME", "STORE_FAST", "STORE_GLOBAL", "STORE_DEREF", "STORE_ATTR"}


def _is_internal(filename: str) -> bool:
    # "<eval_with_key>": code torch.fx generated (a graph torch.compile runs in
    # eager mode); its ops belong to the user's line that called the compiled code.
    if filename.startswith(("<frozen", "<string>", "<eval_with_key>")):
        return True
    path = os.path.abspath(filename)
    if path.startswith(_TORCH) or path.startswith(_HERE):
        return True
    # The stdlib (contextlib, functools, copy, runpy) sits between torch and the
    # user's line; third-party packages are somebody's user code and stay visible.
    return path.startswith(_STDLIB) and not any(s in path for s in _SITE)


def user_frame(depth: int = 2):
    """Return the innermost frame of user code above the caller, or None."""
    return user_call(depth + 1)[0]


# Frames that only route a call to __torch_function__ (handle_torch_function and
# Tensor's Python-level operator wrappers): they do not make an op indirect.
_DISPATCH_FILES = (os.path.join(_TORCH, "overrides.py"), os.path.join(_TORCH, "_tensor.py"))
# id(code) -> (code, True when its frames only route a call to __torch_function__)
_dispatch: dict[int, tuple] = {}


def user_call(depth: int = 2):
    """Return ``(frame, direct)``: the innermost user frame above the caller, and
    whether the user called the op itself (also through a torch Python function
    such as ``F.relu``, which hands itself to ``__torch_function__``) rather than
    library code calling it on the user's behalf (``nn.Linear(...)`` initialising
    its weight, ``model.to(device)`` converting each parameter)."""
    f = sys._getframe(depth)
    internal = _internal
    library = 0
    dispatched = False  # the op entered __torch_function__ through handle_torch_function
    while f is not None:
        code = f.f_code
        e = internal.get(id(code))
        if e is None or e[0] is not code:
            e = internal[id(code)] = (code, _is_internal(code.co_filename))
        if not e[1]:
            return f, library == 0 or (library == 1 and dispatched)
        e = _dispatch.get(id(code))
        if e is None or e[0] is not code:
            e = _dispatch[id(code)] = (code, os.path.abspath(code.co_filename).startswith(_DISPATCH_FILES))
        if e[1]:
            dispatched = dispatched or library == 0
        else:
            library += 1
        f = f.f_back
    return None, False


_MODULE_CALL = os.path.join(_TORCH, "nn", "modules", "module.py")


def module_caller(depth: int = 2):
    """For a module's forward hook: return the frame that called the module, when it
    is user code (``out = model(x)``), else None (a container's forward calling its
    children, or any other library code)."""
    f = sys._getframe(depth)
    while f is not None:
        name = f.f_code.co_filename
        if not (name.startswith(_HERE) or name == _MODULE_CALL):
            return None if _internal_code(f.f_code) else f
        f = f.f_back
    return None


def callee_of(frame):
    """Return the frame the user's ``frame`` called into (the outermost library frame
    of the call in progress), or None when ``frame`` is not on the stack."""
    f, prev = sys._getframe(1), None
    while f is not None and f is not frame:
        prev, f = f, f.f_back
    return prev if f is not None else None


# (id(code), instruction offset) -> (code, line): ``frame.f_lineno`` scans the code's
# line table from its start on every read, ten microseconds deep into a long script.
_lines: dict[tuple, tuple] = {}


def line_of(frame) -> int:
    """Return ``frame.f_lineno``, cached per instruction (a debugger's frame, whose
    line may be set by hand, is read directly)."""
    if frame.f_trace is not None:
        return frame.f_lineno
    code = frame.f_code
    key = (id(code), frame.f_lasti)
    e = _lines.get(key)
    if e is None or e[0] is not code:
        e = _lines[key] = (code, frame.f_lineno)
    return e[1]


def _build_stores(code: types.CodeType) -> dict[int, object]:
    ins = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG", "NOP")]
    found: dict[int, object] = {}
    for k in range(len(ins) - 1):
        nxt = ins[k + 1]
        if nxt.opname in _STORE_OPS:
            name = nxt.argval
        elif nxt.opname == "UNPACK_SEQUENCE":
            name = tuple(
                ins[j].argval if ins[j].opname in _STORE_OPS else None
                for j in range(k + 2, min(k + 2 + nxt.argval, len(ins)))
            )
        else:
            continue
        # While a Python callee runs, f_lasti may point into the call's inline caches.
        for off in range(ins[k].offset, nxt.offset, 2):
            found[off] = name
    return found


def bound_name(frame) -> object:
    """Return the name (or tuple of names, for unpacking) that the value computed
    by the frame's current instruction is stored to, or None.

    The name is read from the bytecode that follows the call, so it is known
    before the assignment happens.
    """
    code = frame.f_code
    e = _stores.get(id(code))
    if e is None or e[0] is not code:
        try:
            table = _build_stores(code)
        except Exception:  # unusual bytecode must never break tracing
            table = {}
        e = _stores[id(code)] = (code, table)
    return e[1].get(frame.f_lasti)


_GRAD_MODE_FILES = ("grad_mode.py", "_contextlib.py", "contextlib.py")


def grad_mode_caller():
    """For a call to ``torch._C._set_grad_enabled``: return the name of the
    context manager the user wrote (``torch.no_grad``, ...) when user code
    asked for it, or None when torch itself switched grad mode (an optimizer)."""
    f = sys._getframe(2)
    name = None
    while f is not None and f.f_code.co_filename.endswith(_GRAD_MODE_FILES):
        if f.f_code.co_filename.endswith("grad_mode.py"):  # the outermost one is the user's
            obj = f.f_locals.get("self")
            if obj is not None:
                name = f"torch.{type(obj).__name__}"
        f = f.f_back
    if f is None:
        return None
    if _internal_code(f.f_code):
        return None
    return name or "torch.set_grad_enabled"


def called_by_user(depth: int = 2) -> bool:
    """True when the caller's caller is user code (not torch, gradtrace or the stdlib)."""
    return not _internal_code(sys._getframe(depth).f_code)


_AUTOGRAD_DIR = os.path.join(_TORCH, "autograd") + os.sep


def called_by_autograd(depth: int = 2) -> bool:
    """True when the torch call comes from torch.autograd's own Python code (the
    backward engine's set-up, not a custom Function's backward or a hook)."""
    return sys._getframe(depth).f_code.co_filename.startswith(_AUTOGRAD_DIR)


def _trampoline(func, args, kwargs):
    return func(*args, **kwargs)


def call_as_user(frame, line: int, func, args, kwargs, callers: dict):
    """Call ``func(*args, **kwargs)`` through a frame that carries the user's file,
    line and module globals, so that a warning torch raises inside the op is
    reported at the user's line and de-duplicated in the user's module, as it is
    untraced (Python attributes C-level warnings to the innermost Python frame).

    ``callers`` caches one function per (code, line); it holds the user's module
    globals, so its owner empties it when tracing ends."""
    user_code = frame.f_code
    key = (id(user_code), line)  # see _internal: a code object is slow to hash
    e = callers.get(key)
    if e is None or e[0] is not user_code:
        e = callers[key] = (user_code, types.FunctionType(_trampoline_code(user_code.co_filename, line),
                                                          frame.f_globals, "<traced by gradtrace>"))
    return e[1](func, args, kwargs)


# (file, line) -> the trampoline's code at that place: plain strings and numbers, so
# kept for the whole process (a trace starts without rebuilding them).
_trampolines: dict[tuple, types.CodeType] = {}


def _trampoline_code(filename: str, line: int) -> types.CodeType:
    code = _trampolines.get((filename, line))
    if code is None:
        if len(_trampolines) >= 65536:
            _trampolines.clear()
        code = _trampolines[(filename, line)] = _trampoline.__code__.replace(
            co_filename=filename, co_firstlineno=max(line - 1, 0), co_name="<traced by gradtrace>")
    return code
