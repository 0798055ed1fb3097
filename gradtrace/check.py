"""``gradtrace check``: the public API of the checks, which live in :mod:`gradtrace.checks`
(one module per family).

>>> findings = gradtrace.check(tr)            # a Trace, a graph, or a trace folder
>>> for f in findings: print(format_finding(f))
"""

from __future__ import annotations

from .checks import (  # noqa: F401  (the public API, importable from here as before)
    CHECKS,
    SEVERITIES,
    WRITES,
    Check,
    Finding,
    check,
    check_graph,
    finding_codes,
    finding_nodes,
    format_finding,
)
