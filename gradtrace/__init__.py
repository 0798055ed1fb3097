"""gradtrace: see what a PyTorch program did.

>>> import torch, gradtrace
>>> with gradtrace.trace() as tr:
...     x = torch.ones(2, 2, requires_grad=True)
...     (x * 3).sum().backward()
>>> G = tr.graph  # a networkx.MultiDiGraph in trace format gradtrace/1
"""

__version__ = "0.1.0"

from .analyze.checks import check  # noqa: E402
from .analyze.diff import diff  # noqa: E402
from .graph.io import TraceError  # noqa: E402
from .trace import Trace, load, trace  # noqa: E402

__all__ = ["Trace", "TraceError", "check", "diff", "load", "trace", "__version__"]
