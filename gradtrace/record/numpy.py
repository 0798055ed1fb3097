"""The numpy arrays ops read or returned, and which tensors share their buffers."""

from __future__ import annotations

import weakref

__all__ = ["Arrays", "array_shares", "shares_numpy"]


class Arrays:
    """The registry of numpy arrays: one ``np:N`` node per array object (known by
    ``id()`` and a weak reference where numpy allows one)."""

    def __init__(self, records):
        self.records = records
        self._by_id: dict = {}  # id(ndarray) -> (weakref, "np:N")

    def node(self, a) -> str:
        """The node id of array ``a``, registered on first sight."""
        entry = self._by_id.get(id(a))
        if entry is None or entry[0]() is not a:
            node = self.records.next_id("np")
            self.records.numpy[node] = {"shape": list(a.shape), "dtype": str(a.dtype)}
            try:
                ref = weakref.ref(a)
            except TypeError:
                ref = lambda: None  # noqa: E731
            entry = self._by_id[id(a)] = (ref, node)
        return entry[1]

    def read(self, a, op_node, pos) -> str:
        """Op ``op_node`` read array ``a`` at argument ``pos``; return its node."""
        node = self.node(a)
        self.records.edges.append((node, op_node, "input", pos))
        return node

    def returned(self, a, op_node, pos) -> str:
        """Op ``op_node`` returned array ``a`` at ``pos``; return its node."""
        node = self.node(a)
        self.records.edges.append((op_node, node, "output", pos))
        return node


def shares_numpy(t, arrays) -> bool:
    """True when tensor ``t`` is on the buffer of one of ``arrays`` (``(pos, array)`` pairs)."""
    return any(array_shares(a, t) for _, a in arrays)


def array_shares(a, t) -> bool:
    """True when numpy array ``a`` and CPU tensor ``t`` overlap in memory."""
    try:
        if t.device.type != "cpu" or a.size == 0 or t.numel() == 0:
            return False
        lo = a.__array_interface__["data"][0]
        hi = lo + a.nbytes
        p = t.untyped_storage().data_ptr()
        return lo <= p < hi or p <= lo < p + t.untyped_storage().nbytes()
    except Exception:
        return False
