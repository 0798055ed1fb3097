"""pytest plugin: the ``gradtrace_check`` fixture traces a test's body and fails the
test when ``gradtrace check`` finds an error-level mistake in it.

    def test_training_step(gradtrace_check):
        model, opt = make()
        loss = model(x).sum(); loss.backward(); opt.step()

    @pytest.mark.gradtrace(ignore="GT110")          # or select=..., fail_on="warning"
    def test_other(gradtrace_check): ...

The check runs right after the test body, so a finding fails the test itself (not its
teardown); when the body raised, the findings are added to its error. Severities are the
ones ``gradtrace check`` and docs/checks.md give (GT101 is an error before any backward
runs, so a forward-only test catches it); a ``# gradtrace: ignore[CODE]`` comment on a
line silences findings there, as in ``gradtrace check``.
"""

from __future__ import annotations

import pytest

__all__ = ["gradtrace_check", "pytest_configure", "pytest_runtest_call"]

_KEY = "_gradtrace_check_trace"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "gradtrace(select=None, ignore=None, fail_on='error'): options of the gradtrace_check fixture")


def _options(item):
    m = item.get_closest_marker("gradtrace")
    kw = dict(m.kwargs) if m is not None else {}
    return kw.get("select"), kw.get("ignore"), kw.get("fail_on", "error")


def _finish(item):
    """Stop the trace (once) and return the failing findings' text, or None."""
    tr = getattr(item, _KEY, None)
    if tr is None:
        return None
    setattr(item, _KEY, None)
    tr.__exit__(None, None, None)
    from .analyze.checks import SEVERITIES, check_graph, format_finding

    select, ignore, fail_on = _options(item)
    worst = SEVERITIES.index(fail_on)
    bad = [f for f in check_graph(tr.graph, select=select, ignore=ignore)
           if SEVERITIES.index(f.severity) <= worst]
    if not bad:
        return None
    return "gradtrace found:\n" + "\n".join(format_finding(f) for f in bad)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        result = yield
    except BaseException as e:
        text = _finish(item)
        if text and hasattr(e, "add_note"):
            e.add_note(text)
        raise
    text = _finish(item)
    if text:
        pytest.fail(text, pytrace=False)
    return result


@pytest.fixture
def gradtrace_check(request):
    """Trace the test body; right after it, fail on error-level findings. Yields the trace."""
    from .trace import Trace

    tr = Trace("stats")
    tr.__enter__()
    setattr(request.node, _KEY, tr)
    try:
        yield tr
    finally:
        if getattr(request.node, _KEY, None) is tr:  # the call hook did not run
            setattr(request.node, _KEY, None)
            tr.__exit__(None, None, None)
