"""Where an op came from: the user's frame, and the name its result is bound to.

Both run on the recorder's per-op path, so each is a dict lookup after the first
time a code object is seen: no ``inspect.stack()``, no source reading.
"""

from __future__ import annotations

import dis
import inspect
import os
import sys
import sysconfig
import types

import torch

__all__ = [
    "RETURNED", "bound_name", "call_as_user", "called_by_autograd", "called_by_user", "callee_of",
    "grad_mode_caller", "line_of", "module_call_frame", "module_caller", "receiver_name", "returned_name",
    "scope_items", "user_call", "user_frame",
]

_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_STDLIB = os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep
_SITE = ("site-packages", "dist-packages")

# Caches keyed by id(code), each entry holding its code object (so the id is not
# reused while cached): hashing a code object hashes its constants, nested code
# included, every time: tens of microseconds for a long script's module code.
# id(code) -> (code, its place: USER, LIBRARY or INTERNAL, its routing: see _routing)
_codes: dict[int, tuple] = {}
# id(code) -> (code, {instruction offset: name or tuple of names the result is stored to})
_stores: dict[int, tuple] = {}

USER, LIBRARY, INTERNAL = 0, 1, 2


def _place(code) -> int:
    """Where frames of ``code`` belong: the user's own code, a third-party package, or
    torch, gradtrace and the stdlib (cached)."""
    e = _codes.get(id(code))
    if e is None or e[0] is not code:
        e = _known(code)
    return e[1]


def _known(code) -> tuple:
    """Cache and return ``(code, place, routing)`` of a code object seen for the first time."""
    e = _codes[id(code)] = (code, _place_of(code.co_filename), _routing(code.co_filename))
    return e


def _internal_code(code) -> bool:
    """True when frames of ``code`` are not the user's own: torch, gradtrace, the
    stdlib or a third-party package (cached)."""
    return _place(code) != USER


_STORE_OPS = {"STORE_NAME", "STORE_FAST", "STORE_GLOBAL", "STORE_DEREF", "STORE_ATTR"}


def _place_of(filename: str) -> int:
    # "<eval_with_key>": code torch.fx generated (a graph torch.compile runs in
    # eager mode); its ops belong to the user's line that called the compiled code.
    if filename.startswith(("<frozen", "<string>", "<eval_with_key>")):
        return INTERNAL
    path = os.path.abspath(filename)
    if path.startswith(_TORCH) or path.startswith(_HERE):
        return INTERNAL
    # Installed packages (transformers, timm, an optimizer or EMA from a library) are
    # library code as torch is: their ops belong to the user's line that called them,
    # and the names they bind are not the user's. The stdlib (contextlib, functools,
    # copy, runpy) sits between torch and the user's line.
    if any(s in path for s in _SITE):
        return LIBRARY
    return INTERNAL if path.startswith(_STDLIB) else USER


def user_frame(depth: int = 2):
    """Return the innermost frame of user code above the caller, or None."""
    return user_call(depth + 1)[0]


# Frames that only route a call to __torch_function__ (handle_torch_function and
# Tensor's Python-level operator wrappers): they do not make an op indirect.
_HANDLER_FILE = os.path.join(_TORCH, "overrides.py")
_DISPATCH_FILES = (_HANDLER_FILE, os.path.join(_TORCH, "_tensor.py"))
# A frame's routing: _OURS for gradtrace's frames, _HANDLER for handle_torch_function's,
# _ROUTES for Tensor's wrappers, else _OTHER.
_OTHER, _ROUTES, _HANDLER, _OURS = 0, 1, 2, 3


def _routing(filename: str) -> int:
    path = os.path.abspath(filename)
    if path.startswith(_HERE):
        return _OURS
    if path == _HANDLER_FILE:
        return _HANDLER
    return _ROUTES if path.startswith(_DISPATCH_FILES) else _OTHER


def user_call(depth: int = 2, func_code=None):
    """Return ``(frame, direct, caller, library)`` for the op whose
    ``__torch_function__`` runs ``depth`` frames up:

    - ``frame``: the innermost frame of the user's own code, or None;
    - ``direct``: whether the user called the op itself (also through a torch Python
      function such as ``F.relu``, which hands itself to ``__torch_function__``) rather
      than library code on the user's behalf (``nn.Linear(...)`` initialising its
      weight, ``model.to(device)``, a transformers model's forward);
    - ``caller``: the frame that called the op, what Python attributes a warning raised
      inside it to: past gradtrace, ``handle_torch_function`` and the first call of the
      op's own Python code ``func_code`` (which handed itself to the mode); None when
      only gradtrace is above;
    - ``library``: the innermost frame of a third-party package on the way, or None."""
    f = sys._getframe(depth)
    codes = _codes
    n_library = 0
    dispatched = False  # the op entered __torch_function__ through handle_torch_function
    caller = library = None
    while f is not None:
        code = f.f_code
        e = codes.get(id(code))
        if e is None or e[0] is not code:
            e = _known(code)
        _, place, r = e
        if caller is None and r < _HANDLER and code is not func_code:
            caller = f
        if place == USER:
            return f, n_library == 0 or (n_library == 1 and dispatched), caller, library
        if r == _OTHER:
            n_library += 1
            if library is None and place == LIBRARY:
                library = f
        elif r != _OURS:
            dispatched = dispatched or n_library == 0
        f = f.f_back
    return None, False, caller, library


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


_CALL_IMPL = torch.nn.Module._call_impl.__code__


def callee_of(frame):
    """Return ``(callee, call)``: the frame the user's ``frame`` called into (the
    outermost library frame of the call in progress; None when ``frame`` is not on the
    stack) and the outermost module call between the two (its ``Module._call_impl``
    frame), else None."""
    f, prev, call = sys._getframe(1), None, None
    while f is not None and f is not frame:
        if f.f_code is _CALL_IMPL:
            call = f
        prev, f = f, f.f_back
    return (prev if f is not None else None), call


def module_call_frame(f):
    """Return the ``Module._call_impl`` frame of the innermost module call running at
    frame ``f`` (``f`` itself or one above it), or None outside every module call."""
    while f is not None and f.f_code is not _CALL_IMPL:
        f = f.f_back
    return f


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


class _Returned:
    """The value an instruction computes is returned (``return a + b``)."""

    __slots__ = ()


RETURNED = _Returned()


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
        elif nxt.opname == "RETURN_VALUE":
            name = RETURNED
        else:
            continue
        # While a Python callee runs, f_lasti may point into the call's inline caches.
        for off in range(ins[k].offset, nxt.offset, 2):
            found[off] = name
    return found


def _store_of(frame) -> object:
    code = frame.f_code
    e = _stores.get(id(code))
    if e is None or e[0] is not code:
        try:
            table = _build_stores(code)
        except Exception:  # unusual bytecode must never break tracing
            table = {}
        e = _stores[id(code)] = (code, table)
    return e[1].get(frame.f_lasti)


def bound_name(frame) -> object:
    """Return the name (or tuple of names, for unpacking) that the value computed
    by the frame's current instruction is stored to, or None.

    The name is read from the bytecode that follows the call, so it is known
    before the assignment happens.
    """
    code = frame.f_code
    e = _stores.get(id(code))  # _store_of's cache, read here first: once per op
    name = e[1].get(frame.f_lasti) if e is not None and e[0] is code else _store_of(frame)
    return None if name is RETURNED else name


def returned_name(frame) -> object:
    """For a value the frame's current instruction computes and returns (``return
    bce + kld`` in a helper): the name the user's code that called the function binds
    the call's result to (``loss = loss_function(...)``), through helpers that return
    it in turn; else None."""
    for _ in range(8):
        if _store_of(frame) is not RETURNED:
            return None
        frame = frame.f_back
        if frame is None or _internal_code(frame.f_code):
            return None
        name = _store_of(frame)
        if name is not RETURNED:
            return name
    return None


_LOADS = {"LOAD_NAME", "LOAD_FAST", "LOAD_GLOBAL", "LOAD_DEREF", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW"}
_METHOD_LOADS = {"LOAD_METHOD", "LOAD_ATTR"}
# (id(code), instruction offset) -> (code, the variable the method was called on, or None)
_receivers: dict = {}


def receiver_name(frame, method: str):
    """For a frame whose current instruction calls ``NAME.method(...)`` (``loss.backward()``):
    ``NAME``, read from the bytecode (never from the frame's locals, whose snapshot would
    keep the program's tensors alive); else None (``(a + b).backward()``)."""
    code = frame.f_code
    key = (id(code), frame.f_lasti)
    e = _receivers.get(key)
    if e is None or e[0] is not code:
        try:
            name = _receiver(code, frame.f_lasti, method)
        except Exception:  # unusual bytecode must never break tracing
            name = None
        e = _receivers[key] = (code, name)
    return e[1]


def _receiver(code, offset: int, method: str):
    ins = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG", "NOP")]
    at = max((k for k, i in enumerate(ins) if i.offset <= offset), default=None)
    for k in range(at or 0, max((at or 0) - 6, 0), -1):
        i = ins[k]
        if i.opname in _METHOD_LOADS and i.argval == method and k > 0:
            prev = ins[k - 1]
            return prev.argval if prev.opname in _LOADS and isinstance(prev.argval, str) else None
    return None


_CO_OPTIMIZED = inspect.CO_OPTIMIZED
# Before Python 3.13 a function frame's f_locals is a dict the frame keeps: reading it
# leaves a copy of every local in it until the function's next locals() or its return.
_LOCALS_CACHED = sys.version_info < (3, 13)


def scope_items(frame) -> list:
    """``[(name, value)]`` of ``frame``'s locals, then its module's globals, read without
    leaving anything behind: a function frame's locals snapshot (which would keep the
    program's tensors alive after it deletes them) is emptied again; Python fills it
    anew whenever something asks for ``locals()``."""
    items = []
    if frame.f_code.co_flags & _CO_OPTIMIZED:
        snapshot = frame.f_locals
        items = list(snapshot.items())
        if _LOCALS_CACHED:
            snapshot.clear()
    elif frame.f_locals is not frame.f_globals:  # a class body
        items = list(frame.f_locals.items())
    return items + list(frame.f_globals.items())


_GRAD_MODE_FILES = ("grad_mode.py", "_contextlib.py", "contextlib.py")


def grad_mode_caller(depth: int = 2):
    """For a call to ``torch._C._set_grad_enabled`` made ``depth`` frames up: return the
    name of the context manager the user wrote (``torch.no_grad``, ...) when user code
    asked for it, or None when torch itself switched grad mode (an optimizer)."""
    f = sys._getframe(depth)
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
    key = (id(user_code), line)  # see _codes: a code object is slow to hash
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
