"""pytest plugin: the ``gradtrace_check`` fixture traces a test's body and fails the
test when ``gradtrace check`` finds an error-level mistake in it.

    def test_training_step(gradtrace_check):
        model, opt = make()
        loss = model(x).sum(); loss.backward(); opt.step()
"""

from __future__ import annotations

import pytest


@pytest.fixture
def gradtrace_check():
    """Trace the test body; after it, fail on error-level findings. Yields the trace."""
    from .check import check_graph, format_finding
    from .trace import Trace

    tr = Trace("stats")
    tr.__enter__()
    try:
        yield tr
    finally:
        tr.__exit__(None, None, None)
    errors = [f for f in check_graph(tr.graph) if f.severity == "error"]
    if errors:
        pytest.fail("gradtrace found:\n" + "\n".join(format_finding(f) for f in errors), pytrace=False)
