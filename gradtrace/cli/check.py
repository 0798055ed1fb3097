"""``gradtrace check``: the findings of a script's run or of a saved trace."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..analyze.checks import CHECKS, check_graph, format_finding
from ..graph.folders import is_trace_folder, rank_folder, rank_folders
from ..outputs import write_run_outputs
from ..runner import run_script, sigterm_held
from ..views.dot import to_dot
from .common import (
    RANK_OPTION,
    SCRIPT_CONTEXT,
    check_out_dir,
    check_script,
    fail,
    launch_position,
    load_traces,
)
from .report import start_fresh_line

__all__ = ["check"]

_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


def _split(values):
    out = []
    for v in values or ():
        out.extend(c.strip() for c in v.split(",") if c.strip())
    return out or None


@click.command(context_settings=SCRIPT_CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--select", multiple=True, metavar="CODES",
              help="Only these checks (comma-separated or repeated; prefixes like GT10 allowed).")
@click.option("--ignore", multiple=True, metavar="CODES", help="Skip these checks.")
@click.option("--values", type=click.Choice(["none", "stats", "all"]), default="stats", show_default=True,
              help="What a traced script keeps of tensor values (NaN/Inf checks need stats).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Also save the script's trace to this folder.")
@click.option("--dot", "dot_out", type=click.Path(dir_okay=False), default=None,
              help="Write the DOT graph (all views) with the findings' nodes marked.")
@click.option("--explain", is_flag=True, help="Also print why each finding matters.")
@click.option("--list", "list_codes", is_flag=True, help="List the check codes and exit.")
@RANK_OPTION
@click.argument("target", type=click.Path(), required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def check(ctx, as_json, select, ignore, values, out_dir, dot_out, explain, list_codes, rank, target, args):
    """Find aliasing, in-place and autograd mistakes in TARGET: a script (traced with
    its ARGS, which go after it) or a saved trace folder.

    A folder of rank<k> folders (a launched run) is checked rank by rank, each
    finding labelled with its rank (in JSON: a "rank" key); --rank N checks one
    rank; --dot draws the lowest rank checked. Under a launcher (torchrun) a
    script is checked on every rank, -o writing OUT/rank<k>.

    A comment `# gradtrace: ignore[GT107]` (or a bare `# gradtrace: ignore`) on the
    line a finding is reported at silences it.

    Exit code 1 when an error-level finding is present, 0 otherwise, 2 on bad input.

    \b
    Example:
      gradtrace check train.py --epochs 1
      gradtrace check gradtrace-out/train --ignore GT108 --json
      gradtrace check runs/ddp --rank 1
    """
    if list_codes:
        for c in CHECKS.values():
            click.echo(f"{c.code}  {c.severity:8s} {c.title}")
        return
    if not target:
        fail("missing TARGET: a script or a trace folder (see gradtrace check --help)")
    p = Path(target)
    exit_note = None
    labelled = False  # findings of several ranks: each labelled with its rank
    if p.is_dir() and (is_trace_folder(p) or rank_folders(p)):
        if args:  # a folder takes no script arguments: what follows it is our options
            sub = check.make_context(ctx.info_name, [*args, "--", str(target)], parent=ctx.parent)
            if sub.params["target"] != str(target):
                fail(f"unexpected argument after the trace folder: {sub.params['target']}")
            return ctx.invoke(check, **sub.params)
        graphs = {k: t.graph for k, t in load_traces(p, rank).items()}
        labelled = len(graphs) > 1 or (rank is None and bool(rank_folders(p)))
    else:
        if p.is_dir():
            fail(f"not a trace folder (no trace.json, and no rank<k> folders with one): {target}")
        graphs, labelled, exit_note = _trace_script(target, args, values, out_dir)
    findings = []  # (rank, finding)
    for k, G in graphs.items():
        try:
            findings += [(k, f) for f in check_graph(G, select=_split(select), ignore=_split(ignore))]
        except ValueError as e:
            fail(str(e))
    if dot_out:
        k0, G0 = next(iter(graphs.items()))
        mine = [f for k, f in findings if k == k0]
        Path(dot_out).write_text(to_dot(G0, view="all", step="all", findings=mine), encoding="utf-8")
        if len(graphs) > 1:
            click.echo(f"note: --dot drew rank {k0}; pick another with --rank N", err=True)
    if exit_note:
        click.echo(exit_note, err=True)
    if as_json:
        click.echo(json.dumps([{**f.to_dict(), "rank": k} if labelled else f.to_dict() for k, f in findings],
                              indent=1, default=str))
    else:
        _echo_findings(findings, graphs, labelled, explain)
    sys.exit(1 if any(f.severity == "error" for _, f in findings) else 0)


def _trace_script(target, args, values, out_dir):
    """Run the script ``target`` traced (on this rank, under a launcher), saving its trace
    with ``-o``: ``({rank: graph}, whether findings are labelled by rank, the note on its
    exit code or None)``."""
    check_script(target)
    pos = launch_position()
    r, world = pos or (0, 1)
    out = (rank_folder(out_dir, r) if pos else Path(out_dir)) if out_dir else None
    if out is not None:
        check_out_dir(out)
    with sigterm_held():  # a launcher stopping this rank waits for its trace
        result = run_script(target, list(args), values=values, rank=r, world_size=world)
        start_fresh_line()
        if out is not None:
            write_run_outputs(result.trace, out, depth=3, svg=False)
    exit_note = None
    if result.exit_code:
        exit_note = f"note: {target} exited with code {result.exit_code}; findings are for what ran"
    return {r: result.trace.graph}, pos is not None, exit_note


def _echo_findings(findings, graphs, labelled, explain):
    """The findings as text, coloured by severity, and the count of each severity."""
    lines = []
    for k, f in findings:
        text = format_finding(f, explain=explain)
        head, _, rest = text.partition("\n")
        if labelled:
            head = f"[rank {k}] {head}"
        lines.append(click.style(head, fg=_STYLE.get(f.severity), bold=f.severity == "error"))
        if rest:
            lines.append(rest)
    by = {}
    for _, f in findings:
        by[f.severity] = by.get(f.severity, 0) + 1
    summary = ", ".join(f"{by[s]} {s}" for s in ("error", "warning", "info") if s in by)
    total = f"{len(findings)} finding{'s' if len(findings) != 1 else ''}" + (f": {summary}" if summary else "")
    if labelled:
        total = (f"[rank {', '.join(str(k) for k in graphs)}] " if len(graphs) == 1 else
                 f"ranks {', '.join(str(k) for k in graphs)}: ") + total
    lines.append(total)
    click.echo("\n".join(lines))  # one write: ranks started by one launcher share the terminal
