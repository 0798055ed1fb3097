"""The names of tensors: the variable the user's line bound each to, the module path
of a parameter or buffer, and fallbacks where nothing better is known."""

from __future__ import annotations

import weakref

import torch

from . import source
from .hidden import no_function_modes
from .records import OP_MODULE

__all__ = ["Labels"]

_Module = torch.nn.Module
_UNKNOWN = object()  # a module call the stack does not hold: matches any


class Labels:
    """The registry of names. ``mode`` gates the callbacks module hooks make (they run
    while the mode is active: ``mode.sees_calls()``, ``mode.quiet()``)."""

    def __init__(self, records, tensors, modules, mode):
        self.records = records
        self.tensors = tensors
        self.modules = modules
        self.mode = mode
        self.labels: dict = {}  # tid -> variable name
        self.params: dict = {}  # tid -> (module path, attribute name, "parameter" | "buffer")
        self.fallback: dict = {}  # tid -> name bound to the result of a library call
        self.last_indirect: dict = {}  # (id(frame), f_lasti) -> (tid holding the statement's name, seq, module call)
        # Parameters and buffers given to a module while tracing, named from that
        # module's type where no module path names them (a module never called).
        self.registered: dict = {}  # tid -> (module number, module type, attribute name)
        self.pending: dict = {}  # id(tensor) -> (weakref, module number, type, name)
        self._module_numbers = weakref.WeakKeyDictionary()  # module -> its number

    # -- what the user's lines bind ----------------------------------------------------

    def name_results(self, frame, direct: bool, out_infos, out, seq: int) -> None:
        """Name the tensors an op returned (``out_infos``: ``(pos, tensor, info)``) by
        what the user's ``frame`` binds: the statement's name for a direct op (also one
        a helper returns: ``loss = loss_function(...)``), a fallback for library work."""
        if not direct:
            self._indirect(frame, out_infos, seq)
            return
        names = source.bound_name(frame)
        if names is None:
            names = source.returned_name(frame)
        if names is None:
            return
        labels = self.labels
        if isinstance(names, tuple):
            for (_, _, info), nm in zip(out_infos, names):
                if nm and info.tid not in labels:
                    labels[info.tid] = nm
        elif len(out_infos) == 1 or not isinstance(out, (tuple, list)):
            labels.setdefault(out_infos[0][2].tid, names)
        else:
            for i, (_, _, info) in enumerate(out_infos):
                labels.setdefault(info.tid, f"{names}[{i}]")

    def _indirect(self, frame, out_infos, seq) -> None:
        """``out = model(x)`` binds the result of the last op the call ran; the
        earlier ones (inside the forward, or each parameter of ``model.to()``)
        are not ``out``. Keep the name on the newest new tensor of each execution
        of the statement only, as a fallback label that real names and parameter
        names override. A call that builds or returns an object (``nn.Linear(...)``,
        ``model.to(device)``) binds that object: its tensors get no name."""
        name = source.bound_name(frame)
        if not isinstance(name, str):
            return
        info = out_infos[-1][2]
        if info.ver != 0:  # an existing tensor handed back (x.to on its own device)
            return
        callee, call_frame = source.callee_of(frame)
        if callee is not None and _binds_an_object(callee):
            return
        call = self._call_of(frame, call_frame)
        key = (id(frame), frame.f_lasti)
        prev = self.last_indirect.get(key)
        if (
            prev is not None
            and (prev[2] == call or prev[2] is _UNKNOWN or call is _UNKNOWN)
            and self.fallback.get(prev[0]) == name
            and self._same_run(prev[1], seq)
        ):
            del self.fallback[prev[0]]
        self.fallback[info.tid] = name
        self.last_indirect[key] = (info.tid, seq, call)

    def _call_of(self, frame, call_frame):
        """The number of the module call an indirect op of the user's ``frame`` belongs
        to as the statement sees it: the outermost module call between the two
        (``call_frame``: ``self.fc(x)``, ``layer(x)``), or where there is none the call
        ``frame`` itself runs in; None outside every module call, ``_UNKNOWN`` where the
        module stack does not hold that call (a module's own forward hook runs after
        the stack let the module go). A frame's address is reused once it is freed
        (block 1's ``Mlp.forward`` where block 0's was): two ops of one execution of a
        statement share this number, two executions in different module calls do not."""
        calls = self.modules.calls
        if not calls:
            return None
        if call_frame is None:
            call_frame = source.module_call_frame(frame.f_back)
            if call_frame is None:
                return _UNKNOWN
        key = id(call_frame)
        for number, frame_id in reversed(calls):
            if frame_id == key:
                return number
        return _UNKNOWN

    def _same_run(self, prev_seq, seq) -> bool:
        """True when op ``prev_seq`` and op ``seq`` (both of one statement) ran in one
        execution of it: every op between them ran inside the same top-level module
        (a loop runs other statements, or other modules, between two executions)."""
        op_at = self.records.op_at
        prev = op_at(prev_seq)
        module = prev[OP_MODULE] if prev is not None else None
        root = module.split(".", 1)[0] if module else None
        for i in range(prev_seq + 1, seq):  # stops at the first op of another statement
            r = op_at(i)
            if r is None:
                continue
            m = r[OP_MODULE]
            if root is None or m is None or m.split(".", 1)[0] != root:
                return False
        return True

    def gradient(self, owner, grad) -> None:
        """``p.grad`` read by the user: the gradient is ``NAME.grad`` where ``p`` has a name."""
        name = self.labels.get(owner.tid)
        if name is not None:
            self.labels.setdefault(grad.tid, f"{name}.grad")

    def receiver(self, frame, info) -> None:
        """``loss = outputs.loss; loss.backward()``: no op bound the root's name; the
        call's receiver names it (read from the bytecode, never from the frame's locals)."""
        if info.tid not in self.labels:
            name = source.receiver_name(frame, "backward")
            if name is not None:
                self.labels[info.tid] = name

    def named_before(self, named) -> None:
        """Name the tensors made before the trace (``[(weak reference, name)]``) that
        nothing in it named."""
        for ref, name in named:
            t = ref()
            info = self.tensors.lookup(t) if t is not None else None
            if info is not None and info.tid not in self.labels and info.tid not in self.params:
                self.labels[info.tid] = name

    # -- modules, through their hooks --------------------------------------------------

    def module_first_call(self, mod, path) -> None:
        """A module was called for the first time (or took its place in a tree): name
        its own parameters and buffers ``PATH.name``."""
        if not self.mode.sees_calls():
            return
        try:
            with self.mode.quiet(), no_function_modes():  # a module hook runs with the mode active
                for kind, named in _own_tensors(mod):
                    for name, p in named:
                        if p is not None:
                            tid = self.tensors.tensor(p).tid
                            self.labels[tid] = f"{path}.{name}"
                            self.params[tid] = (path, name, kind)
        except Exception as e:
            self.records.note_unknown("module parameters", e)

    def module_output(self, mod, output) -> None:
        """A module returned: when the user's line called it and binds the result
        (``out = model(x)``), that name is the output's fallback label (the result of
        a forward written in user code is made by a direct op, which no name reaches)."""
        if not self.mode.sees_calls():
            return
        try:
            frame = source.module_caller(3)
            if frame is None:
                return
            name = source.bound_name(frame)
            if name is None:
                return
            with no_function_modes():
                if isinstance(output, torch.Tensor) and isinstance(name, str):
                    pairs = ((output, name),)
                elif isinstance(output, (tuple, list)) and isinstance(name, tuple):
                    pairs = zip(output, name)
                else:
                    return
                for t, nm in pairs:
                    info = self.tensors.lookup(t) if isinstance(t, torch.Tensor) and nm else None
                    if info is not None:
                        self.fallback[info.tid] = nm
        except Exception as e:
            self.records.note_unknown("module output", e)

    def param_registered(self, mod, name, tensor, kind) -> None:
        """``mod.name = tensor`` registered a parameter or buffer: remember which
        module holds it, without registering the tensor (it may never be used)."""
        if not self.mode.sees_calls():
            return
        try:
            with no_function_modes():
                numbers = self._module_numbers
                n = numbers.get(mod)
                if n is None:
                    n = numbers[mod] = len(numbers)
                entry = (n, type(mod).__name__, name)
                info = self.tensors.lookup(tensor)
                if info is not None:
                    self.registered[info.tid] = entry
                else:
                    self.pending[id(tensor)] = (weakref.ref(tensor), *entry)
        except Exception as e:
            self.records.note_unknown("module parameters", e)

    def registered_now(self, key, t, tid) -> None:
        """Tensor ``t`` (``id`` ``key``) was seen for the first time as ``tid``: if a
        module registered it earlier, remember which."""
        pend = self.pending.pop(key, None)
        if pend is not None and pend[0]() is t:
            self.registered[tid] = pend[1:]

    # -- the names, once recording ends ------------------------------------------------

    def registered_labels(self) -> dict:
        """Return ``{tid: label}`` for parameters and buffers of modules that no
        module path names (never called while tracing): ``Linear.weight``, with
        ``Linear#2`` for the second such module, never a path a called module has."""
        taken = set(self.modules.modules)
        names: dict = {}
        out = {}
        for tid, (n, typ, attr) in sorted(self.registered.items()):
            if tid in self.params:
                continue
            base = names.get(n)
            if base is None:
                base, k = typ, 1
                while base in taken:
                    k += 1
                    base = f"{typ}#{k}"
                taken.add(base)
                names[n] = base
            out[tid] = f"{base}.{attr}"
        return out

    def by_tid(self) -> dict:
        """Return ``{tid: label}``: the name the user bound the tensor to, else the name
        of a library call's result, else its module's name for a parameter or buffer."""
        out = dict(self.registered_labels())
        out.update(self.fallback)
        out.update(self.labels)
        return out

    def keep_only(self, tids) -> None:
        """Forget the names of tensors other than ``tids`` (the flight recorder let go of
        their records)."""
        self.labels = {k: v for k, v in self.labels.items() if k in tids}
        self.fallback = {k: v for k, v in self.fallback.items() if k in tids}

    def release(self) -> None:
        """Let go of the name tables (they are in the graph now; a long loop has one
        entry per tensor)."""
        self.labels, self.fallback, self.last_indirect = {}, {}, {}


def _own_tensors(mod):
    """``(("parameter", pairs), ("buffer", pairs))``: the module's own parameters and
    buffers as ``named_parameters(recurse=False)`` and ``named_buffers(recurse=False)``
    give them, read from its dicts where its class keeps those methods (generators
    of generators cost more than the labelling they serve, once per module and trace)."""
    cls = type(mod)
    if (cls.named_parameters is not _Module.named_parameters or cls.named_buffers is not _Module.named_buffers
            or cls._named_members is not _Module._named_members):
        return (("parameter", mod.named_parameters(recurse=False)), ("buffer", mod.named_buffers(recurse=False)))
    return (("parameter", _distinct(mod._parameters)), ("buffer", _distinct(mod._buffers)))


def _distinct(members: dict):
    """``(name, tensor)`` pairs of ``members`` without None and without a tensor seen
    under an earlier name (``_named_members(remove_duplicate=True)``)."""
    out, seen = [], set()
    for name, v in members.items():
        if v is None or id(v) in seen:
            continue
        seen.add(id(v))
        out.append((name, v))
    return out


# Library calls whose value is an object, not the tensors made inside them: the
# constructor of a module (its initial weights) and nn.Module methods returning self.
_BINDS_AN_OBJECT = frozenset({
    "__init__", "__new__", "to", "to_empty", "cuda", "cpu", "xpu", "mps", "type", "float", "double",
    "half", "bfloat16", "_apply", "apply", "share_memory", "train", "eval", "requires_grad_",
    "load_state_dict", "reset_parameters",
})
# copy.copy / copy.deepcopy: their value is the copy of their argument, a tensor only
# when the argument is one (the clones inside ``deepcopy(model)`` are not the model).
_COPIES = frozenset({"deepcopy", "copy"})


def _binds_an_object(callee) -> bool:
    """True when the library call ``callee`` (the frame the user's line called into)
    returns an object other than the last tensor made inside it."""
    name = callee.f_code.co_name
    if name in _BINDS_AN_OBJECT:
        return True
    if name in _COPIES and callee.f_code.co_filename.endswith("copy.py"):
        return not isinstance(callee.f_locals.get("x"), torch.Tensor)
    return False
