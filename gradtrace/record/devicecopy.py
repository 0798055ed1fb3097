"""Host copies of tensor values (``values="all"``) that never stop the program.

A CPU tensor is cloned where it stands. A CUDA tensor is cloned on the device, on
the program's own stream (so the copy holds the value of that moment, whatever the
program writes next), and the clone is copied to pinned host memory on a side
stream, asynchronously: the host thread never waits for the GPU per op. The clones
in flight are bounded (:data:`IN_FLIGHT_BYTES`); past the bound the oldest copies
are waited for, which is the only time recording waits. :meth:`ValueCopies.wait`
waits for the rest once, when the trace ends.

Everything here runs under :class:`gradtrace.hidden.hidden` (the recorder's own
torch work reaches no user mode, subclass or profiler).
"""

from __future__ import annotations

from collections import deque

import torch

__all__ = ["IN_FLIGHT_BYTES", "ValueCopies"]

IN_FLIGHT_BYTES = 256 << 20  # device clones waiting for their host copy


class ValueCopies:
    """Copies of tensor values on the host, keyed by the trace's node or edge key."""

    def __init__(self, budget: int = IN_FLIGHT_BYTES, limit: int | None = None):
        self.values: dict = {}  # key -> CPU tensor (valid once wait() has run)
        self.limit = limit  # bytes of copies at most (None: no limit)
        self.skipped = 0  # values not kept: the limit was reached
        self.skipped_bytes = 0
        self._budget = budget
        self._streams: dict = {}  # device -> side stream
        self._in_flight: deque = deque()  # (event, clone bytes)
        self._in_flight_bytes = 0
        self.kept_bytes = 0  # bytes copied so far
        self.shared = 0  # versions that share their previous version's copy (no copy)

    def keep(self, key, t: torch.Tensor, same_as=None) -> None:
        """Keep a copy of ``t``'s value now under ``key`` (CPU: a contiguous clone;
        CUDA: an asynchronous copy into pinned host memory). ``same_as``: the key of an
        earlier value of the same tensor (its previous version): when ``t`` on the CPU
        still holds exactly that value, ``key`` shares its copy instead of a second one."""
        t = t.detach()
        if t.is_cpu and same_as is not None:
            prev = self.values.get(same_as)
            if prev is not None and prev.dtype == t.dtype and prev.shape == t.shape and _same_bits(prev, t):
                self.values[key] = prev
                self.shared += 1
                return
        nbytes = t.numel() * t.element_size()
        if self.limit is not None and self.kept_bytes + nbytes > self.limit:
            self.skipped += 1
            self.skipped_bytes += nbytes
            return
        self.kept_bytes += nbytes
        if t.device.type != "cuda":
            self.values[key] = (t.clone(memory_format=torch.contiguous_format) if t.is_cpu
                                else t.to("cpu").contiguous())
            return
        self.values[key] = self._copy_cuda(t)

    def keep_only(self, keys) -> None:
        """Let go of the copies of keys other than ``keys`` (the flight recorder let go
        of their records); the bytes they held count no longer against the limit."""
        self.values = {k: v for k, v in self.values.items() if k in keys}
        self.kept_bytes = sum(t.numel() * t.element_size() for t in {id(t): t for t in self.values.values()}.values())

    def facts(self) -> dict:
        """What was kept, for the trace: bytes copied, versions sharing an unchanged
        copy, the limit, and what the limit left out."""
        return {"bytes": self.kept_bytes, "shared": self.shared, "limit": self.limit,
                "skipped": self.skipped, "skipped_bytes": self.skipped_bytes}

    def _copy_cuda(self, t: torch.Tensor) -> torch.Tensor:
        dev = t.device
        main = torch.cuda.current_stream(dev)
        side = self._streams.get(dev)
        if side is None:
            side = self._streams[dev] = torch.cuda.Stream(dev)
        clone = t.clone(memory_format=torch.contiguous_format)  # on main: the value of this moment
        host = torch.empty(clone.shape, dtype=clone.dtype, pin_memory=True)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            host.copy_(clone, non_blocking=True)
            done = torch.cuda.Event()
            done.record(side)
        # The allocator must not hand the clone's memory to the program before the
        # side stream has read it.
        clone.record_stream(side)
        nbytes = clone.numel() * clone.element_size()
        self._in_flight.append((done, nbytes))
        self._in_flight_bytes += nbytes
        while self._in_flight_bytes > self._budget and len(self._in_flight) > 1:
            self._retire()
        return host

    def _retire(self) -> None:
        done, nbytes = self._in_flight.popleft()
        done.synchronize()
        self._in_flight_bytes -= nbytes

    def wait(self) -> dict:
        """Wait for every copy still in flight; return ``{key: CPU tensor}``."""
        while self._in_flight:
            self._retire()
        return self.values

    @property
    def in_flight(self) -> int:
        """How many copies have not been waited for."""
        return len(self._in_flight)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` are equal element by element (a value holding a NaN
    never is: it is copied again, which is only the cost of a copy)."""
    return bool(torch.equal(a, b))
