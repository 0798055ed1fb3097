"""Autocast: the regions an op ran in, and the casts autocast made on the way in."""

from __future__ import annotations

from .compat import autocast_state
from .tensors import device_name, dtype_name

__all__ = ["Casts"]


class Casts:
    """Autocast state per op (one shared dict per distinct state) and its casts as
    ``moved_to`` edges."""

    def __init__(self, records):
        self.records = records
        self._states: dict = {}  # autocast state -> its shared {device: dtype} dict

    def state(self):
        """The autocast regions enabled now, as ``{device_type: dtype name}``: one
        dict per distinct state, shared by the records of all ops run in it; None
        where none is enabled or it cannot be read."""
        try:
            state = tuple((dev, dtype_name(dt)) for dev, dt in autocast_state().items())
        except Exception as e:
            self.records.note_unknown("autocast", e)
            return None
        d = self._states.get(state)
        if d is None:
            d = self._states[state] = dict(state)
        return d or None

    def record(self, op_node, pre, first_out, ac) -> None:
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
            dname = device_name(dev)
            self.records.edges.append((info.node, oinfo.node, (
                ("kind", "moved_to"), ("src_device", dname), ("dst_device", dname),
                ("src_dtype", dtype_name(t.dtype)), ("dst_dtype", dst), ("copy", True),
                ("autocast", True), ("op", op_node),
            )))
