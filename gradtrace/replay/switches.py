"""Why a target diverges: the likely causes (:mod:`gradtrace.analyze.causes`) and a
re-run of the run the most likely one acts in, with that cause switched off
(``python -m gradtrace.replay.child --switch-off CAUSE``), diffed again."""

from __future__ import annotations

from ..analyze import causes
from .processes import (
    DEFAULT_TIMEOUT,
    diff_runs,
    failure_text,
    load_graphs,
    root_failure,
    run_target,
)

__all__ = ["explain_divergence"]


def explain_divergence(rep, base_t, base_runs, t, runs, out, script, argv, values="stats", rng="seeded",
                       seed=0, timeout=DEFAULT_TIMEOUT, rtol=None, atol=None) -> dict:
    """Return why target ``t`` diverges from the baseline (``rep`` is their diff): the
    likely causes (``gradtrace.analyze.causes.candidates``) and, for the most likely one a re-run
    can turn off, that re-run (the run the cause acts in, written to
    ``OUT/<folder>-without-<cause>``) diffed again. Returns ``{candidates, tried,
    text}``; ``tried`` is None when no candidate can be switched off, else
    ``{cause, side, switch_text, folder, result: {status, text}}``."""
    cands = causes.candidates(rep, base_runs[0][0], runs[0][0])
    top = causes.first_switchable(cands)
    tried = None
    if top is not None:
        who = t if top["side"] == "b" else base_t
        folder = f"{who.folder}-without-{top['cause']}"
        res = run_target(who, out, script, argv, values, rng, seed, timeout, switches=[top["cause"]], folder=folder)
        graphs = load_graphs(res)
        rf = root_failure(res)
        names = (base_t.folder, t.folder)
        if rf is not None or graphs[0][0] is None:
            result = causes.confirmation(rep, None, failure_text(res, rf) if rf else "no trace")
        elif top["side"] == "b":
            result = causes.confirmation(rep, diff_runs(base_runs, graphs, t.kind, names, rtol, atol))
        else:
            result = causes.confirmation(rep, diff_runs(graphs, runs, t.kind, names, rtol, atol))
        tried = {"cause": top, "side": top["side"], "switch_text": _switch_text(top["cause"]),
                 "folder": str(res.folder), "target": who.folder, "result": result}
    text = causes.explanation_text(rep.get("first_divergence"), cands, tried)
    if tried is not None:
        tried = {**tried, "cause": top["cause"]}
    return {"candidates": cands, "tried": tried, "text": text}


_SWITCH_WORDS = {"tf32": "TF32 off", "autocast": "autocast off", "nondeterministic": "deterministic algorithms",
                 "cudnn_benchmark": "cudnn.benchmark off", "loss_reduction": "the ranks' gradients summed"}


def _switch_text(cause) -> str:
    return _SWITCH_WORDS.get(cause, f"{cause} off")
