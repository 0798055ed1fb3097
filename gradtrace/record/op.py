"""The per-op path, read top to bottom: the op's inputs, the call itself, what it wrote,
what it returned, its category, the casts autocast made, the names its results get,
and what autograd saved for it.

This is the hottest code of gradtrace: every user-level torch call runs through
``OpPath.call``. The user's call runs exactly once, and its result or exception is
what the user gets; whatever the recorder fails to read is counted as unknown."""

from __future__ import annotations

import numpy as np
import torch

from . import ops, source
from .compat import any_autocast
from .hidden import no_function_modes
from .numpy import array_shares, shares_numpy
from .records import op_record, with_autocast, with_extra
from .scan import results, scan
from .tensors import checksum, dtype_name

__all__ = ["OpPath"]

_ALIASES = ("Tensor.data", "Tensor.detach", "torch.detach")
_RANDOM = {"random": True}
_NUMPY_FACTORIES = ("torch.from_numpy", "torch.as_tensor", "torch.asarray")


class OpPath:
    """Records one op per call; the registries it writes to are handed over by the mode."""

    def __init__(self, records, tensors, arrays, saved, labels, casts, modules, backward, callers: dict,
                 updates=None, times=None):
        self.records = records
        self.tensors = tensors
        self.arrays = arrays
        self.saved = saved
        self.labels = labels
        self.casts = casts
        self.modules = modules
        self.backward = backward
        self.callers = callers  # see source.call_as_user; emptied when tracing ends
        self.watch = tensors.watch  # --stop-at's Watch, or None
        self.updates = updates  # the parameters' updates (updates.py), or None without statistics
        self.times = times  # --time: OpTimes (timing.py), else None

    def call(self, func, spec, args, kwargs, depth=3):
        """Call ``func`` once and record it as one op; return what it returned.
        Only ``func`` itself may raise into the caller."""
        records = self.records
        ops_ = records.ops
        seq = records.ops_from + len(ops_)  # records.next_seq(), inlined: once per op
        op_node = f"op:{seq}"
        ops_.append(None)  # the slot keeps call order; filled in below
        if self.watch is not None and spec.name in ops.UNINITIALISED:
            self.watch.garbage_op = op_node
        stack = self.modules.stack  # modules.current, inlined: once per op
        module, grad, bw = stack[-1] if stack else None, torch.is_grad_enabled(), self.backward.current
        updates = self.updates
        if grad and updates is not None and updates.held:
            updates.finish()  # a hand-written update ended: the next forward pass began
        ac = self.casts.state() if any_autocast() else None
        frame = file = line = caller = lib = None
        direct, scalars, pre, arrays = False, (), [], ()
        try:
            with no_function_modes():
                inputs, arrays, scalars = scan(args, kwargs)
                by_id = self.tensors.by_id
                edges = records.edges
                for pos, t in inputs:  # pre: (pos, tensor, info, version before)
                    info = by_id.get(id(t))  # tensors.tensor(t), inlined: the hottest loop
                    if info is None or info.ref() is not t:
                        info = self.tensors.register(t)
                    if info.crc is not None:
                        self.tensors.check_numpy_writes(t, info, op_node)
                    try:
                        v0 = t._version
                    except Exception:  # inference tensors have no version counter
                        v0 = None
                    pre.append((pos, t, info, v0))
                    edges.append((info.node, op_node, "input", pos))
                for pos, a in arrays:
                    self.arrays.read(a, op_node, pos)
                if spec.inplace and updates is not None:
                    updates.before(pre)
                frame, direct, caller, lib = source.user_call(depth, spec.code)
                if frame is not None:
                    file, line = frame.f_code.co_filename, source.line_of(frame)
                if lib is not None:
                    lib = {"lib_file": lib.f_code.co_filename, "lib_line": source.line_of(lib)}
        except Exception as e:
            records.note_unknown("op inputs", e)
            records.set_op(seq, op_record(seq, spec.name, "unknown", file, line, module, grad, scalars, bw,
                                          with_autocast({"unknown": "inputs"}, ac), direct))
            return func(*args, **kwargs)
        records.current_op = op_node
        times = self.times
        started = times.start(pre) if times is not None else None
        try:
            if caller is not None:
                # Through a frame with the caller's file, line and module globals: a
                # warning raised inside the op is attributed and filtered as untraced.
                out = source.call_as_user(caller, line if caller is frame else source.line_of(caller), func, args,
                                          kwargs, self.callers)
            else:
                out = func(*args, **kwargs)
        except BaseException as e:
            records.current_op = None
            self.saved.discard()
            records.set_op(seq, op_record(seq, spec.name, "other", file, line, module, grad, scalars, bw,
                                          with_autocast({"error": f"{type(e).__name__}: {e}".split("\n")[0][:500]},
                                                        ac), direct))
            raise
        if started is not None:
            times.stop(seq, started)
        cat, extra = "unknown", {"unknown": "outputs"}
        try:
            with no_function_modes():
                cat, extra = self.after(spec, op_node, pre, arrays, scalars, kwargs, out, frame, direct, ac, seq)
        except Exception as e:
            records.note_unknown("op outputs", e)
            self.saved.discard()
        finally:
            records.current_op = None
            i = seq - records.ops_from  # records.set_op, inlined: once per op
            if i >= 0:
                if ac is not None or lib is not None:
                    extra = with_extra(with_autocast(extra, ac), lib)
                # op_record's layout, built here: once per op
                ops_[i] = (seq, spec.name, cat, file, line, module, grad, scalars, bw, extra, direct)
        return out

    def after(self, spec, op_node, pre, arrays, scalars, kwargs, out, frame, direct, ac, seq):
        """Record what an op did; return its category and extra attributes. ``frame``
        is the user's frame (its current statement may bind the result to a name);
        ``direct`` says whether the user called the op itself rather than library
        code on the user's behalf (a module's forward, ``model.to(device)``)."""
        written = self._writes(op_node, pre, spec, kwargs)
        if spec.kind == ops.DATA_SET and pre:
            self.tensors.data_swapped(pre[0][1], pre[0][2], op_node)
        if spec.meta:
            for _, t, info, _ in pre:
                if t.requires_grad != info.rg:
                    self.tensors.flag_changed(t, info, op_node)
        out_infos, new_views, out_arrays = self._outputs(op_node, pre, arrays, out)
        if out_arrays or arrays:
            self._shared_buffers(op_node, pre, arrays, out_infos, out_arrays)
        cat = self._category(spec, written, kwargs, pre, arrays, scalars, out_infos, out_arrays, new_views, op_node)
        if new_views:
            self._views(spec.name, new_views)
        if ac is not None and out_infos and pre and cat not in ("move", "convert"):
            self.casts.record(op_node, pre, out_infos[0], ac)
        if frame is not None and out_infos:
            self.labels.name_results(frame, direct, out_infos, out, seq)
        if self.saved.pending:
            self.saved.resolve()
        for _, t, info, _ in pre:
            if info.crc is not None:
                info.crc = checksum(t)
        return cat, _RANDOM if spec.random else None

    def _writes(self, op_node, pre, spec, kwargs):
        """The storages the op wrote (a version counter that moved is a write, as is
        what a fused optimizer op writes without moving one), each written once with a
        new version of every live tensor on it; None for none."""
        written = None
        unversioned = ops.unversioned_writes(spec, kwargs) if spec.unversioned is not None else None
        for pos, t, info, v0 in pre:
            moved = False
            if v0 is not None:
                try:
                    moved = t._version != v0
                except Exception:  # the counter went away: as version_of's None, a change
                    moved = True
            if moved or (
                    unversioned and ops.unversioned_written(unversioned, pos)):
                if written is None:
                    written = []
                if info.s in written:
                    continue
                written.append(info.s)
                s = self.tensors.storage_of(t)
                if s is not None and s is not info.s:  # resized or re-pointed storage
                    info.s, info.sid = s, s.sid
                    s.tensors.append(info.ref)
                    written.append(s)
        if written:
            for s in written:
                self.tensors.write(s, op_node)
        return written

    def _outputs(self, op_node, pre, arrays, out):
        """Register what the op returned: ``(out_infos, new_views, out_arrays)``, the
        returned tensors as ``(pos, tensor, info)``, new tensors on an input's storage
        as ``(info, input info)``, numpy arrays as ``(pos, array)``."""
        outs = ((0, out),) if isinstance(out, torch.Tensor) else results(out)
        new_views = out_arrays = None
        out_infos = []
        edges, tensors = self.records.edges, self.tensors
        by_id = tensors.by_id
        for pos, o in outs:
            if isinstance(o, np.ndarray):
                if out_arrays is None:
                    out_arrays = []
                out_arrays.append((pos, o))
                continue
            info = by_id.get(id(o))  # tensors.lookup(o), inlined: once per output
            if info is None or info.ref() is not o:
                info = tensors.register(o, "numpy" if arrays and shares_numpy(o, arrays) else "torch")
                for _, _, pinfo, _ in pre:
                    if pinfo.sid == info.sid:
                        if new_views is None:
                            new_views = []
                        new_views.append((info, pinfo))
                        break
            out_infos.append((pos, o, info))
            edges.append((op_node, info.node, "output", pos))
        return out_infos, new_views, out_arrays

    def _shared_buffers(self, op_node, pre, arrays, out_infos, out_arrays):
        """Numpy arrays the op returned on an input's buffer, and tensors it returned
        on an input array's buffer: ``shares_memory`` edges."""
        edges, tensors = self.records.edges, self.tensors
        for pos, a in out_arrays or ():
            np_node = self.arrays.returned(a, op_node, pos)
            for _, t, info, _ in pre:
                if array_shares(a, t):
                    edges.append((np_node, info.node, "shares_memory", None))
                    tensors.mark_numpy(info.s)
        for _, o, info in out_infos if arrays else ():
            for _, a in arrays:
                if array_shares(a, o):
                    edges.append((self.arrays.node(a), info.node, "shares_memory", None))
                    tensors.mark_numpy(info.s)

    def _category(self, spec, written, kwargs, pre, arrays, scalars, out_infos, out_arrays, new_views, op_node):
        """The op's category, decided from what happened (a move also gets its edge)."""
        name = spec.name
        if written:
            if name.endswith("__setitem__"):
                return "setitem"
            return "out" if "out" in kwargs else "inplace"
        if spec.meta:
            return "metadata"
        if spec.conversion and out_infos and pre:
            return self._move(spec, pre[0], out_infos[0], scalars, op_node)
        if out_arrays or (arrays and name in _NUMPY_FACTORIES
                          and any(shares_numpy(o, arrays) for _, o, _ in out_infos)):
            return "numpy"
        if new_views:
            return "view"
        if spec.factory or (out_infos and not pre):
            return "factory"
        return "compute" if out_infos else "other"

    def _move(self, spec, first_in, first_out, scalars, op_node) -> str:
        """A conversion: ``move`` (device, or a device asked for) or ``convert`` (dtype),
        recorded as a ``moved_to`` edge from its input to its result."""
        src_t, src = first_in[1], first_in[2]
        o, oinfo = first_out[1], first_out[2]
        device_changed = o.device != src_t.device
        asked = spec.base in ("cuda", "cpu", "mps", "xpu") or _names_device(scalars)
        self.records.edges.append((src.node, oinfo.node, (
            ("kind", "moved_to"), ("src_device", str(src_t.device)), ("dst_device", str(o.device)),
            ("src_dtype", dtype_name(src_t.dtype)), ("dst_dtype", dtype_name(o.dtype)),
            ("copy", o is not src_t), ("op", op_node),
        )))
        return "move" if device_changed or (asked and o.dtype == src_t.dtype) else "convert"

    def _views(self, name, new_views):
        """``view_of`` edges from each new view to the input it shares storage with."""
        alias = name.rsplit(".", 1)[-1] if name in _ALIASES else None
        edges = self.records.edges
        for info, base in new_views:
            if alias:
                edges.append((info.node, base.node, (("kind", "view_of"), ("alias", alias))))
            else:
                edges.append((info.node, base.node, "view_of", None))


def _names_device(scalars):
    return any(isinstance(v, (torch.device, str)) and not isinstance(v, bool) for v in scalars[1::2])
