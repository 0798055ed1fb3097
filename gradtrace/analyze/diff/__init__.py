"""Diff two traces of one program (on two targets) or of two versions of a program.

``diff_graphs(A, B)`` aligns the runs' ops (exact key first: module path, op name
and occurrence within the module; then a sequence alignment on op name and shape
for the rest), compares every aligned op output and every gradient (full values
when both runs kept them, statistics otherwise) against the per-dtype default
tolerances of ``torch.testing.assert_close``, and finds the first op that
diverges. With data-parallel ranks it also compares per-rank losses and the
all-reduced gradients with the single-device run. ``accuracy_vs_reference``
judges two runs against a float64 run the way PyTorch's own accuracy checks do.

The parts, lowest first: :mod:`.tolerances`, :mod:`.runs` (a run, indexed),
:mod:`.align`, :mod:`.compare`, the report's sections (:mod:`.setup`,
:mod:`.structure`, :mod:`.numerics`, :mod:`.parallel`, :mod:`.reference`) and its
Markdown text (:mod:`.report`). This module puts them together.
"""

from __future__ import annotations

from pathlib import Path

from ...graph.folders import rank_folders
from ...graph.io import load_graph, load_values
from .align import align, tensor_map
from .compare import Comparer, compare_stats, compare_values
from .numerics import compare_numerics, first_divergence
from .parallel import compare_data_parallel
from .reference import REFERENCE_MULTIPLIER, REFERENCE_TOL, accuracy_vs_reference
from .report import format_replay_md, format_report_md
from .runs import Run
from .setup import config_differences, run_failure, same_failure
from .structure import structure_differences
from .tolerances import DEFAULT_TOLERANCES, tolerance

__all__ = [
    "DEFAULT_TOLERANCES", "REFERENCE_MULTIPLIER", "REFERENCE_TOL", "Run", "accuracy_vs_reference", "align",
    "compare_stats", "compare_values", "diff", "diff_graphs", "format_replay_md", "format_report_md",
    "load_run", "settle_verdict", "tensor_map", "tolerance",
]


def diff_graphs(A, B, rtol=None, atol=None, values_a=None, values_b=None, ranks=None, names=("A", "B")) -> dict:
    """Diff trace graph ``B`` against ``A`` (the baseline); return the report: sections
    ``config``, ``structure``, ``numerics``, ``first_divergence``, ``data_parallel``
    (null unless ``ranks``, the ``[(graph, values)]`` of B's data-parallel ranks, or
    B's ``world_size`` says B was data parallel) and ``agrees``."""
    ra, rb = Run(A, values_a), Run(B, values_b)
    pairs, how = align(ra, rb)
    tmap = tensor_map(ra, rb, pairs)
    cmp = Comparer(ra, rb, rtol, atol)
    report = {"names": list(names), "tolerance": {"rtol": rtol, "atol": atol, "defaults": DEFAULT_TOLERANCES}}
    report["config"] = config_differences(ra, rb, ranks)
    report["structure"] = structure_differences(ra, rb, pairs, how)
    numerics, items = compare_numerics(ra, rb, pairs, tmap, cmp)
    report["numerics"] = numerics
    report["first_divergence"] = first_divergence(ra, rb, items, pairs, cmp, tmap)
    dp = None
    if ranks or rb.world > 1:
        dp = compare_data_parallel(ra, rb, ranks or [(B, values_b)], rtol, atol)
    report["data_parallel"] = dp
    errors = {n: G.graph.get("error") for n, G in zip(names, (A, B)) if G.graph.get("status") == "error"}
    report["status"] = {names[0]: A.graph.get("status"), names[1]: B.graph.get("status")}
    report["errors"] = {k: {"type": v.get("type"), "message": v.get("message")} for k, v in errors.items() if v}
    # a list, not keyed by name: two folders may share one (runs/v1/cpu, runs/v2/cpu)
    report["failures"] = [run_failure(G) if G.graph.get("status") == "error" else None for G in (A, B)]
    return settle_verdict(report)


def settle_verdict(report: dict) -> dict:
    """Set ``report["verdict"]`` (``agrees``, ``diverges``, ``failed``: one run raised,
    ``both failed``), ``failed_same_way`` (both raised the same exception at the same
    line; None unless both failed) and ``agrees`` (True only for ``agrees``: a run
    that raised never agrees). Returns the report."""
    fails = [f for f in report.get("failures") or () if f]
    dp = report.get("data_parallel")
    numbers_agree = report["numerics"]["diverging"] == 0 and (dp is None or dp["agrees"])
    if len(fails) == 2:
        verdict = "both failed"
        report["failed_same_way"] = same_failure(*fails)
    else:
        verdict = "failed" if fails else ("agrees" if numbers_agree else "diverges")
        report["failed_same_way"] = None
    report["verdict"] = verdict
    report["agrees"] = verdict == "agrees"
    return report


def _load(folder):
    G = load_graph(folder)
    return G, load_values(folder, G)


def load_run(path):
    """Load a trace folder, or a data-parallel target folder (``rank<k>`` inside it):
    return ``(graph, values, ranks)`` with ranks ``[(graph, values)]`` or None."""
    ranks = rank_folders(path)
    if ranks:
        loaded = [_load(d) for d in ranks.values()]
        return loaded[0][0], loaded[0][1], loaded
    G, values = _load(Path(path))
    return G, values, None


def diff(a, b, rtol=None, atol=None) -> dict:
    """Diff run ``b`` against run ``a``: each a :class:`gradtrace.Trace` (anything with
    ``.graph`` and ``.values``) or a trace folder (a data-parallel target folder with
    ``rank<k>`` folders works too). Returns the report of :func:`diff_graphs`."""

    def get(x):
        if isinstance(x, (str, Path)):
            return load_run(x)
        return x.graph, x.values, None

    ga, va, _ = get(a)
    gb, vb, ranks = get(b)
    return diff_graphs(ga, gb, rtol=rtol, atol=atol, values_a=va, values_b=vb, ranks=ranks,
                       names=(str(ga.graph.get("target") or "A"), str(gb.graph.get("target") or "B")))
