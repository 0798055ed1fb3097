"""Calls into ``torch.compile``d code: one op each, its inputs and results, whatever the
compiled graph ran inside (which is the compiler's, not the user's ops)."""

from __future__ import annotations

import torch

from . import ops, source
from .hidden import no_function_modes
from .records import op_record
from .scan import scan
from .tensors import version_of

__all__ = ["CompiledCalls"]


class CompiledCalls:
    """Records each compiled call as one op, through the per-op path's ``after``."""

    def __init__(self, records, tensors, op_path, modules, backward):
        self.records = records
        self.tensors = tensors
        self.op_path = op_path
        self.modules = modules
        self.backward = backward

    def begin(self, wrapper_locals: dict):
        """A call into ``torch.compile``d code starts (``patches``): note its inputs.
        Return what :meth:`end` needs, or None."""
        records = self.records
        try:
            with no_function_modes():
                spec = ops.Spec(f"torch.compile({_compiled_name(wrapper_locals.get('fn'))})", ops.OP)
                seq = records.next_seq()
                op_node = f"op:{seq}"
                records.ops.append(None)
                inputs, _, scalars = scan(tuple(wrapper_locals.get("args") or ()),
                                          dict(wrapper_locals.get("kwargs") or {}))
                pre = []
                for pos, t in inputs:
                    info = self.tensors.tensor(t)
                    pre.append((pos, t, info, version_of(t)))
                    records.edges.append((info.node, op_node, "input", pos))
                frame = source.user_call(2)[0]
                file, line = (frame.f_code.co_filename, source.line_of(frame)) if frame is not None else (None, None)
                return [spec, seq, op_node, pre, scalars, frame, file, line, self.modules.current,
                        torch.is_grad_enabled()]
        except Exception as e:
            records.note_unknown("compiled call", e)
            return None

    def end(self, call, result) -> None:
        """The compiled call has returned ``result`` (None where torch does not say,
        before 2.13): record it as one op."""
        if call is None:
            return
        spec, seq, op_node, pre, scalars, frame, file, line, module, grad = call
        call.clear()  # the frame and the inputs are not kept
        cat, extra = "unknown", {"unknown": "outputs"}
        try:
            with no_function_modes():
                cat, extra = self.op_path.after(spec, op_node, pre, (), scalars, {}, result, frame, True, None, seq)
                extra = dict(extra or {}, compiled=True)
        except Exception as e:
            self.records.note_unknown("compiled call", e)
        finally:
            self.op_path.saved.discard()
            self.records.set_op(seq, op_record(seq, spec.name, cat, file, line, module, grad, scalars,
                                               self.backward.current, extra, True))


def _compiled_name(fn) -> str:
    """The name of what was compiled: a module's type, else the function's name."""
    for _ in range(8):  # a module's call is wrapped (functools.wraps) by Dynamo
        if getattr(fn, "__self__", None) is not None or not hasattr(fn, "__wrapped__"):
            break
        fn = fn.__wrapped__
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        return type(owner).__name__
    return getattr(fn, "__name__", None) or type(fn).__name__
