"""The tensors and storages a recording has seen, and their versions.

Tensors and storages are known by ``id()`` and a weak reference only, so tracing
keeps none of the program's tensors alive. A weak reference's callback drops the
entry when its object dies, so these small objects die young and never reach the
cyclic GC's oldest generation (whose collections walk every object torch holds).
"""

from __future__ import annotations

import weakref
import zlib
from functools import partial

import torch

from . import stats
from .hidden import hidden, is_plain, out_of_sight

__all__ = ["StorageInfo", "TensorInfo", "Tensors", "device_name", "dtype_name", "version_of"]

_DTYPE_NAMES: dict = {}
_DEVICE_NAMES: dict = {}


def dtype_name(dt) -> str:
    """Return ``float32`` for ``torch.float32``."""
    n = _DTYPE_NAMES.get(dt)
    if n is None:
        n = _DTYPE_NAMES[dt] = str(dt).replace("torch.", "")
    return n


def device_name(dev) -> str:
    """Return ``cuda:0`` for ``torch.device("cuda", 0)``."""
    n = _DEVICE_NAMES.get(dev)
    if n is None:
        n = _DEVICE_NAMES[dev] = str(dev)
    return n


def version_of(t):
    """``t._version``, or None for a tensor without a version counter (inference mode)."""
    try:
        return t._version
    except Exception:
        return None


class TensorInfo:
    """What the recorder knows of one live tensor object."""

    __slots__ = ("tid", "ver", "tv", "sid", "s", "ref", "node", "rg", "crc")

    def __init__(self, tid, tv, s, ref):
        # The storage record lives as long as a tensor on it: no table of storage
        # records outlives them, so none of these objects reaches the GC's oldest generation.
        self.tid, self.ver, self.tv, self.s, self.ref = tid, 0, tv, s, ref
        self.sid = s.sid if s is not None else None
        self.node = self.rg = self.crc = None  # node and rg are set by Tensors.snapshot


class StorageInfo:
    """What the recorder knows of one storage: its id and the tensors seen on it."""

    __slots__ = ("sid", "tensors", "numpy", "ref", "uninitialised")

    def __init__(self, sid, ref):
        self.sid, self.ref, self.tensors, self.numpy = sid, ref, [], False
        self.uninitialised = False  # made by torch.empty and not written since (--stop-at only)


class Tensors:
    """The registry of tensors and storages: versions, writes, storages shared with
    numpy. ``autograd`` names each tensor's grad_fn; ``labels`` gets the tensors a
    module registered before they were seen; ``copies`` keeps values (``values="all"``)."""

    def __init__(self, records, values: str, copies):
        self.records = records
        self.values = values
        self.copies = copies
        self.watch = None  # wired by the mode: a Watch under --stop-at nonfinite
        self.autograd = None  # wired by the mode: AutogradNodes
        self.labels = None  # wired by the mode: Labels
        self.pending: dict = {}  # wired by the mode: Labels.pending (read first: mostly empty)
        self.by_id: dict = {}  # id(tensor) -> TensorInfo (the per-op path reads it directly)
        self._storages: dict = {}  # id(storage) -> StorageInfo
        # The callbacks are C functions (``dict.pop(key, ref)``): no Python code of
        # ours runs when a program's tensor dies, so a signal's KeyboardInterrupt
        # cannot land (and be swallowed) inside a callback.
        self._drop_t = self.by_id.pop
        self._drop_s = self._storages.pop
        self._shapes: dict = {}  # interned shape and stride tuples: most repeat
        self._ntid = 0
        self._nsid = 0

    def live_ids(self) -> set:
        """The node ids a later record may name without making them anew: each live
        tensor's current version and each live storage."""
        ids = {info.node for info in list(self.by_id.values())}
        ids.update(s.sid for s in list(self._storages.values()))
        return ids

    def lookup(self, t):
        """Return the record of a tensor the recorder has seen, or None."""
        info = self.by_id.get(id(t))
        if info is not None and info.ref() is t:
            return info
        return None

    def tensor(self, t, origin="torch") -> TensorInfo:
        """Return the record of ``t``, registering it (version 0) on first sight."""
        info = self.by_id.get(id(t))
        if info is not None and info.ref() is t:
            return info
        return self.register(t, origin)

    def register(self, t, origin="torch") -> TensorInfo:
        """Record a tensor the recorder has not seen (version 0); return its record."""
        key = id(t)
        s = self.storage_of(t, origin)
        tid = self._ntid
        self._ntid = tid + 1
        try:
            tv = t._version
        except Exception:  # inference tensors have no version counter
            tv = None
        info = TensorInfo(tid, tv, s, weakref.ref(t, partial(self._drop_t, key)))
        self.by_id[key] = info
        if s is not None:
            s.tensors.append(info.ref)
        if self.pending:
            self.labels.registered_now(key, t, tid)
        self.snapshot(t, info)
        return info

    def storage_of(self, t, origin="torch"):
        """The record of ``t``'s storage (registered on first sight), or None."""
        try:
            st = t.untyped_storage()
        except Exception:  # sparse, nested and other storage-less tensors
            return None
        key = id(st)
        s = self._storages.get(key)
        if s is not None and s.ref() is st:
            return s
        n = self._nsid
        self._nsid = n + 1
        s = StorageInfo(f"s:{n}", weakref.ref(st, partial(self._drop_s, key)))
        self._storages[key] = s
        dev = st.device
        self.records.storages[s.sid] = (_DEVICE_NAMES.get(dev) or device_name(dev), st.nbytes(), origin)
        return s

    def known_storage(self, st):
        """The record of storage ``st`` if the recorder has seen it, else None."""
        s = self._storages.get(id(st))
        return s if s is not None and s.ref() is st else None

    def snapshot(self, t, info) -> str:
        """Record the tensor node for the current version of ``t``; return its id. Each
        read that fails leaves its field unknown (None); none raises."""
        node = info.node = f"t:{info.tid}.{info.ver}"
        # Every read at once, the hottest path of a recording; where one fails, each
        # again on its own, so that only that field is unknown.
        try:
            fn = t.grad_fn
            stride, offset, shape = t.stride(), t.storage_offset(), tuple(t.shape)
            dt, dev = t.dtype, t.device
            rg, leaf = t.requires_grad, t.is_leaf
        except Exception:
            has_fn, fid = self._grad_fn_of(t)
            stride, offset = self._layout(t)
            shape, dtype, device = self._kind_of(t)
            rg, leaf = self._flags(t, info, has_fn)
        else:
            info.rg = rg
            shapes = self._shapes
            stride, shape = shapes.setdefault(stride, stride), shapes.setdefault(shape, shape)
            dtype, device = _DTYPE_NAMES.get(dt) or dtype_name(dt), _DEVICE_NAMES.get(dev) or device_name(dev)
            fid = None if fn is None else self._node_of(fn)
        mode = self.values
        st = stats.compute(t) if mode != "none" else None
        self.records.tensors.append((node, info.tid, info.ver, shape, dtype, device, stride, info.sid, offset, rg,
                                     leaf, fid, st))
        if self.watch is not None and not self._uninitialised(info):
            self.watch.saw(st, "value", node, bool(leaf and rg))
        if fid is not None:
            self.autograd.made(fid, t, node)
        if mode == "all":
            # A new version whose value did not change (a write of the same values, a
            # requires_grad_ flag) shares the previous version's copy.
            self.keep_value(node, t, f"t:{info.tid}.{info.ver - 1}" if info.ver else None)
        return node

    def _flags(self, t, info, has_fn):
        """``(requires_grad, is_leaf)`` of ``t``, both None where they cannot be read."""
        try:
            info.rg = rg = t.requires_grad
            return rg, t.is_leaf
        except Exception as e:  # both read grad_fn on a view
            if has_fn:
                self.records.note_unknown("requires_grad", e)
            return None, None

    def _grad_fn_of(self, t):
        """(whether ``t`` has a grad_fn, its autograd node id or None)."""
        try:
            fn = t.grad_fn  # raises for a view written in a way autograd forbids
        except Exception as e:
            self.records.note_unknown("grad_fn", e)
            return False, None
        if fn is None:
            return False, None
        return True, self._node_of(fn)

    def _node_of(self, fn):
        """The id of autograd node ``fn``, or None where its graph cannot be read."""
        try:
            return self.autograd.node_of(fn)
        except Exception as e:
            self.records.note_unknown("autograd graph", e)
            return None

    def _layout(self, t):
        try:
            stride = t.stride()
            return self._shapes.setdefault(stride, stride), t.storage_offset()
        except Exception:  # nested, sparse and other layouts without strides
            return None, None

    def _kind_of(self, t):
        try:
            shape = tuple(t.shape)
            shape = self._shapes.setdefault(shape, shape)
        except Exception as e:
            shape = None
            self.records.note_unknown("shape", e)
        try:
            dt, dev = t.dtype, t.device
            return shape, _DTYPE_NAMES.get(dt) or dtype_name(dt), _DEVICE_NAMES.get(dev) or device_name(dev)
        except Exception as e:
            self.records.note_unknown("dtype and device", e)
            return shape, None, None

    def keep_value(self, key, t, same_as=None) -> None:
        """Keep a copy of ``t``'s value under ``key`` (``values="all"``), where one can be made."""
        try:
            if is_plain(t) and not t.is_meta and t.layout == torch.strided:
                with out_of_sight(), torch.no_grad():
                    self.copies.keep(key, t, same_as)  # one contiguous CPU copy; from CUDA, without waiting
        except Exception:
            pass

    def _uninitialised(self, info) -> bool:
        """True when ``info``'s memory is what an uninitialised op (``torch.empty``, which
        a module's constructor calls) returned and nothing has written it since: NaN or
        Inf there (the garbage, or the NaN deterministic mode fills it with) is no value
        of the program's. Marks the storage when the op running now is such an op."""
        s = info.s
        if s is None:
            return False
        if self.records.current_op is not None and self.records.current_op == self.watch.garbage_op:
            s.uninitialised = True
        return s.uninitialised

    def write(self, s, op_node, external=None) -> None:
        """Bump the version of every live tensor known on storage record ``s``. An
        ``external`` write (one torch made out of the recording's sight: numpy's side of a
        shared buffer, an op run while the recording was paused) names the op that saw it."""
        if s is None:
            return
        s.uninitialised = False
        records = self.records
        sid = s.sid
        if op_node is not None:
            records.edges.append((op_node, sid, "writes", None))
        alive = []
        for ref in s.tensors:
            u = ref()
            if u is None:
                continue
            alive.append(ref)
            info = self.by_id.get(id(u))
            if info is None or info.ref is not ref:
                continue
            old = info.node
            tv = version_of(u)
            visible = tv != info.tv
            info.tv = tv
            info.ver += 1
            new = self.snapshot(u, info)
            # Flat (key, value, key, value, ...): records stay two levels deep (see records.py).
            attrs = ("kind", "next_version", "op", op_node, "visible", visible)
            if external:
                attrs += ("external", True, "seen_at", external)
            records.edges.append((old, new, attrs))
            if s.numpy:
                info.crc = checksum(u)
        s.tensors = alive
        st = s.ref()
        known = records.storages.get(sid) if st is not None else None
        if known is not None:  # (the flight recorder may have let go of it)
            records.storages[sid] = (known[0], st.nbytes(), known[2])

    def catch_up(self, op_node) -> None:
        """Give a new version to each live tensor whose version counter moved while the
        recording did not look (a write it never saw, noticed at ``op_node``)."""
        done = set()
        for info in list(self.by_id.values()):
            t = info.ref()
            if t is None or info.s is None or id(info.s) in done:
                continue
            if version_of(t) != info.tv:
                done.add(id(info.s))
                self.write(info.s, None, external=op_node)

    def flag_changed(self, t, info, op_node) -> None:
        """``requires_grad_`` changed ``t``'s flag: a new version, not a write (no data
        changed, and autograd sees the new flag)."""
        old = info.node
        info.ver += 1
        self.records.edges.append((old, self.snapshot(t, info), (
            ("kind", "next_version"), ("op", op_node), ("visible", True), ("metadata_only", True))))

    def data_swapped(self, t, info, op_node) -> None:
        """``t.data = other`` put ``t`` on other memory (``model.double()`` does it for
        each parameter): ``t`` keeps its identity, name and module, and gets a new
        version on the new storage, possibly of another dtype or device."""
        s = self.storage_of(t)
        if s is None or s is info.s:
            return
        if info.s is not None:  # a later write into the old memory is not a write into t
            info.s.tensors = [r for r in info.s.tensors if r is not info.ref]
        info.s, info.sid = s, s.sid
        s.tensors.append(info.ref)
        old = info.node
        info.tv = version_of(t)
        info.ver += 1
        # No version counter moved: autograd cannot see the swap.
        self.records.edges.append((old, self.snapshot(t, info), (
            ("kind", "next_version"), ("op", op_node), ("visible", False), ("data_set", True))))

    def check_numpy_writes(self, t, info, op_node) -> None:
        """A numpy-side write to a shared buffer is invisible to torch: compare checksums."""
        if info.crc is not None and checksum(t) != info.crc:
            self.write(info.s, None, external=op_node)

    def mark_numpy(self, s) -> None:
        """Storage ``s`` is shared with a numpy array: checksum its tensors from now on."""
        if s is None:
            return
        s.numpy = True
        for ref in s.tensors:
            u = ref()
            if u is not None:
                info = self.lookup(u)
                if info is not None:
                    info.crc = checksum(u)


def checksum(t):
    """A CRC of ``t``'s bytes (a CPU tensor on a buffer shared with numpy), or None."""
    try:
        with hidden():
            return zlib.crc32(t.detach().numpy().tobytes())
    except Exception:
        return None
