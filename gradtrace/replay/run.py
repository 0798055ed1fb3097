"""The replay: run one script on every target, diff each run against the baseline, and
write ``report.json`` and ``report.md``."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..analyze.diff import accuracy_vs_reference, format_replay_md
from ..graph.io import clean
from .processes import (
    DEFAULT_TIMEOUT,
    RunResult,
    diff_runs,
    failure_text,
    load_graphs,
    root_failure,
    run_target,
)
from .switches import explain_divergence
from .targets import TargetError, parse_targets

__all__ = ["RNG_MODES", "replay"]

RNG_MODES = ("seeded", "native")


def replay(script, argv=(), targets=("cpu",), baseline=None, out=None, rtol=None, atol=None,
           values="stats", rng="seeded", seed=0, timeout=DEFAULT_TIMEOUT, parallel=True, explain=True) -> dict:
    """Run ``script`` on every target, diff each against the baseline, write
    ``report.json`` and ``report.md`` into ``out``; return the report (``exit_code``
    0 when every target agrees, 1 otherwise). With ``explain``, each diverging
    target's comparison gets an ``explanation`` (likely causes, and a re-run with the
    most likely switchable one turned off, see :func:`explain_divergence`). Raises
    :class:`TargetError` for a usage error."""
    if rng not in RNG_MODES:
        raise TargetError(f"--rng must be one of {', '.join(RNG_MODES)}")
    tlist = parse_targets(targets)
    base_t = _baseline(tlist, baseline)
    script = Path(script)
    out = Path(out) if out else Path("gradtrace-out") / f"replay-{script.stem}"
    out.mkdir(parents=True, exist_ok=True)
    argv = list(argv)

    results = _run_all(tlist, out, script, argv, values, rng, seed, timeout, parallel)
    loaded = {t.folder: load_graphs(results[t.folder]) for t in tlist}
    base_G, base_vals, _ = loaded[base_t.folder][0]
    ref_t = next((t for t in tlist if t.kind == "cpu64" and t is not base_t), None)

    report = {
        "script": str(script), "argv": argv, "out": str(out),
        "targets": [t.folder for t in tlist], "baseline": base_t.folder,
        "rng": {"mode": rng, "seed": seed if rng == "seeded" else None,
                "text": (f"seeded: random draws come from the CPU generator (seed {seed}) and are "
                         "moved to the target" if rng == "seeded" else
                         "native: each target draws from its own device's generator")},
        "values": values, "tolerance": {"rtol": rtol, "atol": atol},
        "runs": {}, "comparisons": {}, "reference": None, "verdicts": {}, "errors": [],
    }
    for t in tlist:
        run = results[t.folder]
        report["runs"][t.folder] = _run_entry(run)
        rf = root_failure(run)
        if rf is not None:
            report["errors"].append({"target": t.folder, "rank": rf.get("rank"), "text": failure_text(run, rf),
                                     "error": rf.get("error"), "timed_out": run.timed_out,
                                     "traces_kept": [r["folder"] for r in run.ranks if r.get("trace")]})
    if base_G is None:
        report["verdicts"][base_t.folder] = "failed"
        report["exit_code"] = 1
        _write(report, out)
        return report
    for t in tlist:
        if t is base_t:
            continue
        if loaded[t.folder][0][0] is None:
            report["verdicts"][t.folder] = "failed"
            continue
        rep = diff_runs(loaded[base_t.folder], loaded[t.folder], t.kind, (base_t.folder, t.folder), rtol, atol)
        if ref_t is not None and t is not ref_t:
            rG, rvals, _ = loaded[ref_t.folder][0]
            if rG is not None:
                G, vals, _ = loaded[t.folder][0]
                rep["reference"] = accuracy_vs_reference(rG, rvals, base_G, base_vals, G, vals,
                                                         names=(ref_t.folder, base_t.folder, t.folder))
        report["comparisons"][t.folder] = rep
        report["verdicts"][t.folder] = _verdict(results[base_t.folder], results[t.folder], rep)
    if results[base_t.folder].failed:
        report["verdicts"][base_t.folder] = "failed"
    if explain:
        for t in tlist:
            if report["verdicts"].get(t.folder) == "diverges":
                report["comparisons"][t.folder]["explanation"] = explain_divergence(
                    report["comparisons"][t.folder], base_t, loaded[base_t.folder], t, loaded[t.folder], out,
                    script, argv, values=values, rng=rng, seed=seed, timeout=timeout, rtol=rtol, atol=atol)
    report["exit_code"] = 0 if all(v == "agrees" for v in report["verdicts"].values()) else 1
    _write(report, out)
    return report


def _baseline(tlist, baseline):
    """The target named ``baseline`` (by name or folder), else the first."""
    if baseline is None:
        return tlist[0]
    matches = [t for t in tlist if baseline in (t.name, t.folder)]
    if not matches:
        raise TargetError(f"baseline {baseline!r} is not one of the --on targets "
                          f"({', '.join(t.folder for t in tlist)})")
    return matches[0]


def _run_all(tlist, out, script, argv, values, rng, seed, timeout, parallel) -> dict:
    """Each target's :class:`RunResult`, by folder."""
    if parallel and len(tlist) > 1:  # every target in its own process, side by side
        with ThreadPoolExecutor(max_workers=min(4, len(tlist))) as ex:
            futs = {t.folder: ex.submit(run_target, t, out, script, list(argv), values, rng, seed, timeout)
                    for t in tlist}
            return {k: f.result() for k, f in futs.items()}
    return {t.folder: run_target(t, out, script, list(argv), values, rng, seed, timeout) for t in tlist}


def _run_entry(run: RunResult) -> dict:
    """The report's ``runs`` entry of one target."""
    t = run.target
    return {
        "target": t.name, "kind": t.kind, "world_size": t.world_size, "folder": str(run.folder),
        "seconds": round(run.seconds, 2), "timed_out": run.timed_out, "returncode": run.returncode,
        "ranks": [{k: r.get(k) for k in ("rank", "status", "exit_code", "error", "folder", "trace")}
                  for r in run.ranks],
        "placement": run.placement,
    }


def _verdict(base: RunResult, run: RunResult, rep: dict) -> str:
    """A target's verdict against the baseline: ``agrees`` or ``diverges`` when both
    ran to the end; ``failed`` (the target failed), ``baseline failed``, or ``both
    failed, the same way`` / ``both failed, differently`` (same exception at the same
    line). A run that failed never agrees."""
    if run.failed and base.failed:
        same = _same_error(root_failure(base), root_failure(run))
        return "both failed, the same way" if same else "both failed, differently"
    if run.failed:
        return "failed"
    if base.failed:
        return "baseline failed"
    return "agrees" if rep["agrees"] else "diverges"


def _same_error(r1, r2) -> bool:
    if r1 is None or r2 is None:  # a timeout leaves no rank of its own to blame
        return False
    e1, e2 = r1.get("error") or {}, r2.get("error") or {}
    return all(e1.get(k) == e2.get(k) for k in ("type", "message", "line", "code"))


def _write(report, out: Path):
    (out / "report.json").write_text(json.dumps(clean(report), indent=1, default=str), encoding="utf-8")
    (out / "report.md").write_text(format_replay_md(report), encoding="utf-8")
