"""Every bundled example runs under `gradtrace run` and its DOT renders."""

import sys

import pytest
from helpers import TESTS

from gradtrace.runner import run_script
from gradtrace.views.dot import have_graphviz, render, to_dot

EXAMPLES = sorted((TESTS.parent / "examples").glob("*.py"))
# The tour's lesson scripts (a lesson that takes its program from another example, with
# a "Snippet:" line, has no code of its own).
TOUR = [p for p in sorted((TESTS.parent / "examples" / "tour").glob("[0-9]*.py"))
        if "\nSnippet: " not in p.read_text()]

# Warnings an example raises on purpose, because they are its lesson: the course notes
# pass a 5x3 `out=` tensor for a 4x3 sum (1.2.1), and torch warns that it resized it
# (pyproject.toml's filterwarnings keeps it out of the summary; here it is asserted).
RESIZED = "An output with one or more elements was resized"
EXPECTED_WARNINGS = {"tensors.py": RESIZED, "02_inplace_and_out.py": RESIZED}


def _run(script, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(script)])
    return run_script(script, values="stats")


@pytest.mark.parametrize("script", EXAMPLES + TOUR, ids=[p.name for p in EXAMPLES + TOUR])
def test_example_runs_traced_and_its_dot_renders(script, monkeypatch):
    result = _run(script, monkeypatch)
    assert result.exit_code == 0, result.exception
    G = result.trace.graph
    assert G.graph["status"] == "ok"
    assert any(d["kind"] == "op" for _, d in G.nodes(data=True))
    text = to_dot(G)
    assert text.startswith("digraph")
    if have_graphviz():
        assert render(text, "svg").lstrip().startswith(b"<?xml")


@pytest.mark.parametrize("name", sorted(EXPECTED_WARNINGS))
def test_an_example_whose_lesson_is_a_torch_warning_raises_it_traced(name, monkeypatch):
    (script,) = [p for p in EXAMPLES + TOUR if p.name == name]
    with pytest.warns(UserWarning, match=EXPECTED_WARNINGS[name]):
        _run(script, monkeypatch)
