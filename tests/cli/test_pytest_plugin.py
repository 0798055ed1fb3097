"""The pytest plugin: the `gradtrace_check` fixture fails a test on error-level findings."""

from helpers import TESTS

pytest_plugins = ["pytester"]

USER_TESTS = '''
import pytest
import torch


def test_clean(gradtrace_check):
    x = torch.ones(3, requires_grad=True)
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0, 2.0]


def test_inplace_on_saved(gradtrace_check):  # GT101 error: found before backward runs
    x = torch.randn(3, requires_grad=True)
    y = x.sigmoid()
    y.mul_(2)
    loss = y.sum()


def test_inplace_on_saved_silenced_by_comment(gradtrace_check):
    x = torch.randn(3, requires_grad=True)
    y = x.sigmoid()
    y.mul_(2)  # gradtrace: ignore[GT101]


def test_backward_raises(gradtrace_check):
    x = torch.randn(3, requires_grad=True)
    y = x.exp()
    y.add_(1)
    y.sum().backward()


@pytest.mark.gradtrace(ignore="GT101")
def test_ignored(gradtrace_check):
    x = torch.randn(3, requires_grad=True)
    y = x.exp()
    y.add_(1)
    y.sum()


@pytest.mark.gradtrace(fail_on="warning")
def test_warning_fails_when_asked(gradtrace_check):
    x = torch.ones(3)
    z = x.to("cpu")
    z.add_(1)


def test_trace_is_yielded(gradtrace_check):
    torch.ones(2) + 1
    assert gradtrace_check.meta["status"] == "running"
'''


def test_fixture_fails_error_findings_and_passes_clean_tests(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    r = pytester.runpytest("-v", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=4, failed=3)
    out = r.stdout.str()
    for name in ("test_clean", "test_inplace_on_saved_silenced_by_comment", "test_ignored", "test_trace_is_yielded"):
        assert f"test_user.py::{name} PASSED" in out
    # backward raised; the finding naming the cause is added to the error
    assert "test_user.py::test_backward_raises FAILED" in out
    assert "modified by an inplace operation" in out and "GT101 error" in out and "y.add_(1)" in out
    assert "test_user.py::test_warning_fails_when_asked FAILED" in out and "GT111 warning" in out


def test_error_finding_fails_the_call_phase_not_the_teardown(pytester):
    pytester.makepyfile(test_one='''
import torch

def test_data_write(gradtrace_check):
    x = torch.ones(1, requires_grad=True)
    y = x * x
    x.data *= 100
    y.backward()
''')
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(failed=1, errors=0)
    assert "GT102 error" in r.stdout.str() and "x.data *= 100" in r.stdout.str()


def test_fixture_fails_gt101_without_a_backward_call_as_readme_and_docs_say(pytester):
    pytester.makepyfile(test_fwd='''
import torch

def test_forward_only(gradtrace_check):
    x = torch.randn(3, requires_grad=True)
    y = x.sigmoid()
    y.mul_(2)
''')
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    assert "GT101 error" in r.stdout.str() and "`y = y.mul(2)`" in r.stdout.str()


def test_readme_docs_and_checks_agree_on_every_severity():
    import re

    from gradtrace.analyze.checks import CHECKS

    root = TESTS.parent
    for doc in (root / "README.md", root / "docs" / "checks.md"):
        rows = dict(re.findall(r"^\| (GT1\d\d) \| ([a-z /]+?) \|", doc.read_text(), re.M))
        assert {c: rows[c].split(" / ")[0] for c in CHECKS} == {c: k.severity for c, k in CHECKS.items()}, doc
