"""The autograd nodes a recording has seen: each node once, with the part of the
graph behind it, tied to the op that made it and the tensors it made."""

from __future__ import annotations

import torch

from .compat import saved_tensors_hooks_active, saved_tensors_hooks_owner
from .hidden import hidden

__all__ = ["AutogradNodes", "sequence_start"]


def sequence_start() -> int:
    """The sequence number the next autograd node of this thread will get."""
    try:
        with hidden(), torch.inference_mode(False), torch.enable_grad():
            return torch.zeros((), requires_grad=True).mul(1).grad_fn._sequence_nr()
    except Exception:
        return 0


class AutogradNodes:
    """The registry of autograd nodes, known by a key in each node's ``metadata``.
    ``tensors`` registers an ``AccumulateGrad``'s leaf; ``saved`` reads back what new
    nodes saved for backward."""

    def __init__(self, records, key: str):
        self.records = records
        self.key = key  # the metadata key holding a node's id
        self.tensors = None  # wired by the mode: Tensors
        self.saved = None  # wired by the mode: SavedTensors
        self.output_of: dict = {}  # (fid, output_nr) -> the last tensor node that node made
        self.made_tensor: set = set()  # fids that made a recorded tensor
        self.leaf_of: dict = {}  # fid of an AccumulateGrad -> TensorInfo of its leaf
        self.compiled: set = set()  # fids of CompiledFunctionBackward nodes
        self._start = sequence_start()

    def node_of(self, fn) -> str:
        """Return the id of autograd node ``fn``, recording it and the part of the
        graph behind it that is new."""
        key = self.key
        fid = fn.metadata.get(key)
        if fid is not None:
            return fid
        # Whether the op's new nodes may have their saved tensors read back: one
        # answer for all of them (no hook is pushed or popped while they are recorded).
        readable = [] if self.records.current_op is not None and not saved_tensors_hooks_active() else None
        root = fid = self._new(fn, readable)
        edges = self.records.edges
        stack = [(fn, fid)]
        while stack:
            node, nid = stack.pop()
            pos = -1
            for nxt, nr in node.next_functions:
                pos += 1
                if nxt is None:
                    continue
                cid = nxt.metadata.get(key)
                if cid is None:
                    cid = self._new(nxt, readable)
                    stack.append((nxt, cid))
                edges.append((nid, cid, ("kind", "next", "input_nr", nr, "pos", pos)))
        if readable:
            self.saved.read(readable)
        return root

    def made(self, fid: str, t, node: str) -> None:
        """Tensor ``t`` (its version ``node``) was made by autograd node ``fid``."""
        try:
            self.output_of[(fid, t.output_nr)] = node
        except Exception:
            pass
        self.made_tensor.add(fid)

    def keep_only(self, fids) -> None:
        """Forget the autograd nodes other than ``fids`` (the flight recorder let go of
        their records; their graphs are gone with their steps)."""
        self.output_of = {k: v for k, v in self.output_of.items() if k[0] in fids}
        self.made_tensor &= fids
        self.compiled &= fids
        self.leaf_of = {k: v for k, v in self.leaf_of.items() if k in fids}

    def _new(self, fn, readable):
        """Record autograd node ``fn``; ``readable``: None where its saved tensors
        must not be read back, else a list that gets ``(fid, fn)`` to read them from."""
        records = self.records
        fid = records.next_id("fn")
        fn.metadata[self.key] = fid
        name = fn.name()
        if name.startswith("torch::autograd::"):  # C++-only nodes carry their namespace
            name = name[len("torch::autograd::"):]
        attrs = records.fns[fid] = {"name": name, "op": records.current_op}
        if name == "AccumulateGrad":
            info = self.tensors.tensor(fn.variable)
            self.leaf_of[fid] = info
            records.edges.append((fid, info.node, "accumulates", None))
        elif readable is not None and self._fresh(fn):
            readable.append((fid, fn))
        else:
            # Reading these back would run unpack hooks (checkpoint's recomputation,
            # save_on_cpu's copy, the user's own): the program would change.
            attrs["saved"] = "unread"
            owner = saved_tensors_hooks_owner()
            if owner is not None:
                attrs["saved_hook"] = owner
        if name == "CompiledFunctionBackward":
            self.compiled.add(fid)
        return fid

    def _fresh(self, fn) -> bool:
        """True when ``fn`` was made after tracing began (no hook of the user's
        can have been put on its saved tensors yet)."""
        try:
            return fn._sequence_nr() >= self._start
        except Exception:
            return False
