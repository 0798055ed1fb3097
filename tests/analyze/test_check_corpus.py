"""``gradtrace check`` on two corpora of small realistic programs (tests/check_corpus/):

* ``correct/``: programs a competent engineer would call right. No warning and no error;
  the infos each one may give are listed in :data:`CORRECT_INFOS`.
* ``hazard/``: programs with one real mistake. Exactly the findings their
  ``# expect: GTxxx`` comments name, at those lines: a warning or an error, or an info
  where the comment says ``GTxxx:info``.

Every finding must name a line of the program itself and never a graph node id.
"""

import re

import pytest
from helpers import TESTS

from gradtrace.analyze.checks import check_graph, format_finding
from gradtrace.runner import run_script

HERE = TESTS / "check_corpus"
CORRECT = sorted((HERE / "correct").glob("*.py"))
HAZARD = sorted((HERE / "hazard").glob("*.py"))

# program -> the info findings it gives, as (code, line)
CORRECT_INFOS = {
    "dqn_target": {("GT107", 14)},
    "ema_weights": {("GT107", 10)},
    "finetune_frozen": {("GT107", 6)},
    "finetune_requires_grad_": {("GT107", 6)},
    "gan_detach": {("GT106", 16)},
    "grad_accumulation": {("GT108", 13)},
    "reload_eval": {("GT107", 17)},
    "tbptt": {("GT106", 12)},
    "teacher_student": {("GT107", 6)},
    "transformer_encoder": {("GT107", 6)},
}

# hazard program -> why its expected findings cannot be found from what the trace records
NEEDS_RECORDER: dict = {}

_EXPECT = re.compile(r"#\s*expect:\s*((?:GT\d{3}(?::info)?\s*)+)")
_NODE_ID = re.compile(r"\b(?:t|op|fn|bw|s):\d+(?:\.\d+)?\b")


def _findings(path):
    result = run_script(path, values="stats", print_traceback=False)
    assert result.exception is None and result.exit_code == 0, result.exception
    return check_graph(result.trace.graph)


def _expected(path):
    want = set()
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = _EXPECT.search(line)
        if m:
            want |= {(code.split(":")[0], i, code.endswith(":info")) for code in m[1].split()}
    return want


def _shown(findings):
    return "\n".join(format_finding(f) for f in findings)


def test_the_corpora_are_large_enough_and_every_code_has_a_hazard():
    codes = {c for p in HAZARD for c, _, _ in _expected(p)}
    assert len(CORRECT) >= 15 and len(HAZARD) >= 15
    assert codes == {f"GT{n}" for n in range(101, 113)}


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_program_gives_no_warning_and_only_its_listed_infos(path):
    fs = _findings(path)
    assert {(f.code, f.line) for f in fs} == CORRECT_INFOS.get(path.stem, set()), _shown(fs)
    assert all(f.severity == "info" for f in fs), _shown(fs)


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=NEEDS_RECORDER[p.stem])) if p.stem in NEEDS_RECORDER
    else p for p in HAZARD], ids=lambda p: p.stem)
def test_hazard_program_gives_exactly_the_expected_codes_at_the_expected_lines(path):
    fs = _findings(path)
    assert {(f.code, f.line, f.severity == "info") for f in fs} == _expected(path), _shown(fs)


@pytest.mark.parametrize("path", CORRECT + HAZARD, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_finding_names_a_line_of_the_program_and_no_node_id(path):
    for f in _findings(path):
        assert f.file == str(path) and f.line, format_finding(f)
        assert not _NODE_ID.search(format_finding(f, explain=True)), format_finding(f)
