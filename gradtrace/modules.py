"""Which ``nn.Module`` is running: global forward hooks keep a stack of dotted paths.

``torch.utils.module_tracker.ModuleTracker`` keeps an unordered set of parents
and registers backward hooks on every forward's outputs; the recorder needs
only the innermost module of the calling thread, so this is the leaner half.
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch.nn.modules import module as _module
from torch.utils.weak import WeakIdKeyDictionary

# Wrappers whose `module` child is the user's model: they add no path component,
# so a model's ops keep the same module paths with and without data parallel.
_WRAPPERS = ("DistributedDataParallel", "DataParallel")


class ModuleStack:
    """Tracks the module path of the forward call in progress on one thread."""

    def __init__(self, on_first_call=None):
        self.stack: list[str] = []
        self.modules: dict[str, str] = {}  # path -> type name, in order of first call
        self.parents: dict[str, str] = {}  # path -> parent path
        self.other_threads = 0  # forwards seen on threads the recorder cannot see
        self._paths = WeakIdKeyDictionary()  # module -> path
        self._mods: dict[str, weakref.ref] = {}  # path -> module
        self._thread = threading.get_ident()
        self._on_first_call = on_first_call
        self._handles = []

    def install(self):
        self._handles = [
            _module.register_module_forward_pre_hook(self._pre),
            _module.register_module_forward_hook(self._post, always_call=True),
        ]

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def current(self):
        """The dotted path of the innermost module running, or None."""
        return self.stack[-1] if self.stack else None

    def _path_of(self, mod: torch.nn.Module) -> str:
        path = self._paths.get(mod)
        if path is not None:
            return path
        parent = self.stack[-1] if self.stack else None
        name = None
        if parent is not None:
            parent_mod = self._module(parent)
            if parent_mod is not None:
                for child_name, child in parent_mod.named_children():
                    if child is mod:
                        name = child_name
                        break
        if name is None or parent is None:
            path = type(mod).__name__
            parent = None
        elif type(self._module(parent)).__name__ in _WRAPPERS and name == "module":
            path = type(mod).__name__
        else:
            path = f"{parent}.{name}"
        base, n = path, 1
        while path in self.modules and self._module(path) is not mod:
            n += 1
            path = f"{base}#{n}"
        self._paths[mod] = path
        self._mods[path] = weakref.ref(mod)
        self.modules[path] = type(mod).__name__
        if parent is not None:
            self.parents[path] = parent
        if self._on_first_call is not None:
            self._on_first_call(mod, path)
        return path

    def _module(self, path):
        ref = self._mods.get(path)
        return ref() if ref is not None else None

    def _pre(self, mod, args):
        if threading.get_ident() != self._thread:
            self.other_threads += 1
            return None
        self.stack.append(self._path_of(mod))
        return None

    def _post(self, mod, args, output):
        if threading.get_ident() != self._thread:
            return None
        if self.stack:
            self.stack.pop()
        return None
