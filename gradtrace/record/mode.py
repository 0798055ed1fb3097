"""The recorder: a ``TorchFunctionMode`` that hands every user-level torch call to the
registry that records it (``record/op.py`` for an op) and runs it exactly once.

The mode owns the registries and wires them to one another (none imports another):
tensors and storages, numpy arrays, autograd nodes, saved tensors, labels, autocast
casts, backward calls, compiled calls, and the per-op path. What they write lands in
``Records``; the graph is built from it once, at the end (``gradtrace.graph.build``).

The recorder never raises into user code: whatever it fails to read is recorded as
unknown (counted per reason). Its own reads and computations run out of sight of the
user's modes, subclasses and profiler (``hidden.py``)."""

from __future__ import annotations

import threading

import torch
from torch.overrides import TorchFunctionMode

from . import modestack, ops, source
from .autograd import AutogradNodes
from .backward import Backward
from .casts import Casts
from .compat import (
    any_autocast,
    is_compiling,
    redispatch_function,
    torch_is_building,
    torch_is_busy,
)
from .compiled import CompiledCalls
from .devicecopy import ValueCopies
from .hidden import no_function_modes
from .labels import Labels
from .modules import ModuleStack
from .numpy import Arrays
from .op import OpPath
from .optimizers import OptimizerSteps
from .records import Records, op_record, with_autocast
from .ring import Ring
from .saved import SavedTensors
from .tensors import Tensors
from .timing import OpTimes
from .updates import Updates
from .watch import Watch

__all__ = ["Recorder"]

_SPECS = ops.SPECS
_PLAIN_TF = (torch.Tensor.__torch_function__.__func__, torch._C._disabled_torch_function_impl)


class Recorder(TorchFunctionMode):
    """Records what torch does while it is the active function mode."""

    def __init__(self, values: str = "stats", values_max: int | None = None, stop_at: str | None = None,
                 last: int | None = None, dropped=None, updates: bool = True, time: bool = False):
        super().__init__()
        self.values = values
        self.thread = threading.get_ident()
        self.records = records = Records()
        self.callers: dict = {}  # see source.call_as_user; emptied when tracing ends
        self.process_groups: list = []  # see distributed.release; emptied when tracing ends
        self.copies = ValueCopies(limit=values_max)  # key -> CPU copy of a value, values="all" only
        self.tensors = Tensors(records, values, self.copies)
        # --stop-at nonfinite: the statistics' NaN/Inf counts, read at each step's end
        self.watch = self.tensors.watch = Watch(records) if stop_at == "nonfinite" else None
        self.autograd = AutogradNodes(records, f"gradtrace:{id(self)}")
        self.saved = SavedTensors(records)
        self.modules = ModuleStack()
        self.labels = Labels(records, self.tensors, self.modules, self)
        self.modules.listen(self.labels.module_first_call, self.labels.param_registered, self.labels.module_output)
        self.tensors.autograd, self.tensors.labels, self.tensors.pending = self.autograd, self.labels, self.labels.pending
        self.autograd.tensors, self.autograd.saved = self.tensors, self.saved
        self.saved.tensors = self.tensors
        self.arrays = Arrays(records)
        self.casts = Casts(records)
        self.backward = Backward(records, self.tensors, self.autograd, self.saved, self.labels, self.casts,
                                 self.modules, self, values)
        self.backward.watch = self.watch
        self.optimizers = OptimizerSteps(records, self.thread)
        # what each update did to a parameter: a statistic, so only where statistics are taken
        self.updates = Updates(records, self.tensors, self.thread) if updates and values != "none" else None
        self.times = self.backward.times = OpTimes(records) if time else None  # --time
        self.op_path = OpPath(records, self.tensors, self.arrays, self.saved, self.labels, self.casts,
                              self.modules, self.backward, self.callers, self.updates, self.times)
        self.compiled = CompiledCalls(records, self.tensors, self.op_path, self.modules, self.backward)
        # --last N: the records of the last N steps only (dropped(records) for each older one)
        self.ring = Ring(records, self.tensors, self.labels, self.autograd, self.copies if values == "all" else None,
                         last, dropped) if last else None
        self._specs: dict = {}
        self._busy = False
        self._paused_at = None  # the op marking where a trace of the program's own paused this one
        self._quiet = _Quiet(self)
        # Set when the trace ends. torch re-pushes a mode it popped in a generator
        # (overrides._pop_mode_temporarily) when that generator is closed: a signal
        # landing inside it can put an ended recorder back on the stack after the
        # trace removed it. Closed, it only passes calls through.
        self.closed = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if is_compiling():  # first, so that Dynamo folds it and traces nothing of ours
            return func(*args, **(kwargs or {}))
        if kwargs is None:
            kwargs = {}
        if self._busy or self.closed or threading.get_ident() != self.thread or torch_is_building():
            # torch.jit.trace and compilation record every torch call, ours included
            return func(*args, **kwargs)
        try:
            spec = _SPECS.get(func)
            if spec is None:
                spec = self._spec(func)
        except Exception as e:  # an unhashable callable, or one without a name
            self.records.note_unknown("op name", e)
            return func(*args, **kwargs)
        kind = spec.kind
        if kind == ops.OP:
            if self.backward.current is not None and source.called_by_autograd(2):
                return func(*args, **kwargs)
            return self.op_path.call(func, spec, args, kwargs)
        if kind == ops.PASS:
            return func(*args, **kwargs)
        if kind == ops.BACKWARD:
            return self._backward_call(func, spec, types, args, kwargs)
        if kind == ops.GRAD_MODE:
            return self._grad_mode_call(func, args, kwargs)
        if kind == ops.GRAD_READ:
            return self._grad_read(func, args, kwargs)
        if kind == ops.DATA_SET:
            return self._data_set(func, spec, args, kwargs)
        return func(*args, **kwargs)

    # -- what the collaborators (patches, distributed, module hooks) may ask ------------

    def sees_calls(self) -> bool:
        """True when a call reaching the recorder now is the program's to record: the
        recorder is not doing its own work, the trace has not ended, this is its thread."""
        return not self._busy and not self.closed and threading.get_ident() == self.thread and not torch_is_busy()

    def quiet(self):
        """A context in which the recorder records nothing (its own torch work, a hook
        of the program's that must not be recorded as the program's ops)."""
        return self._quiet

    def set_quiet(self, flag: bool) -> None:
        """Record nothing from now on (True) or again (False): for hooks that come in
        pairs rather than as one block."""
        self._busy = flag

    def is_quiet(self) -> bool:
        """True while the recorder records nothing."""
        return self._busy

    def tensor(self, t):
        """The record of tensor ``t``, registered on first sight."""
        return self.tensors.tensor(t)

    def note_unknown(self, what: str, exc: BaseException | None = None) -> None:
        """Count something that could not be read (the trace says so, per reason)."""
        self.records.note_unknown(what, exc)

    def run_backward(self, func, spec, args, kwargs):
        """Run a backward call the mode did not see (``torch.autograd.backward`` before
        torch 2.11) and record it; return its result."""
        return self.backward.run(func, spec, args, kwargs)

    def add_collective(self, attrs: dict, members) -> str:
        """Record a collective (a gradient bucket's all-reduce) over tensors ``members``;
        return its node id."""
        cid = self.records.next_id("c")
        self.records.collectives[cid] = {**attrs, "during": self.backward.current}
        for p in members:
            self.records.edges.append((cid, self.tensors.tensor(p).node, {"kind": "reduces"}))
        return cid

    def grad_mode_changed(self, name: str, arg) -> None:
        """The user's code switched grad mode (``torch.no_grad``, ``inference_mode``)."""
        self._mark(name, "grad_mode", source.user_frame(3), (0, arg),
                   with_autocast({"inference": torch.is_inference_mode_enabled()},
                                 self.casts.state() if any_autocast() else None))

    def step_marked(self) -> None:
        """The program called ``gradtrace.step()``: a step ends here (an op of category
        ``step``, at the user's line). Only on the tracing thread; raises nothing but
        ``--stop-at``'s :class:`~gradtrace.record.watch.StoppedAtNonfinite`."""
        if self.closed or threading.get_ident() != self.thread:
            return
        if self.updates is not None:
            self.updates.finish()  # the step's updates belong to it
        try:
            self._mark("gradtrace.step", "step", source.user_frame(3))
        except Exception as e:
            self.records.note_unknown("gradtrace.step", e)
        if self.watch is not None:
            self.watch.step_ended("mark")
        if self.ring is not None:
            self.ring.step_marked()

    def pause(self, frame) -> None:
        """The program entered a trace of its own inside this one (at ``frame``): record
        nothing until :meth:`resume` (the inner trace records that stretch), and leave an
        op ``gradtrace.trace`` at that line to say where."""
        if self.closed or self._paused_at is not None:
            return
        if self.updates is not None:
            self.updates.finish()
        try:
            seq = self._mark("gradtrace.trace", "other", frame, (),
                             {"paused": "the program's own gradtrace.trace() recorded this stretch"})
            self._paused_at = f"op:{seq}"
        except Exception as e:
            self.records.note_unknown("pause", e)
            self._paused_at = "op:?"
        self._busy = True

    def resume(self) -> None:
        """The inner trace ended: record again. A tensor of this recording written while
        it was paused gets a new version (``external``, seen at the pause's op)."""
        at, self._paused_at = self._paused_at, None
        if at is None or self.closed:
            return
        try:
            with no_function_modes():
                self.tensors.catch_up(at if at != "op:?" else None)
        except Exception as e:
            self.records.note_unknown("pause", e)
        self._busy = False

    def _mark(self, name: str, category: str, frame, scalars=(), extra=None) -> int:
        """Record an op of the recorder's own making (no tensors) at the user's ``frame``
        (None: unknown); return its call order."""
        records = self.records
        seq = records.next_seq()
        records.ops.append(op_record(
            seq, name, category, frame.f_code.co_filename if frame else None,
            source.line_of(frame) if frame else None, self.modules.current, torch.is_grad_enabled(),
            scalars, self.backward.current, extra, True))
        return seq

    def from_numpy(self, orig, array):
        """Stand-in for ``torch.from_numpy`` (which bypasses ``__torch_function__``)."""
        if self._busy or self.records.current_op is not None or threading.get_ident() != self.thread \
                or torch_is_busy():
            return orig(array)
        spec = self._specs.get(orig)
        if spec is None:
            spec = self._specs[orig] = ops.Spec("torch.from_numpy", ops.OP)
        # Unlike __torch_function__, this runs with the mode still active: keep the
        # recorder's own torch calls (statistics, checksums) out of the trace.
        with self._quiet:
            return self.op_path.call(orig, spec, (array,), {}, depth=4)

    def compiled_call_begin(self, wrapper_locals: dict):
        """A call into ``torch.compile``d code starts: see :meth:`CompiledCalls.begin`."""
        return self.compiled.begin(wrapper_locals)

    def compiled_call_end(self, call, result) -> None:
        """The compiled call returned: see :meth:`CompiledCalls.end`."""
        self.compiled.end(call, result)

    def unwire(self) -> None:
        """Let go of the references the registries hold to one another and to the mode
        (cycles): once its trace ends, the recorder is then freed by reference counting
        with the trace, not at the next full collection, which would walk every record.
        What building the graph reads (records, labels, modules, copies) stays."""
        self.tensors.autograd = self.tensors.labels = None
        self.autograd.tensors = self.autograd.saved = None
        self.saved.tensors = None
        self.labels.tensors = self.labels.mode = None
        self.backward.mode = self.backward.hooks = None
        self.op_path = self.compiled = None
        self._quiet.rec = None

    # -- the kinds of calls -------------------------------------------------------------

    def _spec(self, func):
        """The spec of a callable the process-wide cache does not hold: cached there
        when it lasts, else for this trace only."""
        spec = ops.cached_spec(func)
        if spec is None:
            spec = self._specs.get(func)
            if spec is None:
                spec = self._specs[func] = ops.spec_of(func)
        return spec

    def _backward_call(self, func, spec, types, args, kwargs):
        if self.backward.current is None:
            if self.updates is not None and self.updates.held:
                self.updates.finish()
            return self.backward.run(func, spec, args, kwargs)
        # The call has passed every mode the user entered (see Backward.run): run its
        # body with the recorder on, to see custom Functions' backward ops, unless a
        # Tensor subclass handles the call next, as it would untraced.
        if _overrides(types):
            return func(*args, **kwargs)
        # Not `with self:`: a signal landing inside torch's _pop_mode_temporarily
        # can take our entry off the stack for good, and the mode's __exit__ would
        # then raise "empty mode stack" in place of the user's KeyboardInterrupt.
        modestack.push(self)
        try:
            # Through a frame with the user's file and line: torch's warnings from
            # backward hooks (stacklevel counted from the engine) point there, as untraced.
            f = source.user_frame(3)
            if f is None:
                return redispatch_function(func, types, args, kwargs)
            return source.call_as_user(f, source.line_of(f), redispatch_function, (func, types, args, kwargs),
                                       {}, self.callers)
        finally:
            modestack.remove_top(self)

    def _grad_mode_call(self, func, args, kwargs):
        out = func(*args, **kwargs)
        try:
            name = source.grad_mode_caller(3)
            if name is not None:
                with no_function_modes():
                    self.grad_mode_changed(name, args[0] if args else kwargs.get("mode"))
        except Exception as e:
            self.records.note_unknown("grad mode", e)
        return out

    def _grad_read(self, func, args, kwargs):
        """``t.grad``: not an op, but the user's read ties a gradient to its tensor
        (a ``grad_of`` edge: a hand-written update reads it), and a read on a non-leaf
        is worth knowing. Torch's warning about it points at the caller's line, as untraced."""
        f, _, caller, _ = source.user_call(3)
        out = source.call_as_user(caller, source.line_of(caller), func, args, kwargs, self.callers) \
            if caller is not None else func(*args, **kwargs)
        try:
            with no_function_modes():
                t = args[0]
                if isinstance(out, torch.Tensor) and f is not None and caller is f:
                    owner = self.tensors.tensor(t)
                    info = self.tensors.tensor(out)
                    self.records.edges.append((info.node, owner.node, "grad_of", None))
                    self.labels.gradient(owner, info)
                if not t.is_leaf and not t.retains_grad:
                    info = self.tensors.tensor(t)
                    self.records.grad_reads.append(
                        {"tensor": info.node, "file": f.f_code.co_filename if f else None,
                         "line": source.line_of(f) if f else None}
                    )
        except Exception as e:
            self.records.note_unknown(".grad read", e)
        return out

    def _data_set(self, func, spec, args, kwargs):
        """``x.data = y``: an op only when it puts ``x`` on other memory."""
        try:
            with no_function_modes():
                info = self.tensors.lookup(args[0])
                same = info is not None and info.sid == getattr(self.tensors.storage_of(args[1]), "sid", None)
        except Exception as e:
            self.records.note_unknown("x.data = y", e)
            same = True
        return func(*args, **kwargs) if same else self.op_path.call(func, spec, args, kwargs, depth=4)


class _Quiet:
    """The recorder's quiet block: records nothing inside, restores what was before."""

    __slots__ = ("rec", "before")

    def __init__(self, rec):
        self.rec, self.before = rec, []

    def __enter__(self):
        self.before.append(self.rec._busy)
        self.rec._busy = True

    def __exit__(self, *exc):
        self.rec._busy = self.before.pop() if self.before else False
        return False


def _overrides(types) -> bool:
    """True when one of ``types`` has a ``__torch_function__`` of its own."""
    for t in types or ():
        f = getattr(t, "__torch_function__", None)
        if getattr(f, "__func__", f) not in _PLAIN_TF:
            return True
    return False
