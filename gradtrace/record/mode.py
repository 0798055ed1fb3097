"""The recorder: a ``TorchFunctionMode`` that writes compact records of every
user-level torch call, tensor version, storage, autograd node and backward call.

The per-op path appends tuples and small dicts; the networkx graph is built from
them once, at the end (``build.py``). Tensors are known by weak references only,
so tracing keeps none of the program's tensors alive.

The recorder never raises into user code: the user's call runs exactly once and
its result or exception is what the user gets. Whatever the recorder fails to
read is recorded as unknown (``unknown``, counted per reason). Its own reads and
computations run out of sight of the user's modes, subclasses and profiler
(``hidden.py``), and saved tensors are read back only where no saved-tensor
hook would run.
"""

from __future__ import annotations

import inspect
import threading
import weakref
import zlib
from functools import partial
from itertools import chain

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from . import modestack, ops, source, stats
from .compat import (
    any_autocast,
    autocast_state,
    is_compiling,
    redispatch_function,
    saved_tensors_hooks_active,
    torch_is_building,
    torch_is_busy,
)
from .devicecopy import ValueCopies
from .hidden import hidden, is_plain, no_function_modes
from .modules import ModuleStack

_SPECS = ops._SPECS

_DTYPE_NAMES: dict = {}


def dtype_name(dt) -> str:
    """Return ``float32`` for ``torch.float32``."""
    n = _DTYPE_NAMES.get(dt)
    if n is None:
        n = _DTYPE_NAMES[dt] = str(dt).replace("torch.", "")
    return n


_DEVICE_NAMES: dict = {}


def device_name(dev) -> str:
    """Return ``cuda:0`` for ``torch.device("cuda", 0)``."""
    n = _DEVICE_NAMES.get(dev)
    if n is None:
        n = _DEVICE_NAMES[dev] = str(dev)
    return n


class _T:
    """What the recorder knows of one live tensor object."""

    __slots__ = ("tid", "ver", "tv", "sid", "s", "ref", "node", "rg", "crc")

    def __init__(self, tid, tv, s, ref):
        # The storage record lives as long as a tensor on it: no table of storage
        # records outlives them, so none of these objects reaches the GC's oldest generation.
        self.tid, self.ver, self.tv, self.s, self.ref = tid, 0, tv, s, ref
        self.sid = s.sid if s is not None else None
        self.node = self.rg = self.crc = None  # node and rg are set by _snapshot


class _S:
    """What the recorder knows of one storage: its id and the tensors seen on it."""

    __slots__ = ("sid", "tensors", "numpy", "ref")

    def __init__(self, sid, ref):
        self.sid, self.ref, self.tensors, self.numpy = sid, ref, [], False


def _version(t):
    try:
        return t._version
    except Exception:  # inference tensors have no version counter
        return None


class Recorder(TorchFunctionMode):
    """Records what torch does while it is the active function mode."""

    def __init__(self, values: str = "stats", values_max: int | None = None):
        super().__init__()
        self.values = values
        self.ops: list = []  # one tuple per op, in call order (see _op)
        self.tensors: list = []  # one tuple per tensor version, node id first (see _snapshot)
        self.storages: dict = {}  # "s:N" -> (device, nbytes, origin)
        self.numpy: dict = {}  # "np:N" -> dict
        self.fns: dict = {}  # "fn:N" -> dict
        self.backwards: dict = {}  # "bw:N" -> dict
        self.collectives: dict = {}  # "c:N" -> dict
        # (u, v, kind, pos) or (u, v, attrs): attrs a tuple of pairs, a flat tuple
        # (key, value, key, value, ...), or a dict where it is filled in later; tuples
        # of plain values are not tracked by the GC.
        self.edges: list = []
        self.labels: dict = {}  # tid -> variable name
        self.params: dict = {}  # tid -> (module path, attribute name, "parameter" | "buffer")
        self.fallback_labels: dict = {}  # tid -> name bound to the result of a library call
        self._last_indirect: dict = {}  # (id(frame), f_lasti) -> tid holding that statement's name
        self.grad_reads: list = []  # reads of .grad on non-leaf tensors
        self.copies = ValueCopies(limit=values_max)  # key -> CPU copy of a value, values="all" only
        self.modules = ModuleStack(on_first_call=self._label_parameters, on_registered=self._param_registered,
                                   on_output=self._module_output)
        # Parameters and buffers given to a module while tracing, named from that
        # module's type where no module path names them (a module never called).
        self.registered: dict = {}  # tid -> (module number, module type, attribute name)
        self._pending_registered: dict = {}  # id(tensor) -> (weakref, module number, type, name)
        self._module_numbers = weakref.WeakKeyDictionary()  # module -> its number
        self.thread = threading.get_ident()
        # Live tensors and storages by id(). A weak reference's callback drops
        # the entry when its object dies, so these small objects die young and
        # never reach the cyclic GC's oldest generation (whose collections walk
        # every object torch holds). Records kept after a death are tuples of
        # plain values, which the GC stops tracking.
        self._tmap: dict = {}  # id(tensor) -> _T
        self._smap: dict = {}  # id(storage) -> _S
        # The callbacks are C functions (``dict.pop(key, ref)``): no Python code of
        # ours runs when a program's tensor dies, so a signal's KeyboardInterrupt
        # cannot land (and be swallowed) inside a callback.
        self._drop_t = self._tmap.pop
        self._drop_s = self._smap.pop
        self._nmap: dict = {}  # id(ndarray) -> (weakref, "np:N")
        self._specs: dict = {}
        self._fn_out: dict = {}  # (fid, output_nr) -> last tensor node with that grad_fn
        self._fn_made: set = set()  # fids that produced a recorded tensor
        self._shapes: dict = {}  # interned shape and stride tuples
        self._autocast_states: dict = {}  # autocast state -> its shared {device: dtype} dict
        self.callers: dict = {}  # see source.call_as_user; emptied when tracing ends
        self._fn_leaf: dict = {}  # fid of an AccumulateGrad -> _T of its leaf
        self._compiled_fns: set = set()  # fids of CompiledFunctionBackward nodes
        self._saved_attrs: dict = {}
        self._key = f"gradtrace:{id(self)}"
        self._busy = False
        # Set when the trace ends. torch re-pushes a mode it popped in a generator
        # (overrides._pop_mode_temporarily) when that generator is closed: a signal
        # landing inside it can put an ended recorder back on the stack after the
        # trace removed it. Closed, it only passes calls through.
        self._closed = False
        self._bw = None  # the backward node id while a backward call runs
        self._op_id = None  # the op being recorded (for grad_fn attribution)
        self._pending_saved: list = []
        # AccumulateGrad fid -> (data_ptr, version, grad edge attrs) of the gradient that
        # arrived, per call; no reference, so AccumulateGrad may still steal it.
        self._arrived: dict = {}
        self.unknown: dict = {}  # (what, error type) -> [count, first message, first op]
        self._seq_start = _sequence_start()
        self._n = {"np": 0, "fn": 0, "bw": 0, "c": 0}
        self._ntid = 0
        self._nsid = 0

    def _unknown(self, what: str, exc: BaseException | None = None):
        """Count something the recorder could not read (the trace says so)."""
        key = (what, type(exc).__name__ if exc is not None else None)
        entry = self.unknown.get(key)
        if entry is None:
            msg = f"{type(exc).__name__}: {exc}".split("\n")[0][:300] if exc is not None else None
            self.unknown[key] = [1, msg, self._op_id or (f"op:{len(self.ops) - 1}" if self.ops else None)]
        else:
            entry[0] += 1

    # -- identity ---------------------------------------------------------------------

    def _next(self, prefix):
        n = self._n[prefix]
        self._n[prefix] = n + 1
        return n

    def lookup(self, t):
        """Return the record of a tensor the recorder has seen, or None."""
        info = self._tmap.get(id(t))
        if info is not None and info.ref() is t:
            return info
        return None

    def tensor(self, t, origin="torch") -> _T:
        """Return the record of ``t``, registering it (version 0) on first sight."""
        info = self._tmap.get(id(t))
        if info is not None and info.ref() is t:
            return info
        return self._register(t, origin)

    def _register(self, t, origin="torch") -> _T:
        """Record a tensor the recorder has not seen (version 0); return its record."""
        key = id(t)
        s = self._storage_of(t, origin)
        tid = self._ntid
        self._ntid = tid + 1
        info = _T(tid, _version(t), s, weakref.ref(t, partial(self._drop_t, key)))
        self._tmap[key] = info
        if s is not None:
            s.tensors.append(info.ref)
        if self._pending_registered:
            pend = self._pending_registered.pop(key, None)
            if pend is not None and pend[0]() is t:
                self.registered[tid] = pend[1:]
        self._snapshot(t, info)
        return info

    def _storage_of(self, t, origin="torch"):
        try:
            st = t.untyped_storage()
        except Exception:  # sparse, nested and other storage-less tensors
            return None
        key = id(st)
        s = self._smap.get(key)
        if s is not None and s.ref() is st:
            return s
        n = self._nsid
        self._nsid = n + 1
        s = _S(f"s:{n}", weakref.ref(st, partial(self._drop_s, key)))
        self._smap[key] = s
        dev = st.device
        self.storages[s.sid] = (_DEVICE_NAMES.get(dev) or device_name(dev), st.nbytes(), origin)
        return s

    def _snapshot(self, t, info):
        """Record the tensor node for the current version of ``t``. Each read that
        fails leaves its field unknown (None); none raises."""
        node = info.node = f"t:{info.tid}.{info.ver}"
        fid = None
        try:
            fn = t.grad_fn  # raises for a view written in a way autograd forbids
        except Exception as e:
            fn = None
            self._unknown("grad_fn", e)
        if fn is not None:
            try:
                fid = self._fn(fn)
            except Exception as e:
                self._unknown("autograd graph", e)
        shapes = self._shapes  # one tuple per distinct shape or stride: most repeat
        try:
            stride = t.stride()
            stride = shapes.setdefault(stride, stride)
            offset = t.storage_offset()
        except Exception:  # nested, sparse and other layouts without strides
            stride, offset = None, None
        try:
            shape = tuple(t.shape)
            shape = shapes.setdefault(shape, shape)
        except Exception as e:
            shape = None
            self._unknown("shape", e)
        try:
            dt, dev = t.dtype, t.device
            dtype = _DTYPE_NAMES.get(dt) or dtype_name(dt)
            device = _DEVICE_NAMES.get(dev) or device_name(dev)
        except Exception as e:
            dtype = device = None
            self._unknown("dtype and device", e)
        try:
            info.rg = rg = t.requires_grad
            leaf = t.is_leaf
        except Exception as e:  # both read grad_fn on a view
            rg = leaf = None
            if fn is not None:
                self._unknown("requires_grad", e)
        mode = self.values
        self.tensors.append((
            node, info.tid, info.ver, shape, dtype, device, stride, info.sid, offset, rg, leaf, fid,
            stats.compute(t) if mode != "none" else None,
        ))
        if fid is not None:
            try:
                self._fn_out[(fid, t.output_nr)] = node
            except Exception:
                pass
            self._fn_made.add(fid)
        if mode == "all":
            # A new version whose value did not change (a write of the same values, a
            # requires_grad_ flag) shares the previous version's copy.
            self._keep_value(node, t, f"t:{info.tid}.{info.ver - 1}" if info.ver else None)
        return node

    def _keep_value(self, key, t, same_as=None):
        try:
            if is_plain(t) and not t.is_meta and t.layout == torch.strided:
                with hidden(), torch.no_grad():
                    self.copies.keep(key, t, same_as)  # one contiguous CPU copy; from CUDA, without waiting
        except Exception:
            pass

    def _array(self, a, op_node, pos, edge_kind):
        entry = self._nmap.get(id(a))
        if entry is None or entry[0]() is not a:
            node = f"np:{self._next('np')}"
            self.numpy[node] = {"shape": list(a.shape), "dtype": str(a.dtype)}
            try:
                ref = weakref.ref(a)
            except TypeError:
                ref = lambda: None  # noqa: E731
            entry = self._nmap[id(a)] = (ref, node)
        if edge_kind == "input":
            self.edges.append((entry[1], op_node, "input", pos))
        else:
            self.edges.append((op_node, entry[1], "output", pos))
        return entry[1]

    # -- versions ---------------------------------------------------------------------

    def _write(self, s, op_node, external=None):
        """Bump the version of every live tensor known on storage record ``s``. An
        ``external`` write (numpy's side of a shared buffer) names the op that saw it."""
        if s is None:
            return
        sid = s.sid
        if op_node is not None:
            self.edges.append((op_node, sid, "writes", None))
        alive = []
        for ref in s.tensors:
            u = ref()
            if u is None:
                continue
            alive.append(ref)
            info = self._tmap.get(id(u))
            if info is None or info.ref is not ref:
                continue
            old = info.node
            tv = _version(u)
            visible = tv != info.tv
            info.tv = tv
            info.ver += 1
            new = self._snapshot(u, info)
            # Flat (key, value, key, value, ...): see _scan on why records stay two levels deep.
            attrs = ("kind", "next_version", "op", op_node, "visible", visible)
            if external:
                attrs += ("external", True, "seen_at", external)
            self.edges.append((old, new, attrs))
            if s.numpy:
                info.crc = _crc(u)
        s.tensors = alive
        st = s.ref()
        if st is not None:
            device, _, origin = self.storages[sid]
            self.storages[sid] = (device, st.nbytes(), origin)

    def _check_numpy_writes(self, t, info, op_node):
        """A numpy-side write to a shared buffer is invisible to torch: compare checksums."""
        if info.crc is not None and _crc(t) != info.crc:
            self._write(info.s, None, external=op_node)

    # -- autograd ---------------------------------------------------------------------

    def _fn(self, fn):
        """Return the id of autograd node ``fn``, recording it and the part of the
        graph behind it that is new."""
        key = self._key
        fid = fn.metadata.get(key)
        if fid is not None:
            return fid
        # Whether the op's new nodes may have their saved tensors read back: one
        # answer for all of them (no hook is pushed or popped while they are recorded).
        readable = [] if self._op_id is not None and not saved_tensors_hooks_active() else None
        root = fid = self._new_fn(fn, readable)
        edges = self.edges
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
                    cid = self._new_fn(nxt, readable)
                    stack.append((nxt, cid))
                edges.append((nid, cid, ("kind", "next", "input_nr", nr, "pos", pos)))
        if readable:
            pending = self._pending_saved
            with hidden():  # unpacking may detach: not the user's op
                for nid, node in readable:
                    pending.append((nid, self._saved_of(node)))
        return root

    def _new_fn(self, fn, readable):
        """Record autograd node ``fn``; ``readable``: None where its saved tensors
        must not be read back, else a list that gets ``(fid, fn)`` to read them from."""
        n = self._n["fn"]
        self._n["fn"] = n + 1
        fid = f"fn:{n}"
        fn.metadata[self._key] = fid
        name = fn.name()
        if name.startswith("torch::autograd::"):  # C++-only nodes carry their namespace
            name = name[len("torch::autograd::"):]
        attrs = self.fns[fid] = {"name": name, "op": self._op_id}
        if name == "AccumulateGrad":
            leaf = fn.variable
            info = self.tensor(leaf)
            self._fn_leaf[fid] = info
            self.edges.append((fid, info.node, "accumulates", None))
        elif readable is not None and self._fresh(fn):
            readable.append((fid, fn))
        else:
            # Reading these back would run unpack hooks (checkpoint's recomputation,
            # save_on_cpu's copy, the user's own): the program would change.
            attrs["saved"] = "unread"
        if name == "CompiledFunctionBackward":
            self._compiled_fns.add(fid)
        return fid

    def _fresh(self, fn) -> bool:
        """True when ``fn`` was made after tracing began (no hook of the user's
        can have been put on its saved tensors yet)."""
        try:
            return fn._sequence_nr() >= self._seq_start
        except Exception:
            return False

    def _saved_of(self, fn):
        """The tensors autograd node ``fn`` saved for backward, read back (the caller
        runs it ``hidden``: unpacking may detach, which is not the user's op)."""
        cls = type(fn)
        names = _SAVED_ATTRS.get(cls)
        torch_class = True
        if names is None:
            names = self._saved_attrs.get(cls)
            if names is None:
                names = _saved_names(fn)
                # A C++ node class is torch's for the whole process; a custom
                # Function's node class may be the program's, made at run time.
                torch_class = cls.__module__ == "builtins"
                (_SAVED_ATTRS if torch_class else self._saved_attrs)[cls] = names
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
            _SAVED_ATTRS[cls] = tuple(n for n in names if n not in scalars)
        return found

    def _resolve_saved(self):
        """Tie tensors saved by new autograd nodes to tensor nodes. Saved outputs
        come back as new Python objects, so match on storage, offset and shape."""
        pending, self._pending_saved = self._pending_saved, []
        for fid, tensors in pending:
            done = set()
            for t in tensors:
                info = self.lookup(t)
                node, via = (info.node, None) if info is not None else self._match(t)
                if node is None or node in done:
                    continue
                done.add(node)
                if via is None:
                    self.edges.append((fid, node, "saves", None))
                elif via == "view":
                    self.edges.append((fid, node, (("kind", "saves"), ("via", "view"))))
                else:  # a storage no live tensor of the trace is on
                    self.fns[fid].setdefault("saved_storages", []).append(node)

    def _match(self, t):
        """For a saved tensor the recorder has no record of: ``(node, None)`` for the
        tensor node with its storage, offset, shape and stride (a saved output comes
        back as a new object); ``(node, "view")`` for the base tensor node current on
        its storage, when autograd saved a view made inside the op (``weight.t()``
        in ``F.linear``); ``(sid, "storage")`` when no known tensor is on that storage;
        ``(None, None)`` for a tensor autograd made for itself (a wrapped scalar)."""
        try:
            st = t.untyped_storage()
        except Exception:
            return None, None
        s = self._smap.get(id(st))  # a storage the trace does not know holds no known tensor
        if s is None or s.ref() is not st:
            return None, None
        key = (t.storage_offset(), tuple(t.shape), t.stride())
        base = None
        for ref in s.tensors:
            u = ref()
            if u is None:
                continue
            info = self.lookup(u)
            if info is None:
                continue
            if (u.storage_offset(), tuple(u.shape), u.stride()) == key:
                return info.node, None
            if base is None or base[0]:
                base = (_is_view(u), info.node)  # the first non-view tensor on it
        if base is not None:
            return base[1], "view"
        return s.sid, "storage"

    # -- the mode ---------------------------------------------------------------------

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if is_compiling():  # first, so that Dynamo folds it and traces nothing of ours
            return func(*args, **(kwargs or {}))
        if kwargs is None:
            kwargs = {}
        if self._busy or self._closed or threading.get_ident() != self.thread or torch_is_building():
            # torch.jit.trace and compilation record every torch call, ours included
            return func(*args, **kwargs)
        try:
            spec = _SPECS.get(func)
            if spec is None:
                spec = self._spec(func)
        except Exception as e:  # an unhashable callable, or one without a name
            self._unknown("op name", e)
            return func(*args, **kwargs)
        kind = spec.kind
        if kind == ops.OP:
            if self._bw is not None and source.called_by_autograd(2):
                return func(*args, **kwargs)
            return self._op(func, spec, args, kwargs)
        if kind == ops.PASS:
            return func(*args, **kwargs)
        if kind == ops.BACKWARD:
            if self._bw is None:
                return self._backward(func, spec, types, args, kwargs)
            # The call has passed every mode the user entered (see _backward): run
            # its body with the recorder on, to see custom Functions' backward ops,
            # unless a Tensor subclass handles the call next, as it would untraced.
            if _overrides(types):
                return func(*args, **kwargs)
            # Not `with self:`: a signal landing inside torch's _pop_mode_temporarily
            # can take our entry off the stack for good, and the mode's __exit__ would
            # then raise "empty mode stack" in place of the user's KeyboardInterrupt.
            modestack.push(self)
            try:
                # Through a frame with the user's file and line: torch's warnings from
                # backward hooks (stacklevel counted from the engine) point there, as untraced.
                f = source.user_frame(2)
                if f is None:
                    return redispatch_function(func, types, args, kwargs)
                return source.call_as_user(f, source.line_of(f), redispatch_function, (func, types, args, kwargs),
                                           {}, self.callers)
            finally:
                modestack.remove_top(self)
        if kind == ops.GRAD_MODE:
            out = func(*args, **kwargs)
            try:
                name = source.grad_mode_caller()
                if name is not None:
                    with no_function_modes():
                        self._grad_mode(name, args[0] if args else kwargs.get("mode"))
            except Exception as e:
                self._unknown("grad mode", e)
            return out
        if kind == ops.GRAD_READ:
            return self._grad_read(func, args, kwargs)
        if kind == ops.DATA_SET:
            try:
                with no_function_modes():
                    info = self.lookup(args[0])
                    same = info is not None and info.sid == getattr(self._storage_of(args[1]), "sid", None)
            except Exception as e:
                self._unknown("x.data = y", e)
                same = True
            return func(*args, **kwargs) if same else self._op(func, spec, args, kwargs)
        return func(*args, **kwargs)

    def _spec(self, func):
        """The spec of a callable the process-wide cache does not hold: cached there
        when it lasts, else for this trace only."""
        spec = ops.cached_spec(func)
        if spec is None:
            spec = self._specs.get(func)
            if spec is None:
                spec = self._specs[func] = ops.spec_of(func)
        return spec

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
                    owner = self.tensor(t)
                    info = self.tensor(out)
                    self.edges.append((info.node, owner.node, "grad_of", None))
                    name = self.labels.get(owner.tid)
                    if name is not None:
                        self.labels.setdefault(info.tid, f"{name}.grad")
                if not t.is_leaf and not t.retains_grad:
                    info = self.tensor(t)
                    self.grad_reads.append(
                        {"tensor": info.node, "file": f.f_code.co_filename if f else None,
                         "line": source.line_of(f) if f else None}
                    )
        except Exception as e:
            self._unknown(".grad read", e)
        return out

    def _op(self, func, spec, args, kwargs, depth=3):
        """Call ``func`` once and record it as one op; return what it returned.
        Only ``func`` itself may raise into the caller."""
        ops_ = self.ops
        seq = len(ops_)
        op_node = f"op:{seq}"
        ops_.append(None)  # the slot keeps call order; filled in below
        module, grad, bw = self.modules.current, torch.is_grad_enabled(), self._bw
        ac = self._autocast() if any_autocast() else None
        frame = file = line = caller = lib = None
        direct, scalars, pre, arrays = False, (), [], ()
        try:
            with no_function_modes():
                inputs, arrays, scalars = _scan(args, kwargs)
                tmap = self._tmap
                edges = self.edges
                for pos, t in inputs:  # pre: (pos, tensor, info, version before)
                    info = tmap.get(id(t))  # self.tensor(t), inlined: the hottest loop
                    if info is None or info.ref() is not t:
                        info = self._register(t)
                    if info.crc is not None:
                        self._check_numpy_writes(t, info, op_node)
                    try:
                        v0 = t._version
                    except Exception:  # inference tensors have no version counter
                        v0 = None
                    pre.append((pos, t, info, v0))
                    edges.append((info.node, op_node, "input", pos))
                for pos, a in arrays:
                    self._array(a, op_node, pos, "input")
                frame, direct, caller, lib = source.user_call(depth, spec.code)
                if frame is not None:
                    file, line = frame.f_code.co_filename, source.line_of(frame)
                if lib is not None:
                    lib = {"lib_file": lib.f_code.co_filename, "lib_line": source.line_of(lib)}
        except Exception as e:
            self._unknown("op inputs", e)
            ops_[seq] = (seq, spec.name, "unknown", file, line, module, grad, scalars, bw,
                         _with(ac, {"unknown": "inputs"}), direct)
            return func(*args, **kwargs)
        self._op_id = op_node
        try:
            if caller is not None:
                # Through a frame with the caller's file, line and module globals: a
                # warning raised inside the op is attributed and filtered as untraced.
                out = source.call_as_user(caller, line if caller is frame else source.line_of(caller), func, args,
                                          kwargs, self.callers)
            else:
                out = func(*args, **kwargs)
        except BaseException as e:
            self._op_id = None
            self._pending_saved = []
            ops_[seq] = (seq, spec.name, "other", file, line, module, grad, scalars, bw,
                         _with(ac, {"error": f"{type(e).__name__}: {e}".split("\n")[0][:500]}), direct)
            raise
        cat, extra = "unknown", {"unknown": "outputs"}
        try:
            with no_function_modes():
                cat, extra = self._after(spec, op_node, pre, arrays, scalars, kwargs, out, frame, direct, ac)
        except Exception as e:
            self._unknown("op outputs", e)
            self._pending_saved = []
        finally:
            self._op_id = None
            if ac is not None:
                extra = _with(ac, extra)
            if lib is not None:
                extra = {**extra, **lib} if extra else lib
            ops_[seq] = (seq, spec.name, cat, file, line, module, grad, scalars, bw, extra, direct)
        return out

    def compiled_call_begin(self, wrapper_locals: dict):
        """A call into ``torch.compile``d code starts (``patches``): note its inputs.
        Return what :meth:`compiled_call_end` needs, or None."""
        try:
            with no_function_modes():
                fn = wrapper_locals.get("fn")
                for _ in range(8):  # a module's call is wrapped (functools.wraps) by Dynamo
                    if getattr(fn, "__self__", None) is not None or not hasattr(fn, "__wrapped__"):
                        break
                    fn = fn.__wrapped__
                owner = getattr(fn, "__self__", None)
                name = type(owner).__name__ if isinstance(owner, torch.nn.Module) else (
                    getattr(fn, "__name__", None) or type(fn).__name__)
                spec = ops.Spec(f"torch.compile({name})", ops.OP)
                seq = len(self.ops)
                op_node = f"op:{seq}"
                self.ops.append(None)
                inputs, _, scalars = _scan(tuple(wrapper_locals.get("args") or ()),
                                           dict(wrapper_locals.get("kwargs") or {}))
                pre = []
                for pos, t in inputs:
                    info = self.tensor(t)
                    pre.append((pos, t, info, _version(t)))
                    self.edges.append((info.node, op_node, "input", pos))
                frame = source.user_call(2)[0]
                file, line = (frame.f_code.co_filename, source.line_of(frame)) if frame is not None else (None, None)
                return [spec, seq, op_node, pre, scalars, frame, file, line, self.modules.current,
                        torch.is_grad_enabled()]
        except Exception as e:
            self._unknown("compiled call", e)
            return None

    def compiled_call_end(self, call, result):
        """The compiled call has returned ``result`` (None where torch does not say,
        before 2.13): record it as one op."""
        if call is None:
            return
        spec, seq, op_node, pre, scalars, frame, file, line, module, grad = call
        call.clear()  # the frame and the inputs are not kept
        cat, extra = "unknown", {"unknown": "outputs"}
        try:
            with no_function_modes():
                cat, extra = self._after(spec, op_node, pre, (), scalars, {}, result, frame, True)
                extra = dict(extra or {}, compiled=True)
        except Exception as e:
            self._unknown("compiled call", e)
        finally:
            self._pending_saved = []
            self.ops[seq] = (seq, spec.name, cat, file, line, module, grad, scalars, self._bw, extra, True)

    def _after(self, spec, op_node, pre, arrays, scalars, kwargs, out, frame, direct, ac=None):
        """Record what an op did; return its category and extra attributes. ``frame``
        is the user's frame (its current statement may bind the result to a name);
        ``direct`` says whether the user called the op itself rather than library
        code on the user's behalf (a module's forward, ``model.to(device)``)."""
        edges = self.edges
        # Writes: a version counter that moved is a write to that storage.
        written = None
        for pos, t, info, v0 in pre:
            if v0 is not None and _version(t) != v0:
                if written is None:
                    written = []
                if info.s in written:
                    continue
                written.append(info.s)
                s = self._storage_of(t)
                if s is not None and s is not info.s:  # resized or re-pointed storage
                    info.s, info.sid = s, s.sid
                    s.tensors.append(info.ref)
                    written.append(s)
        if written:
            for s in written:
                self._write(s, op_node)
        if spec.kind == ops.DATA_SET and pre:
            self._data_swapped(pre[0][1], pre[0][2], op_node)
        if spec.meta:
            for _, t, info, _ in pre:
                if t.requires_grad != info.rg:
                    old = info.node
                    info.ver += 1
                    # Not a write: no data changed, and autograd sees the new flag.
                    edges.append((old, self._snapshot(t, info),
                                  (("kind", "next_version"), ("op", op_node), ("visible", True),
                                   ("metadata_only", True))))
        # Outputs
        if isinstance(out, torch.Tensor):
            outs = ((0, out),)
        else:
            outs = []
            _outputs(out, outs)
        new_views = out_arrays = None
        out_infos = []
        for pos, o in outs:
            if isinstance(o, np.ndarray):
                if out_arrays is None:
                    out_arrays = []
                out_arrays.append((pos, o))
                continue
            info = self.lookup(o)
            if info is None:
                info = self._register(o, "numpy" if arrays and _shares_numpy(o, arrays) else "torch")
                for _, _, pinfo, _ in pre:
                    if pinfo.sid == info.sid:
                        if new_views is None:
                            new_views = []
                        new_views.append((info, pinfo))
                        break
            out_infos.append((pos, o, info))
            edges.append((op_node, info.node, "output", pos))
        if out_arrays:
            for pos, a in out_arrays:
                np_node = self._array(a, op_node, pos, "output")
                for _, t, info, _ in pre:
                    if _array_shares(a, t):
                        edges.append((np_node, info.node, "shares_memory", None))
                        self._mark_numpy(info.s)
        if arrays:
            for pos, o, info in out_infos:
                for _, a in arrays:
                    if _array_shares(a, o):
                        edges.append((self._nmap[id(a)][1], info.node, "shares_memory", None))
                        self._mark_numpy(info.s)
        # Category, decided from what happened
        name = spec.name
        if written:
            if name.endswith("__setitem__"):
                cat = "setitem"
            elif "out" in kwargs:
                cat = "out"
            else:
                cat = "inplace"
        elif spec.meta:
            cat = "metadata"
        elif spec.conversion and out_infos and pre:
            src_t, src = pre[0][1], pre[0][2]
            o, oinfo = out_infos[0][1], out_infos[0][2]
            device_changed = o.device != src_t.device
            asked = spec.base in ("cuda", "cpu", "mps", "xpu") or _names_device(scalars)
            cat = "move" if device_changed or (asked and o.dtype == src_t.dtype) else "convert"
            edges.append((src.node, oinfo.node, (
                ("kind", "moved_to"), ("src_device", str(src_t.device)), ("dst_device", str(o.device)),
                ("src_dtype", dtype_name(src_t.dtype)), ("dst_dtype", dtype_name(o.dtype)),
                ("copy", o is not src_t), ("op", op_node),
            )))
        elif out_arrays or (arrays and spec.name in ("torch.from_numpy", "torch.as_tensor", "torch.asarray")
                            and any(_shares_numpy(o, arrays) for _, o, _ in out_infos)):
            cat = "numpy"
        elif new_views:
            cat = "view"
        elif spec.factory or (out_infos and not pre):
            cat = "factory"
        elif out_infos:
            cat = "compute"
        else:
            cat = "other"
        if new_views:
            alias = name.rsplit(".", 1)[-1] if name in _ALIASES else None
            for info, base in new_views:
                if alias:
                    edges.append((info.node, base.node, (("kind", "view_of"), ("alias", alias))))
                else:
                    edges.append((info.node, base.node, "view_of", None))
        if ac is not None and out_infos and pre and cat not in ("move", "convert"):
            self._autocast_casts(op_node, pre, out_infos[0], ac)
        # Names the user binds the result to
        if frame is not None and out_infos and not direct:
            self._indirect_label(frame, out_infos, int(op_node[3:]))
        elif frame is not None and out_infos:
            names = source.bound_name(frame)
            if names is None:
                names = source.returned_name(frame)
            if names is not None:
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
        if self._pending_saved:
            self._resolve_saved()
        for _, t, info, _ in pre:
            if info.crc is not None:
                info.crc = _crc(t)
        return cat, _RANDOM if spec.random else None

    def _data_swapped(self, t, info, op_node):
        """``t.data = other`` put ``t`` on other memory (``model.double()`` does it for
        each parameter): ``t`` keeps its identity, name and module, and gets a new
        version on the new storage, possibly of another dtype or device."""
        s = self._storage_of(t)
        if s is None or s is info.s:
            return
        if info.s is not None:  # a later write into the old memory is not a write into t
            info.s.tensors = [r for r in info.s.tensors if r is not info.ref]
        info.s, info.sid = s, s.sid
        s.tensors.append(info.ref)
        old = info.node
        info.tv = _version(t)
        info.ver += 1
        # No version counter moved: autograd cannot see the swap.
        self.edges.append((old, self._snapshot(t, info), (
            ("kind", "next_version"), ("op", op_node), ("visible", False), ("data_set", True))))

    def _autocast(self):
        """The autocast regions enabled now, as ``{device_type: dtype name}``: one
        dict per distinct state, shared by the records of all ops run in it."""
        try:
            state = tuple((dev, dtype_name(dt)) for dev, dt in autocast_state().items())
        except Exception as e:
            self._unknown("autocast", e)
            return None
        d = self._autocast_states.get(state)
        if d is None:
            d = self._autocast_states[state] = dict(state)
        return d or None

    def _autocast_casts(self, op_node, pre, first_out, ac):
        """Autocast ran the op at its dtype: each floating input of another dtype on
        an autocast device was cast to it on the way in. Record each such cast as a
        ``moved_to`` edge from the input to the op's result (``autocast: true``)."""
        o, oinfo = first_out[1], first_out[2]
        dst = dtype_name(o.dtype)
        done = None
        for _, t, info, _ in pre:
            dev = t.device
            if ac.get(dev.type) != dst or not t.dtype.is_floating_point or dtype_name(t.dtype) == dst:
                continue
            if done is None:
                done = set()
            if info.node in done:
                continue
            done.add(info.node)
            dname = _DEVICE_NAMES.get(dev) or device_name(dev)
            self.edges.append((info.node, oinfo.node, (
                ("kind", "moved_to"), ("src_device", dname), ("dst_device", dname),
                ("src_dtype", dtype_name(t.dtype)), ("dst_dtype", dst), ("copy", True),
                ("autocast", True), ("op", op_node),
            )))

    def _indirect_label(self, frame, out_infos, seq):
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
        callee = source.callee_of(frame)
        if callee is not None and _binds_an_object(callee):
            return
        key = (id(frame), frame.f_lasti)
        prev = self._last_indirect.get(key)
        if prev is not None and self.fallback_labels.get(prev[0]) == name and self._same_run(prev[1], seq):
            del self.fallback_labels[prev[0]]
        self.fallback_labels[info.tid] = name
        self._last_indirect[key] = (info.tid, seq)

    def _same_run(self, prev_seq, seq) -> bool:
        """True when op ``prev_seq`` and op ``seq`` (both of one statement) ran in one
        execution of it: every op between them ran inside the same top-level module
        (a loop runs other statements, or other modules, between two executions)."""
        ops_ = self.ops
        module = ops_[prev_seq][5] if ops_[prev_seq] is not None else None
        root = module.split(".", 1)[0] if module else None
        for i in range(prev_seq + 1, seq):  # stops at the first op of another statement
            r = ops_[i]
            if r is None:
                continue
            m = r[5]
            if root is None or m is None or m.split(".", 1)[0] != root:
                return False
        return True

    def _mark_numpy(self, s):
        if s is None:
            return
        s.numpy = True
        for ref in s.tensors:
            u = ref()
            if u is not None:
                info = self.lookup(u)
                if info is not None:
                    info.crc = _crc(u)

    def from_numpy(self, orig, array):
        """Stand-in for ``torch.from_numpy`` (which bypasses ``__torch_function__``)."""
        if self._busy or self._op_id is not None or threading.get_ident() != self.thread or torch_is_busy():
            return orig(array)
        spec = self._specs.get(orig)
        if spec is None:
            spec = self._specs[orig] = ops.Spec("torch.from_numpy", ops.OP)
        # Unlike __torch_function__, this runs with the mode still active: keep the
        # recorder's own torch calls (statistics, checksums) out of the trace.
        self._busy = True
        try:
            return self._op(orig, spec, (array,), {}, depth=4)
        finally:
            self._busy = False

    def _grad_mode(self, name, arg):
        f = source.user_frame(3)
        self.ops.append((
            len(self.ops), name, "grad_mode", f.f_code.co_filename if f else None,
            source.line_of(f) if f else None, self.modules.current, torch.is_grad_enabled(),
            (0, arg), self._bw,
            _with(self._autocast() if any_autocast() else None, {"inference": torch.is_inference_mode_enabled()}),
            True,
        ))

    def _label_parameters(self, mod, path):
        if self._busy or threading.get_ident() != self.thread or torch_is_busy():
            return
        labels = self.labels
        self._busy = True  # a module hook runs with the mode active
        try:
            with no_function_modes():
                for kind, named in _own_tensors(mod):
                    for name, p in named:
                        if p is not None:
                            tid = self.tensor(p).tid
                            labels[tid] = f"{path}.{name}"
                            self.params[tid] = (path, name, kind)
        except Exception as e:
            self._unknown("module parameters", e)
        finally:
            self._busy = False

    def _module_output(self, mod, output):
        """A module returned: when the user's line called it and binds the result
        (``out = model(x)``), that name is the output's fallback label (the result of
        a forward written in user code is made by a direct op, which no name reaches)."""
        if self._busy or self._closed or threading.get_ident() != self.thread or torch_is_busy():
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
                    info = self.lookup(t) if isinstance(t, torch.Tensor) and nm else None
                    if info is not None:
                        self.fallback_labels[info.tid] = nm
        except Exception as e:
            self._unknown("module output", e)

    def _param_registered(self, mod, name, tensor, kind):
        """``mod.name = tensor`` registered a parameter or buffer: remember which
        module holds it, without registering the tensor (it may never be used)."""
        if self._busy or self._closed:
            return
        try:
            with no_function_modes():
                numbers = self._module_numbers
                n = numbers.get(mod)
                if n is None:
                    n = numbers[mod] = len(numbers)
                entry = (n, type(mod).__name__, name)
                info = self.lookup(tensor)
                if info is not None:
                    self.registered[info.tid] = entry
                else:
                    self._pending_registered[id(tensor)] = (weakref.ref(tensor), *entry)
        except Exception as e:
            self._unknown("module parameters", e)

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

    # -- backward ---------------------------------------------------------------------

    def _backward(self, func, spec, types, args, kwargs):
        """Run one backward call (the user's ``func``, once) and record it: its roots
        and weighting vectors, the gradient reaching each recorded tensor, what
        accumulated into each leaf's ``.grad``."""
        try:
            with hidden():
                before = self._backward_before(func, spec, args, kwargs)
        except Exception as e:
            self._unknown("backward call", e)
            before = None
        if before is None:
            return func(*args, **kwargs)
        bw, bound, record, root_keys, seen_grads, handles, leaves, prior = before
        self._bw = bw
        try:
            # Under the user's modes, so each sees this call as it would untraced;
            # it comes back to __torch_function__ once they have passed it on.
            modestack.push_under(self)
            try:
                result = func(*args, **kwargs)
            finally:
                modestack.remove(self)
        except BaseException as e:
            self.backwards[bw]["error"] = f"{type(e).__name__}: {e}".split("\n")[0][:500]
            record[9]["error"] = self.backwards[bw]["error"]
            raise
        finally:
            self._bw = None
            self._busy = False
            self._arrived = {}
            for h in handles:
                h.remove()
            for key in root_keys:
                if key is not None and (key[0], key[1]) in seen_grads:
                    key[2]["received"] = seen_grads[(key[0], key[1])]
        self._busy = True
        try:
            with hidden():
                self._backward_after(spec.name, bw, bound, result, leaves, prior)
        except Exception as e:
            self._unknown("gradients after backward", e)
        finally:
            self._busy = False
            self._arrived = {}
        return result

    def _backward_before(self, func, spec, args, kwargs):
        api = spec.name
        bound = _signature(func).bind(*args, **kwargs).arguments
        if api == "Tensor.backward":
            roots, grads = [bound["self"]], [bound.get("gradient")]
        elif api == "torch.autograd.backward":
            roots = _as_list(bound["tensors"])
            grads = bound.get("grad_tensors")
            if grads is None:
                grads = bound.get("grad_variables")
            grads = _as_list(grads) if grads is not None else [None] * len(roots)
        else:
            roots = _as_list(bound["outputs"])
            grads = bound.get("grad_outputs")
            grads = _as_list(grads) if grads is not None else [None] * len(roots)
        seq = len(self.ops)
        op_node = f"op:{seq}"
        bw = f"bw:{self._next('bw')}"
        frame = source.user_frame(3)
        record = (seq, api, "backward", frame.f_code.co_filename if frame else None,
                  source.line_of(frame) if frame else None, self.modules.current, torch.is_grad_enabled(),
                  (), None, _with(self._autocast() if any_autocast() else None, {"backward": bw}), True)
        self.ops.append(record)
        implicit = all(g is None for g in grads) and all(
            isinstance(r, torch.Tensor) and r.numel() == 1 for r in roots)
        self.backwards[bw] = {
            "seq": int(bw[3:]), "api": api, "implicit": implicit,
            "retain_graph": bound.get("retain_graph"), "create_graph": bool(bound.get("create_graph")),
            "op": op_node,
        }
        weights = []
        root_keys = []
        for i, (r, g) in enumerate(zip(roots, grads)):
            if not isinstance(r, torch.Tensor):
                continue
            info = self.tensor(r)
            if frame is not None and api == "Tensor.backward" and info.tid not in self.labels:
                # `loss = outputs.loss; loss.backward()`: no op bound the name `loss`
                name = source.receiver_name(frame, "backward")
                if name is not None:
                    self.labels[info.tid] = name
            self.edges.append((info.node, op_node, "input", i))
            attrs = {"kind": "weights", "gradient": None}
            if isinstance(g, torch.Tensor):
                ginfo = self.tensor(g)
                attrs["gradient"] = ginfo.node
                self.edges.append((ginfo.node, op_node, {"kind": "input", "pos": f"gradient{i}"}))
            elif g is not None:
                attrs["gradient_value"] = g
            weights.append((bw, info.node, attrs))
            fn = r.grad_fn
            root_keys.append((self._fn(fn), r.output_nr, attrs) if fn is not None else None)
        self.edges.extend(weights)
        if self._pending_saved:
            self._resolve_saved()
        seen_grads = {}
        handles, leaves = self._hook_graph(roots, bw, seen_grads)
        prior = {}
        for fid, leaf in leaves.items() if api != "torch.autograd.grad" else ():
            if leaf.grad is not None:
                prior[fid] = stats.compute(leaf.grad) if self.values != "none" else None
        return bw, bound, record, root_keys, seen_grads, handles, leaves, prior

    def _backward_after(self, api, bw, bound, result, leaves, prior):
        if api == "torch.autograd.grad":
            # It returns its gradients and leaves every .grad as it was.
            inputs = _as_list(bound["inputs"])
            for t, g in zip(inputs, result):
                if isinstance(t, torch.Tensor) and isinstance(g, torch.Tensor):
                    self._grad_edge("grad", bw, self.tensor(t).node, g)
            return
        for fid, leaf in leaves.items():
            g = leaf.grad
            if g is None:
                continue
            info = self.tensor(leaf)
            arrived = self._arrived.get(fid)
            if fid not in prior and arrived is not None and arrived[:2] == _identity(g):
                # .grad is the very gradient that arrived (AccumulateGrad took it
                # as is): its statistics and value are already recorded.
                attrs = {"kind": "leaf_grad", "stats": arrived[2]["stats"]}
                if "value" in arrived[2]:
                    attrs["value"] = arrived[2]["value"]
                self.edges.append((bw, info.node, attrs))
            else:
                attrs = self._grad_edge("leaf_grad", bw, info.node, g)
            attrs["prior"] = prior.get(fid)
            attrs["accumulated"] = fid in prior

    def _grad_edge(self, kind, bw, node, g):
        attrs = {"kind": kind, "stats": stats.compute(g) if self.values != "none" else None}
        if self.values == "all":
            key = f"{kind}:{bw}:{node}"
            self._keep_value(key, g)
            attrs["value"] = key
        self.edges.append((bw, node, attrs))
        return attrs

    def _hook_graph(self, roots, bw, seen):
        """Put a pre-hook on every autograd node the backward call can reach, to
        see the gradient arriving at each recorded tensor."""
        key = self._key
        handles, leaves = [], {}
        stack = [r.grad_fn for r in roots if isinstance(r, torch.Tensor) and r.grad_fn is not None]
        # What reaches a root is recorded on the root's weights edge ("received").
        root_fids = {fn.metadata.get(key) for fn in stack}
        visited = set()
        rec = weakref.ref(self)
        fn_leaf, fn_made = self._fn_leaf, self._fn_made
        while stack:
            fn = stack.pop()
            fid = fn.metadata.get(key)
            if fid is None:
                fid = self._fn(fn)
            if fid in visited:
                continue
            visited.add(fid)
            if fid in fn_leaf:
                leaf = fn.variable
                leaves[fid] = leaf
            # Nodes that made no recorded tensor (the transposes inside F.linear, say)
            # have no gradient to record: a Python hook there would only cost time.
            if fid in fn_made or fid in fn_leaf:
                hook = self._make_hook(fid, bw, seen if fid in root_fids else None, rec)
                handles.append(fn.register_prehook(hook))
            if fid in self._compiled_fns:
                # What a compiled backward runs is the compiler's, not the user's ops.
                handles.append(fn.register_prehook(partial(_set_busy, weakref.ref(self), True)))
                handles.append(fn.register_hook(partial(_set_busy, weakref.ref(self), False)))
            for n, _ in fn.next_functions:
                if n is not None:
                    stack.append(n)
        return handles, leaves

    def _make_hook(self, fid, bw, seen, rec=None):
        """A pre-hook recording the gradients reaching node ``fid``; ``seen`` (for a
        root's node only) gets what reached it. ``rec``: a weak reference to the recorder."""
        if rec is None:
            rec = weakref.ref(self)
        if self.values == "none":
            # No statistics, no values: away from leaves and roots the hook reads no
            # gradient at all; at them it reads metadata only (data_ptr, _version,
            # dtype, shape), which no dispatch mode or profiler sees, so function
            # modes are all there is to keep out.
            if seen is None and fid not in self._fn_leaf:
                return partial(_plain_arrival, rec, fid, bw)
            shelter = no_function_modes
        else:
            shelter = hidden  # statistics and copies are torch work

        def hook(grad_outputs):
            self_ = rec()
            if self_ is None or torch_is_busy():
                return None
            self_._busy = True
            try:
                with shelter():
                    self_._arriving(fid, bw, seen, grad_outputs)
            except Exception as e:
                self_._unknown("arriving gradient", e)
            finally:
                self_._busy = False
            return None

        return hook

    def _arriving(self, fid, bw, seen, grad_outputs):
        """Record the gradients reaching autograd node ``fid`` (keeping none of them)."""
        leaf = self._fn_leaf.get(fid)
        for nr, g in enumerate(grad_outputs):
            if not isinstance(g, torch.Tensor):
                continue
            node = leaf.node if leaf is not None else self._fn_out.get((fid, nr))
            if node is None:
                continue
            attrs = self._grad_edge("grad", bw, node, g)
            if leaf is not None:
                self._arrived[fid] = (*_identity(g), attrs)
            if seen is not None:
                seen[(fid, nr)] = {"stats": attrs["stats"], "dtype": dtype_name(g.dtype),
                                   "shape": list(g.shape), "value": attrs.get("value")}


_Module = torch.nn.Module


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


_SAVED_ATTRS: dict = {}  # C++ autograd node class -> the names of its saved values


def _saved_names(fn) -> tuple:
    """The attributes of autograd node ``fn`` that hold what it saved for backward."""
    names = [a for a in dir(fn) if a.startswith("_saved_") and not a.endswith("_sym_argsize")]
    if hasattr(fn, "saved_tensors"):
        names.append("saved_tensors")
    return tuple(names)


_PLAIN_TF = (torch.Tensor.__torch_function__.__func__, torch._C._disabled_torch_function_impl)


def _overrides(types) -> bool:
    """True when one of ``types`` has a ``__torch_function__`` of its own."""
    for t in types or ():
        f = getattr(t, "__torch_function__", None)
        if getattr(f, "__func__", f) not in _PLAIN_TF:
            return True
    return False


def _with(ac, extra):
    """An op record's extra attributes with ``autocast`` added (when a region is on)."""
    if ac is None:
        return extra
    return {**extra, "autocast": ac} if extra else {"autocast": ac}


def _plain_arrival(rec_ref, fid, bw, grad_outputs):
    """``_arriving`` for values="none" at a node that is neither a leaf's nor a root's:
    one ``grad`` edge per gradient reaching a recorded tensor, as ``_grad_edge``
    makes it, without a torch call (so without ``hidden`` or ``_busy``)."""
    rec = rec_ref()
    if rec is None or torch_is_busy():
        return None
    try:
        fn_out, edges = rec._fn_out, rec.edges
        nr = -1
        for g in grad_outputs:
            nr += 1
            if isinstance(g, torch.Tensor):
                node = fn_out.get((fid, nr))
                if node is not None:
                    edges.append((bw, node, {"kind": "grad", "stats": None}))
    except Exception as e:
        rec._unknown("arriving gradient", e)
    return None


def _set_busy(rec_ref, value, *hook_args):
    rec = rec_ref()
    if rec is not None:
        rec._busy = value


def _crc(t):
    try:
        with hidden():
            return zlib.crc32(t.detach().numpy().tobytes())
    except Exception:
        return None


def _identity(g):
    """What tells one gradient tensor from another later, without a reference to it."""
    try:
        return (g.data_ptr(), g._version)
    except Exception:
        return (None, None)


def _sequence_start() -> int:
    """The sequence number the next autograd node of this thread will get."""
    try:
        with hidden(), torch.inference_mode(False), torch.enable_grad():
            return torch.zeros((), requires_grad=True).mul(1).grad_fn._sequence_nr()
    except Exception:
        return 0


def _shares_numpy(t, arrays):
    return any(_array_shares(a, t) for _, a in arrays)


def _array_shares(a, t):
    try:
        if t.device.type != "cpu" or a.size == 0 or t.numel() == 0:
            return False
        lo = a.__array_interface__["data"][0]
        hi = lo + a.nbytes
        p = t.untyped_storage().data_ptr()
        return lo <= p < hi or p <= lo < p + t.untyped_storage().nbytes()
    except Exception:
        return False


def _names_device(scalars):
    return any(isinstance(v, (torch.device, str)) and not isinstance(v, bool) for v in scalars[1::2])


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


_SCALARS = (int, float, bool, str, type(None), complex, torch.dtype, torch.device,
            slice, type(Ellipsis), torch.memory_format, torch.layout)
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


def _is_view(t) -> bool:
    try:
        return t._base is not None
    except Exception:
        return True


_ALIASES = ("Tensor.data", "Tensor.detach", "torch.detach")
_RANDOM = {"random": True}


def _scan(args, kwargs):
    """Split call arguments into tensors, numpy arrays and short non-tensor values;
    return the first two as ``(position, value)`` lists, the values as one flat tuple
    ``(position, value, position, value, ...)``: an op record holding it is a tuple of
    two levels, which the garbage collector stops tracking before it reaches the
    oldest generation (every full collection would walk each record again)."""
    tensors, arrays, scalars = [], [], []
    Tensor = torch.Tensor
    for i, a in chain(enumerate(args), kwargs.items()) if kwargs else enumerate(args):
        if isinstance(a, Tensor):
            tensors.append((i, a))
        elif isinstance(a, _SCALARS):
            scalars += (i, a)
        elif isinstance(a, (list, tuple)):
            _scan_seq(a, i, tensors, arrays, scalars)
        elif isinstance(a, np.ndarray):
            arrays.append((i, a))
        else:
            scalars += (i, _opaque(a))
    return tensors, arrays, tuple(scalars)


def _scan_seq(seq, pos, tensors, arrays, scalars):
    Tensor = torch.Tensor
    simple = True
    for j, a in enumerate(seq):
        if isinstance(a, Tensor):
            tensors.append((f"{pos}.{j}", a))
            simple = False
        elif isinstance(a, np.ndarray):
            arrays.append((f"{pos}.{j}", a))
            simple = False
        elif isinstance(a, (list, tuple)) and a and not isinstance(a[0], _SCALARS):
            _scan_seq(a, f"{pos}.{j}", tensors, arrays, scalars)
            simple = False
    if simple:
        scalars += (pos, _opaque(seq) if len(seq) > 16 else tuple(seq))
    else:
        scalars += (pos, _opaque(seq))


class Opaque(str):
    """A non-scalar argument, kept only as the name of its type (a str, so the
    record holding it stays a plain value)."""

    __slots__ = ()


def _opaque(obj):
    n = len(obj) if isinstance(obj, (list, tuple)) else None
    return Opaque(f"<{type(obj).__name__}" + (f" of {n}>" if n is not None else ">"))


def _outputs(out, acc, pos=0):
    if isinstance(out, (torch.Tensor, np.ndarray)):
        acc.append((pos, out))
    elif isinstance(out, (list, tuple)):
        for i, o in enumerate(out):
            if isinstance(o, (torch.Tensor, np.ndarray)):
                acc.append((i if pos == 0 else f"{pos}.{i}", o))
            elif isinstance(o, (list, tuple)):
                _outputs(o, acc, i)
