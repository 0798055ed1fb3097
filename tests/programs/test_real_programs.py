"""Real programs read right (tests/real_programs/*.py): seventeen adaptations of public
examples (pytorch/examples, nanoGPT, transformers' BERT, GPT-2 and T5, a timm-style ViT,
torch.func) run untraced and traced with identical results, their `gradtrace check` is
clean (no warning, no error: their code is correct), and their default picture is one
step (or one micro-step of it) of at most 150 boxes.

The runs are the corpus harness's (tests/corpus/_harness.py, one process per run, two at
a time); see tests/test_corpus.py for the facts each traced run is held to.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
from helpers import TESTS
from test_corpus import FACTS, TRACED, check_fact, module_runs

pytestmark = pytest.mark.corpus

REAL = TESTS / "real_programs"
PROGRAMS = sorted(p.stem for p in REAL.glob("*.py") if p.stem != "survey")
NEEDS_TRANSFORMERS = {p for p in PROGRAMS if p.startswith("hf_")}
HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
MAX_BOXES = 150


def _marks(program):
    if program in NEEDS_TRANSFORMERS and not HAVE_TRANSFORMERS:
        return [pytest.mark.skip(reason="needs transformers (pip install -e '.[test]')")]
    return []


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    r = module_runs(request, tmp_path_factory, REAL)
    yield r
    r.close()


def _cases():
    for program in PROGRAMS:
        yield pytest.param(program, "untraced", "finished", id=f"{program}-untraced-finished", marks=_marks(program))
        for mode in TRACED:
            for fact in FACTS:
                yield pytest.param(program, mode, fact, id=f"{program}-{mode}-{fact}", marks=_marks(program))


@pytest.mark.parametrize(("program", "mode", "fact"), list(_cases()))
def test_traced_run(runs, program, mode, fact):
    check_fact(runs, program, mode, fact)


def _views(runs, program) -> dict:
    run = runs.get(program, "stats")
    assert "_error" not in run, f"{program} [stats]: the harness did not finish: {run.get('_error')}"
    return run["trace"]["views"]


@pytest.mark.parametrize("program", [pytest.param(p, marks=_marks(p)) for p in PROGRAMS])
def test_check_is_clean_on_correct_code(runs, program):
    v = _views(runs, program)
    assert "findings_error" not in v, v["findings_error"]
    serious = [f for f in v["findings"] if f["severity"] != "info"]
    assert serious == [], f"{program}: findings on correct code: {serious}"


@pytest.mark.parametrize("program", [pytest.param(p, marks=_marks(p)) for p in PROGRAMS])
def test_default_picture_is_one_step_of_at_most_150_boxes(runs, program):
    v = _views(runs, program)
    assert "picture_error" not in v, v["picture_error"]
    assert re.search(r"— step \d+ of \d+", v["title"]), f"{program}: the default picture is not one step: {v['title']}"
    assert v["boxes"] <= MAX_BOXES, f"{program}: {v['boxes']} boxes in the default picture ({v['title']})"
