"""Hooks on the autograd nodes a backward call can reach: the gradient arriving at each
recorded tensor, seen as the engine passes it, without keeping it."""

from __future__ import annotations

import weakref
from functools import partial

import torch

from .compat import torch_is_busy
from .hidden import no_function_modes
from .tensors import dtype_name

__all__ = ["GradHooks", "identity_of"]


def identity_of(g):
    """What tells one gradient tensor from another later, without a reference to it."""
    try:
        return (g.data_ptr(), g._version)
    except Exception:
        return (None, None)


class GradHooks:
    """Puts pre-hooks on the nodes of one backward call and records what reaches them.
    ``backward`` makes the gradient edges; ``mode`` is kept quiet while a hook runs."""

    def __init__(self, records, autograd, backward, mode, values: str):
        self.records = records
        self.autograd = autograd
        self.backward = backward
        self.mode = mode
        self.values = values
        # AccumulateGrad fid -> (data_ptr, version, grad edge attrs) of the gradient that
        # arrived, per call; no reference, so AccumulateGrad may still steal it.
        self.arrived: dict = {}

    def install(self, roots, bw, seen):
        """Put a pre-hook on every autograd node the backward call ``bw`` can reach,
        to see the gradient arriving at each recorded tensor; ``seen`` gets what reaches
        a root's node. Return ``(hook handles, {AccumulateGrad fid: its leaf})``."""
        autograd = self.autograd
        key = autograd.key
        handles, leaves = [], {}
        stack = [r.grad_fn for r in roots if isinstance(r, torch.Tensor) and r.grad_fn is not None]
        # What reaches a root is recorded on the root's weights edge ("received").
        root_fids = {fn.metadata.get(key) for fn in stack}
        visited = set()
        ref = weakref.ref(self)
        leaf_of, made = autograd.leaf_of, autograd.made_tensor
        while stack:
            fn = stack.pop()
            fid = fn.metadata.get(key)
            if fid is None:
                fid = autograd.node_of(fn)
            if fid in visited:
                continue
            visited.add(fid)
            if fid in leaf_of:
                leaves[fid] = fn.variable
            # Nodes that made no recorded tensor (the transposes inside F.linear, say)
            # have no gradient to record: a Python hook there would only cost time.
            if fid in made or fid in leaf_of:
                handles.append(fn.register_prehook(self._hook(fid, bw, seen if fid in root_fids else None, ref)))
            if fid in autograd.compiled:
                # What a compiled backward runs is the compiler's, not the user's ops.
                mode = weakref.ref(self.mode)
                handles.append(fn.register_prehook(partial(_quiet_flag, mode, True)))
                handles.append(fn.register_hook(partial(_quiet_flag, mode, False)))
            for n, _ in fn.next_functions:
                if n is not None:
                    stack.append(n)
        return handles, leaves

    def _hook(self, fid, bw, seen, ref):
        """A pre-hook recording the gradients reaching node ``fid``; ``seen`` (for a
        root's node only) gets what reached it. ``ref``: a weak reference to these hooks."""
        if self.values == "none":
            # No statistics, no values: away from leaves and roots the hook reads no
            # gradient at all; at them it reads metadata only (data_ptr, _version,
            # dtype, shape), which no dispatch mode or profiler sees, so function
            # modes are all there is to keep out.
            if seen is None and fid not in self.autograd.leaf_of:
                return partial(_plain_arrival, ref, fid, bw)
        # Statistics and copies hide their own torch work (out_of_sight); the rest is
        # metadata, which function modes alone could see.

        def hook(grad_outputs):
            hooks = ref()
            if hooks is None or torch_is_busy():
                return None
            try:
                with hooks.mode.quiet(), no_function_modes():
                    hooks.arriving(fid, bw, seen, grad_outputs)
            except Exception as e:
                hooks.records.note_unknown("arriving gradient", e)
            return None

        return hook

    def arriving(self, fid, bw, seen, grad_outputs) -> None:
        """Record the gradients reaching autograd node ``fid`` (keeping none of them)."""
        leaf = self.autograd.leaf_of.get(fid)
        output_of = self.autograd.output_of
        for nr, g in enumerate(grad_outputs):
            if not isinstance(g, torch.Tensor):
                continue
            node = leaf.node if leaf is not None else output_of.get((fid, nr))
            if node is None:
                continue
            attrs = self.backward.grad_edge("grad", bw, node, g)
            if leaf is not None:
                self.arrived[fid] = (*identity_of(g), attrs)
            if seen is not None:
                seen[(fid, nr)] = {"stats": attrs["stats"], "dtype": dtype_name(g.dtype),
                                   "shape": list(g.shape), "value": attrs.get("value")}


def _plain_arrival(ref, fid, bw, grad_outputs):
    """``arriving`` for values="none" at a node that is neither a leaf's nor a root's:
    one ``grad`` edge per gradient reaching a recorded tensor, as ``grad_edge``
    makes it, without a torch call (so without ``hidden`` or quiet)."""
    hooks = ref()
    if hooks is None or torch_is_busy():
        return None
    try:
        output_of, edges = hooks.autograd.output_of, hooks.records.edges
        nr = -1
        for g in grad_outputs:
            nr += 1
            if isinstance(g, torch.Tensor):
                node = output_of.get((fid, nr))
                if node is not None:
                    edges.append((bw, node, {"kind": "grad", "stats": None}))
    except Exception as e:
        hooks.records.note_unknown("arriving gradient", e)
    return None


def _quiet_flag(mode_ref, value, *hook_args):
    mode = mode_ref()
    if mode is not None:
        mode.set_quiet(value)
