"""``gradtrace replay`` and ``gradtrace diff``: one program on several targets, and two
saved traces, compared down to the first op that diverges."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..analyze.diff import diff_graphs, format_report_md, load_run, settle_verdict
from ..graph.folders import rank_folders
from ..graph.io import TraceError, clean
from ..replay import TargetError
from ..replay import replay as run_replay
from ..views.divergence import divergence_dot
from .common import CONTEXT, SCRIPT_CONTEXT, check_script, fail, load_trace

__all__ = ["diff", "replay"]


@click.command(context_settings=SCRIPT_CONTEXT)
@click.option("--on", "targets", multiple=True, metavar="TARGET",
              help="A target: cpu, cpu64 (float64 reference), cuda, cuda:N, ddp:N (N ranks). Repeat it.")
@click.option("--baseline", default=None, metavar="TARGET", help="The target the others are diffed against "
              "[default: the first --on].")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the runs and the report [default: gradtrace-out/replay-<script stem>].")
@click.option("--rtol", type=float, default=None, help="Relative tolerance [default: per dtype, as "
              "torch.testing.assert_close].")
@click.option("--atol", type=float, default=None, help="Absolute tolerance [default: per dtype].")
@click.option("--values", type=click.Choice(["stats", "all"]), default="stats", show_default=True,
              help="Keep statistics only, or every value (elementwise and per-row comparisons).")
@click.option("--rng", type=click.Choice(["seeded", "native"]), default="seeded", show_default=True,
              help="seeded: random numbers come from a seeded CPU generator on every target; "
                   "native: each device's own generator.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the seeded generator.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds a target (all its ranks) may run before it is stopped.")
@click.option("--dot", "dot_file", type=click.Path(dir_okay=False), default=None,
              help="Write the region around the first divergence (of the first diverging target) as DOT.")
@click.option("--explain/--no-explain", default=True, show_default=True,
              help="For a diverging target, name the likely cause and re-run it with that cause switched off.")
@click.argument("script", type=click.Path(dir_okay=True))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def replay(targets, baseline, out_dir, rtol, atol, values, rng, seed, timeout, dot_file, explain, script, args):
    """Run SCRIPT [ARGS]... once per target, each in its own process, traced, and diff
    every target against the baseline down to the first op that diverges.

    gradtrace's options go before SCRIPT; everything after it is the script's.
    Each run is written under OUT/<target>/ (OUT/<target>/rank<k>/ for ddp:N),
    the report to OUT/report.md and OUT/report.json. Exit code: 0 when every
    target agrees within tolerance, 1 when one diverges or fails, 2 for usage
    errors. A diverging target's report names the likely cause (TF32, autocast,
    non-deterministic kernels, cudnn.benchmark, a summed loss across ranks, ...)
    and re-runs that target with the cause switched off to confirm it.

    \b
    Example:
      gradtrace replay --on cpu --on cuda examples/train_mlp.py --steps 2
      gradtrace replay --on cpu --on ddp:2 -o runs/dp examples/data_parallel.py
      gradtrace replay --on cpu --on cpu64 --values all examples/train_mlp.py
    """
    check_script(script)
    try:
        rep = run_replay(script, list(args), targets or ("cpu",), baseline=baseline, out=out_dir, rtol=rtol,
                         atol=atol, values=values, rng=rng, seed=seed, timeout=timeout, explain=explain)
    except TargetError as e:
        fail(str(e))
    out = Path(rep["out"])
    click.echo((out / "report.md").read_text(encoding="utf-8"))
    for e in rep["errors"]:
        click.echo(f"gradtrace: error: {e['text']}" + (" (timed out)" if e.get("timed_out") else "")
                   + (f"; traces kept: {', '.join(e['traces_kept'])}" if e.get("traces_kept") else ""),
                   err=True)
    if dot_file:
        _write_dot_from_replay(rep, dot_file)
    click.echo(f"wrote {out / 'report.md'}, {out / 'report.json'}")
    sys.exit(rep["exit_code"])


def _write_dot_from_replay(rep, dot_file):
    for name, c in rep["comparisons"].items():
        if c.get("first_divergence"):
            G, _, _ = load_run(rep["runs"][rep["baseline"]]["folder"])
            text = divergence_dot(G, c, "a")
            if text:
                Path(dot_file).write_text(text, encoding="utf-8")
                click.echo(f"wrote {dot_file} (first divergence of {name})")
                return
    click.echo("no divergence: --dot not written", err=True)


@click.command(context_settings=CONTEXT)
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--rtol", type=float, default=None, help="Relative tolerance [default: per dtype].")
@click.option("--atol", type=float, default=None, help="Absolute tolerance [default: per dtype].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--dot", "dot_file", type=click.Path(dir_okay=False), default=None,
              help="Write the region around the first divergence (in A) as DOT, diverging nodes highlighted.")
@click.option("--rank", "rank", type=click.IntRange(min=0), default=None, metavar="N",
              help="Compare only rank N of A and B (of the side that has rank<k> folders).")
def diff(a, b, rtol, atol, as_json, dot_file, rank):
    """Diff two saved traces A and B (one program on two targets, or two versions
    of a program) down to the first op that diverges. Exit code 0 when they
    agree within tolerance, 1 when they diverge.

    Folders of rank<k> folders (a launched run, a replay's ddp:N): two of them
    are compared rank by rank (they must have the same ranks); a single-device
    trace A against such a folder B is the data-parallel comparison (B's
    all-reduced gradients against A's); --rank N compares one rank. Two ranks
    of one run: gradtrace diff OUT/rank0 OUT/rank1.

    \b
    Example:
      gradtrace run -o runs/v1 --values all train.py
      gradtrace run -o runs/v2 --values all train_v2.py
      gradtrace diff runs/v1 runs/v2 --dot divergence.dot
      gradtrace diff gradtrace-out/replay-train/cpu gradtrace-out/replay-train/ddp:2 --json
      gradtrace diff runs/ddp/rank0 runs/ddp/rank1
    """
    fa, fb = rank_folders(a), rank_folders(b)
    names = (Path(a).name or str(a), Path(b).name or str(b))
    if rank is not None:
        if not (fa or fb):
            fail(f"--rank applies to folders of rank<k> folders; {a} and {b} are single traces")
        ta = load_trace(a, rank) if fa else load_trace(a)
        tb = load_trace(b, rank) if fb else load_trace(b)
        names = tuple(f"{n}/rank{rank}" if f else n for n, f in zip(names, (fa, fb)))
        rep = _as_peers(diff_graphs(ta.graph, tb.graph, rtol=rtol, atol=atol, values_a=ta.values,
                                    values_b=tb.values, names=names), ta.graph)
        _diff_out(rep, ta.graph, as_json, dot_file)
        sys.exit(0 if rep["agrees"] else 1)
    if fa and fb:
        _diff_rank_by_rank(a, b, fa, fb, names, rtol, atol, as_json, dot_file)
        return
    if len(fa) > 1:
        click.echo(f"gradtrace: note: {a} holds ranks {', '.join(str(k) for k in fa)}; comparing its rank "
                   f"{next(iter(fa))} (--rank N for another; for the data-parallel comparison give the "
                   "single-device run first)", err=True)
    try:
        ga, va, _ = load_run(a)
        gb, vb, ranks = load_run(b)
    except TraceError as e:
        fail(str(e))
    rep = diff_graphs(ga, gb, rtol=rtol, atol=atol, values_a=va, values_b=vb, ranks=ranks, names=names)
    if ranks is None:
        rep = _as_peers(rep, ga)
    _diff_out(rep, ga, as_json, dot_file)
    sys.exit(0 if rep["agrees"] else 1)


def _as_peers(rep, ga):
    """Drop the "data parallel against one device" section when A is itself one rank of a
    data-parallel run (two ranks of one run, rank k of two runs): diff_graphs adds it
    whenever B's world size is above 1, taking A for the single-device baseline. The
    verdict is then what diff_graphs gives without that section."""
    if rep.get("data_parallel") is None or int(ga.graph.get("world_size") or 1) <= 1:
        return rep
    rep["data_parallel"] = None
    return settle_verdict(rep)


def _diff_out(rep, ga, as_json, dot_file):
    """Print one diff report (Markdown or JSON) and write its --dot."""
    if as_json:
        click.echo(json.dumps(clean(rep), indent=1, default=str))
    else:
        click.echo(format_report_md(rep))
    if dot_file:
        text = divergence_dot(ga, rep, "a")
        if text:
            Path(dot_file).write_text(text, encoding="utf-8")
            click.echo(f"wrote {dot_file}", err=True)
        else:
            click.echo("no divergence: --dot not written", err=True)


def _diff_rank_by_rank(a, b, fa, fb, names, rtol, atol, as_json, dot_file):
    """Two multi-rank folders: rank k of A against rank k of B, for every rank."""
    if set(fa) != set(fb):
        fail(f"{a} has ranks {', '.join(map(str, fa))} and {b} has ranks {', '.join(map(str, fb))}: compare "
             f"one rank with --rank N, or two rank folders (gradtrace diff {a}/rankN {b}/rankM)")
    reports, first_a = {}, {}
    for k in fa:
        ta, tb = load_trace(fa[k]), load_trace(fb[k])
        reports[k] = _as_peers(diff_graphs(ta.graph, tb.graph, rtol=rtol, atol=atol, values_a=ta.values,
                                           values_b=tb.values, names=(f"{names[0]}/rank{k}", f"{names[1]}/rank{k}")),
                               ta.graph)
        first_a[k] = ta.graph
    agrees = all(r["agrees"] for r in reports.values())
    diverging = [k for k, r in reports.items() if not r["agrees"]]
    if as_json:
        click.echo(json.dumps(clean({"agrees": agrees, "ranks": {str(k): r for k, r in reports.items()}}),
                              indent=1, default=str))
    else:
        for r in reports.values():
            click.echo(format_report_md(r))
        click.echo(f"ranks {', '.join(map(str, fa))}: " + (
            "every rank agrees" if agrees else f"rank {', '.join(map(str, diverging))} diverge"
            + ("s" if len(diverging) == 1 else "")))
    if dot_file:
        text = divergence_dot(first_a[diverging[0]], reports[diverging[0]], "a") if diverging else None
        if text:
            Path(dot_file).write_text(text, encoding="utf-8")
            click.echo(f"wrote {dot_file} (rank {diverging[0]})", err=True)
        else:
            click.echo("no divergence: --dot not written", err=True)
    sys.exit(0 if agrees else 1)
