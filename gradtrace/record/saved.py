"""What new autograd nodes saved for backward, read back and tied to tensor nodes.

Saved tensors are read back only where no saved-tensor hook would run (an unpack hook
is the program's own code: checkpoint's recomputation, save_on_cpu's copy)."""

from __future__ import annotations

import torch

from .hidden import out_of_sight

__all__ = ["SAVED_NAMES", "SavedTensors"]

SAVED_NAMES: dict = {}  # C++ autograd node class -> the names of its saved values, for the process


class SavedTensors:
    """Reads what autograd nodes saved (``read``) and ties each saved tensor to a tensor
    node once the op that made the nodes has registered its outputs (``resolve``)."""

    def __init__(self, records):
        self.records = records
        self.tensors = None  # wired by the mode: Tensors
        self.pending: list = []  # (fid, [saved tensors]) not yet tied to nodes
        self._names: dict = {}  # a custom Function's node class -> its saved names, for this trace

    def read(self, readable) -> None:
        """Read back what each ``(fid, node)`` of ``readable`` saved (out of the user's
        sight: unpacking may detach, which is not the user's op)."""
        pending = self.pending
        with out_of_sight():
            for fid, node in readable:
                pending.append((fid, self._saved_of(node)))

    def discard(self) -> None:
        """Forget what was read for an op that failed."""
        self.pending = []

    def resolve(self) -> None:
        """Tie tensors saved by new autograd nodes to tensor nodes. Saved outputs
        come back as new Python objects, so match on storage, offset and shape."""
        pending, self.pending = self.pending, []
        records, lookup = self.records, self.tensors.lookup
        for fid, tensors in pending:
            done = set()
            for t in tensors:
                info = lookup(t)
                node, via = (info.node, None) if info is not None else self._match(t)
                if node is None or node in done:
                    continue
                done.add(node)
                if via is None:
                    records.edges.append((fid, node, "saves", None))
                elif via == "view":
                    records.edges.append((fid, node, (("kind", "saves"), ("via", "view"))))
                elif via == "untracked":  # node: (storage's address, its bytes)
                    fn = records.fns[fid]
                    fn["saved_untracked_bytes"] = fn.get("saved_untracked_bytes", 0) + node[1]
                else:  # a storage no live tensor of the trace is on
                    records.fns[fid].setdefault("saved_storages", []).append(node)

    def _saved_of(self, fn):
        """The tensors autograd node ``fn`` saved for backward, read back."""
        cls = type(fn)
        names = SAVED_NAMES.get(cls)
        torch_class = True
        if names is None:
            names = self._names.get(cls)
            if names is None:
                names = _saved_names(fn)
                # A C++ node class is torch's for the whole process; a custom
                # Function's node class may be the program's, made at run time.
                torch_class = cls.__module__ == "builtins"
                (SAVED_NAMES if torch_class else self._names)[cls] = names
            else:
                torch_class = False
        found = []
        if not names:
            return found
        scalars = None
        Tensor = torch.Tensor
        for a in names:
            try:
                v = getattr(fn, a)
            except Exception:
                continue
            if isinstance(v, Tensor):
                found.append(v)
            elif isinstance(v, (list, tuple)):
                if v and not isinstance(v[0], Tensor) and v[0] is not None:
                    scalars = (scalars or ()) + (a,)
                else:
                    found.extend(x for x in v if isinstance(x, Tensor))
            elif v is not None:
                scalars = (scalars or ()) + (a,)
        if scalars and torch_class:
            # A C++ node's field has one C++ type: one that held a number, a
            # dtype or a list of sizes never holds a tensor (an optional tensor
            # reads as None or a tensor). It need not be read again.
            SAVED_NAMES[cls] = tuple(n for n in names if n not in scalars)
        return found

    def _match(self, t):
        """For a saved tensor the recorder has no record of: ``(node, None)`` for the
        tensor node with its storage, offset, shape and stride (a saved output comes
        back as a new object); ``(node, "view")`` for the base tensor node current on
        its storage, when autograd saved a view made inside the op (``weight.t()``
        in ``F.linear``); ``(sid, "storage")`` when no known tensor is on that storage;
        ``((address, bytes), "untracked")`` for a storage the trace never saw: what the
        op or autograd made for itself (BatchNorm's ``save_mean``, attention's
        ``logsumexp``, a wrapped scalar); ``(None, None)`` when it cannot be read."""
        try:
            st = t.untyped_storage()
        except Exception:
            return None, None
        s = self.tensors.known_storage(st)  # a storage the trace does not know holds no known tensor
        if s is None:
            try:
                return (st.data_ptr(), st.nbytes()), "untracked"
            except Exception:
                return None, None
        key = (t.storage_offset(), tuple(t.shape), t.stride())
        base = None
        for ref in s.tensors:
            u = ref()
            if u is None:
                continue
            info = self.tensors.lookup(u)
            if info is None:
                continue
            if (u.storage_offset(), tuple(u.shape), u.stride()) == key:
                return info.node, None
            if base is None or base[0]:
                base = (_is_view(u), info.node)  # the first non-view tensor on it
        if base is not None:
            return base[1], "view"
        return s.sid, "storage"


def _saved_names(fn) -> tuple:
    """The attributes of autograd node ``fn`` that hold what it saved for backward."""
    names = [a for a in dir(fn) if a.startswith("_saved_") and not a.endswith("_sym_argsize")]
    if hasattr(fn, "saved_tensors"):
        names.append("saved_tensors")
    return tuple(names)


def _is_view(t) -> bool:
    try:
        return t._base is not None
    except Exception:
        return True
