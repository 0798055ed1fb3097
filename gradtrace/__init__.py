"""gradtrace: see what a PyTorch program did.

>>> import torch, gradtrace
>>> with gradtrace.trace() as tr:
...     x = torch.ones(2, 2, requires_grad=True)
...     (x * 3).sum().backward()
>>> G = tr.graph  # a networkx.MultiDiGraph in trace format gradtrace/1
"""

from __future__ import annotations

__version__ = "0.1.0"

# None of these imports torch or the recorder: reading a trace (``gradtrace show``)
# never pays for them. ``diff`` does, and is imported on first use.
from .analyze.checks import check  # noqa: E402
from .graph.io import TraceError  # noqa: E402
from .trace import Trace, load, step, trace  # noqa: E402

__all__ = ["Trace", "TraceError", "check", "diff", "load", "step", "trace", "__version__"]


def __getattr__(name: str):
    if name == "diff":
        from .analyze.diff import diff

        globals()["diff"] = diff
        return diff
    raise AttributeError(f"module 'gradtrace' has no attribute {name!r}")
