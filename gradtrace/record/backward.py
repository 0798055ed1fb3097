"""Backward calls: each call's roots and weighting vectors, the gradient reaching every
recorded tensor, and what accumulated into each leaf's ``.grad``."""

from __future__ import annotations

import inspect

import torch

from . import modestack, source, stats
from .compat import any_autocast
from .grad_hooks import GradHooks, identity_of
from .hidden import hidden
from .records import OP_EXTRA, OP_SEQ, op_record, with_autocast

__all__ = ["Backward"]


class Backward:
    """The registry of backward calls. ``current`` is the call running now (its
    ``bw:N``) or None; ``mode`` is pushed under the user's modes while it runs."""

    def __init__(self, records, tensors, autograd, saved, labels, casts, modules, mode, values: str):
        self.records = records
        self.tensors = tensors
        self.autograd = autograd
        self.saved = saved
        self.labels = labels
        self.casts = casts
        self.modules = modules
        self.mode = mode
        self.values = values
        self.copies = tensors.copies
        self.current = None
        self.watch = None  # wired by the mode: a Watch under --stop-at nonfinite
        self.times = None  # wired by the mode: OpTimes under --time
        self.hooks = GradHooks(records, autograd, self, mode, values)

    def run(self, func, spec, args, kwargs):
        """Run one backward call (the user's ``func``, once) and record it; return
        what it returned. Only ``func`` itself may raise into the caller."""
        try:
            with hidden():
                before = self._before(func, spec, args, kwargs)
        except Exception as e:
            self.records.note_unknown("backward call", e)
            before = None
        if before is None:
            return func(*args, **kwargs)
        bw, bound, record, root_keys, seen_grads, handles, leaves, prior = before
        self.current = bw
        times = self.times
        try:
            # Under the user's modes, so each sees this call as it would untraced;
            # it comes back to __torch_function__ once they have passed it on.
            modestack.push_under(self.mode)
            try:
                started = times.start([(0, a, None, None) for a in args if isinstance(a, torch.Tensor)]) \
                    if times is not None else None
                result = func(*args, **kwargs)
                if started is not None:
                    times.stop(record[OP_SEQ], started)
            finally:
                modestack.remove(self.mode)
        except BaseException as e:
            error = self.records.backwards[bw]["error"] = f"{type(e).__name__}: {e}".split("\n")[0][:500]
            record[OP_EXTRA]["error"] = error
            raise
        finally:
            self.current = None
            self.mode.set_quiet(False)
            self.hooks.arrived = {}
            for h in handles:
                h.remove()
            for key in root_keys:
                if key is not None and (key[0], key[1]) in seen_grads:
                    key[2]["received"] = seen_grads[(key[0], key[1])]
        try:
            with self.mode.quiet(), hidden():
                self._after(spec.name, bw, bound, result, leaves, prior)
        except Exception as e:
            self.records.note_unknown("gradients after backward", e)
        finally:
            self.hooks.arrived = {}
        if self.watch is not None:
            self.watch.step_ended("backward")
        return result

    def _before(self, func, spec, args, kwargs):
        api = spec.name
        bound = _signature(func).bind(*args, **kwargs).arguments
        roots, grads = _roots_and_weights(api, bound)
        records = self.records
        seq = records.next_seq()
        op_node = f"op:{seq}"
        bw = records.next_id("bw")
        frame = source.user_frame(3)
        record = op_record(seq, api, "backward", frame.f_code.co_filename if frame else None,
                           source.line_of(frame) if frame else None, self.modules.current,
                           torch.is_grad_enabled(), (), None,
                           with_autocast({"backward": bw}, self.casts.state() if any_autocast() else None), True)
        records.ops.append(record)
        implicit = all(g is None for g in grads) and all(
            isinstance(r, torch.Tensor) and r.numel() == 1 for r in roots)
        records.backwards[bw] = {
            "seq": int(bw[3:]), "api": api, "implicit": implicit,
            "retain_graph": bound.get("retain_graph"), "create_graph": bool(bound.get("create_graph")),
            "op": op_node,
        }
        root_keys = self._roots(api, bw, op_node, frame, roots, grads)
        if self.saved.pending:
            self.saved.resolve()
        seen_grads = {}
        handles, leaves = self.hooks.install(roots, bw, seen_grads)
        prior = {}
        for fid, leaf in leaves.items() if api != "torch.autograd.grad" else ():
            if leaf.grad is not None:
                prior[fid] = stats.compute(leaf.grad) if self.values != "none" else None
        return bw, bound, record, root_keys, seen_grads, handles, leaves, prior

    def _roots(self, api, bw, op_node, frame, roots, grads) -> list:
        """Record each root and its weighting vector; return, per root, what ties the
        gradient reaching it to its ``weights`` edge (None for a root without grad_fn)."""
        edges = self.records.edges
        weights, root_keys = [], []
        for i, (r, g) in enumerate(zip(roots, grads)):
            if not isinstance(r, torch.Tensor):
                continue
            info = self.tensors.tensor(r)
            if frame is not None and api == "Tensor.backward":
                self.labels.receiver(frame, info)
            edges.append((info.node, op_node, "input", i))
            attrs = {"kind": "weights", "gradient": None}
            if isinstance(g, torch.Tensor):
                ginfo = self.tensors.tensor(g)
                attrs["gradient"] = ginfo.node
                edges.append((ginfo.node, op_node, {"kind": "input", "pos": f"gradient{i}"}))
            elif g is not None:
                attrs["gradient_value"] = g
            weights.append((bw, info.node, attrs))
            fn = r.grad_fn
            root_keys.append((self.autograd.node_of(fn), r.output_nr, attrs) if fn is not None else None)
        edges.extend(weights)
        return root_keys

    def _after(self, api, bw, bound, result, leaves, prior):
        if api == "torch.autograd.grad":
            # It returns its gradients and leaves every .grad as it was.
            inputs = _as_list(bound["inputs"])
            for t, g in zip(inputs, result):
                if isinstance(t, torch.Tensor) and isinstance(g, torch.Tensor):
                    self.grad_edge("grad", bw, self.tensors.tensor(t).node, g)
            return
        arrived_at = self.hooks.arrived
        for fid, leaf in leaves.items():
            g = leaf.grad
            if g is None:
                continue
            info = self.tensors.tensor(leaf)
            arrived = arrived_at.get(fid)
            if fid not in prior and arrived is not None and arrived[:2] == identity_of(g):
                # .grad is the very gradient that arrived (AccumulateGrad took it
                # as is): its statistics and value are already recorded.
                attrs = {"kind": "leaf_grad", "stats": arrived[2]["stats"]}
                if "value" in arrived[2]:
                    attrs["value"] = arrived[2]["value"]
                self.records.edges.append((bw, info.node, attrs))
            else:
                attrs = self.grad_edge("leaf_grad", bw, info.node, g)
            attrs["prior"] = prior.get(fid)
            attrs["accumulated"] = fid in prior

    def grad_edge(self, kind, bw, node, g) -> dict:
        """Record gradient ``g`` reaching tensor ``node`` in call ``bw`` (``grad`` or
        ``leaf_grad``); return the edge's attributes."""
        attrs = {"kind": kind, "stats": stats.compute(g) if self.values != "none" else None}
        if self.watch is not None:
            self.watch.saw(attrs["stats"], f"gradient (in {bw})", node)
        if self.values == "all":
            key = f"{kind}:{bw}:{node}"
            self.tensors.keep_value(key, g)
            attrs["value"] = key
        self.records.edges.append((bw, node, attrs))
        return attrs


def _roots_and_weights(api, bound):
    """The roots of a backward call and the weighting vector given for each (None: implicit)."""
    if api == "Tensor.backward":
        return [bound["self"]], [bound.get("gradient")]
    if api == "torch.autograd.backward":
        roots = _as_list(bound["tensors"])
        grads = bound.get("grad_tensors")
        if grads is None:
            grads = bound.get("grad_variables")
    else:
        roots = _as_list(bound["outputs"])
        grads = bound.get("grad_outputs")
    return roots, _as_list(grads) if grads is not None else [None] * len(roots)


_SIGS: dict = {}


def _signature(func):
    s = _SIGS.get(func)
    if s is None:
        s = _SIGS[func] = inspect.signature(func)
    return s


def _as_list(x):
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]
