"""Which ``nn.Module`` is running: global forward hooks keep a stack of dotted paths.

``torch.utils.module_tracker.ModuleTracker`` keeps an unordered set of parents
and registers backward hooks on every forward's outputs; the recorder needs
only the innermost module of the calling thread, so this is the leaner half.
"""

from __future__ import annotations

import sys
import threading
import weakref
from functools import partial

import torch
from torch.nn.modules import module as _module

from . import source
from .compat import torch_is_busy

__all__ = ["ModuleStack"]

# Wrappers whose `module` child is the user's model: they add no path component,
# so a model's ops keep the same module paths with and without data parallel.
_WRAPPERS = ("DistributedDataParallel", "DataParallel")


def _variable_of(mod):
    """The name of a variable of the user's code that called ``mod`` and refers to it
    (``q`` for ``q(x)``), or None: another module's forward, an attribute (``self.q``)
    or an expression called it."""
    try:
        frame = source.module_caller(3)
        if frame is None:
            return None
        for name, value in source.scope_items(frame):
            if value is mod and name != "self":
                return name
    except Exception:  # a frame whose locals cannot be read
        return None
    return None


class ModuleStack:
    """Tracks the module path of the forward call in progress on one thread."""

    def __init__(self, on_first_call=None, on_registered=None, on_output=None):
        self.stack: list[str] = []
        # In step with ``stack``: (number, id of its ``Module._call_impl`` frame) of each
        # call; two calls of one module differ in number, a live frame's id is its own.
        self.calls: list[tuple[int, int]] = []
        self._called = 0
        self.modules: dict[str, str] = {}  # path -> type name, each tree in named_modules order
        self.parents: dict[str, str] = {}  # path -> parent path
        self.vars: dict[str, str] = {}  # root path -> the user's variable the root was called through
        self.renamed: dict[str, str] = {}  # former root path -> its path in the tree that took it in
        self.other_threads = 0  # forwards seen on threads the recorder cannot see
        # id(module) -> (weak reference to it, path): a plain dict answers each forward
        # faster than a weak-keyed one; the reference tells a reused id apart.
        self._paths: dict[int, tuple] = {}
        self._mods: dict[str, weakref.ref] = {}  # path -> module
        self._thread = threading.get_ident()
        self._on_first_call = on_first_call
        self._on_registered = on_registered
        self._on_output = on_output
        self._handles = []

    def listen(self, on_first_call, on_registered, on_output) -> None:
        """Who hears of a module's first call (its path), of a parameter or buffer a
        module registers, and of a module's output."""
        self._on_first_call, self._on_registered, self._on_output = on_first_call, on_registered, on_output

    def install(self):
        self._handles = [
            _module.register_module_forward_pre_hook(self._pre),
            _module.register_module_forward_hook(self._post, always_call=True),
        ]
        if self._on_registered is not None:
            self._handles += [
                _module.register_module_parameter_registration_hook(partial(self._registered, "parameter")),
                _module.register_module_buffer_registration_hook(partial(self._registered, "buffer")),
            ]

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        # The callbacks are the recorder's bound methods: dropped, the recorder and its
        # records are freed when the trace is, not at the next cyclic collection
        # (which would walk them all while they wait).
        self._on_first_call = self._on_registered = self._on_output = None

    @property
    def current(self):
        """The dotted path of the innermost module running, or None."""
        return self.stack[-1] if self.stack else None

    def _known(self, mod) -> bool:
        e = self._paths.get(id(mod))
        return e is not None and e[0]() is mod

    def _add_tree(self, root: torch.nn.Module) -> str:
        """Name ``root`` (a module called outside every tree seen so far) and each
        module under it by dotted path, containers that are never called
        (``ModuleList``) included; return the root's path."""
        inner = getattr(root, "module", None)
        wrapper = type(root).__name__ in _WRAPPERS and isinstance(inner, torch.nn.Module)
        base = self._unique(type(root).__name__, root)
        var = _variable_of(root)
        if var is not None:
            self.vars[base] = var
        self._register(root, base, None)
        if wrapper:
            # The wrapped model keeps the paths it has without the wrapper.
            if not self._known(inner):
                self.parents[self._add_tree(inner)] = base
            return base
        moving = set()  # roots of trees seen before that turn out to be inside this one
        for name, m in root.named_modules(remove_duplicate=True):
            if not name:
                continue
            path = f"{base}.{name}"
            parent = f"{base}.{name.rsplit('.', 1)[0]}" if "." in name else base
            e = self._paths.get(id(m))
            if e is None or e[0]() is not m:
                self._register(m, path, parent)
                continue
            old = e[1]
            if old not in self.parents:
                # Called on its own first (spectral_norm's ParametrizationList while the
                # layer is built, a backbone before the model that holds it): it takes
                # its place in this tree, and so do the modules under it.
                moving.add(old)
            elif old.split(".", 1)[0] not in moving:
                continue
            self._move(m, old, path, parent)
        return base

    def _move(self, mod, old: str, path: str, parent: str):
        """Give module ``mod``, known by path ``old``, its ``path`` inside a tree found
        later; ``renamed`` remembers a root's move for the records made before it."""
        ref = weakref.ref(mod)
        self._paths[id(mod)] = (ref, path)
        self._mods.pop(old, None)
        self._mods[path] = ref
        self.modules[path] = self.modules.pop(old, type(mod).__name__)
        self.parents.pop(old, None)
        self.parents[path] = parent
        if "." not in old:
            self.renamed[old] = path
            self.vars.pop(old, None)
        self.stack = [path if p == old else p for p in self.stack]
        if self._on_first_call is not None:
            self._on_first_call(mod, path)

    def final_path(self, path):
        """``path`` as it is when the recording ends: a module recorded under a root
        of its own that a later tree took in has that tree's path."""
        renamed = self.renamed
        if not renamed or path is None:
            return path
        for _ in range(32):  # a root moved into a tree that itself moved later
            head, sep, rest = path.partition(".")
            new = renamed.get(head)
            if new is None:
                break
            path = new + sep + rest
        return path

    def _unique(self, path: str, mod) -> str:
        base, n = path, 1
        while path in self.modules and self._module(path) is not mod:
            n += 1
            path = f"{base}#{n}"
        return path

    def _register(self, mod, path: str, parent: str | None):
        ref = weakref.ref(mod)
        self._paths[id(mod)] = (ref, path)
        self._mods[path] = ref
        self.modules[path] = type(mod).__name__
        if parent is not None:
            self.parents[path] = parent
        if self._on_first_call is not None:
            self._on_first_call(mod, path)

    def _module(self, path):
        ref = self._mods.get(path)
        return ref() if ref is not None else None

    def _registered(self, kind, mod, name, tensor):
        """A module got a parameter or buffer (``self.weight = Parameter(...)`` in its
        ``__init__``): tell the recorder, which names it if no module path ever does."""
        if torch_is_busy() or threading.get_ident() != self._thread or tensor is None:
            return None
        on_registered = self._on_registered
        if on_registered is not None:
            on_registered(mod, name, tensor, kind)
        return None

    def _pre(self, mod, args):
        if torch_is_busy():
            return None  # compiled or JIT-traced code must not see our bookkeeping
        if threading.get_ident() != self._thread:
            self.other_threads += 1
            return None
        e = self._paths.get(id(mod))  # the module's path, or its tree is new
        self.stack.append(e[1] if e is not None and e[0]() is mod else self._add_tree(mod))
        self._called += 1
        self.calls.append((self._called, id(source.module_call_frame(sys._getframe(1)))))  # id(None): no frame
        return None

    def _post(self, mod, args, output):
        if torch_is_busy():
            return None
        if threading.get_ident() != self._thread:
            return None
        if self.stack:
            self.stack.pop()
            self.calls.pop()
        if self._on_output is not None and output is not None:
            self._on_output(mod, output)
        return None
