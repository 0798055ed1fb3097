"""Every bundled example runs under `gradtrace run` and its DOT renders."""

import sys
from pathlib import Path

import pytest

from gradtrace.dot import have_graphviz, render, to_dot
from gradtrace.runner import run_script

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_traced_and_its_dot_renders(script, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(script)])
    result = run_script(script, values="stats")
    assert result.exit_code == 0, result.exception
    G = result.trace.graph
    assert G.graph["status"] == "ok"
    assert any(d["kind"] == "op" for _, d in G.nodes(data=True))
    text = to_dot(G)
    assert text.startswith("digraph")
    if have_graphviz():
        assert render(text, "svg").lstrip().startswith(b"<?xml")
