"""``gradtrace show``: tables over a saved trace, or over the ranks of a launched run."""

from __future__ import annotations

import json

import click

from ..graph.folders import rank_folders
from ..graph.io import TraceError
from ..graph.steps import find_steps
from ..ranks import missing_ranks, rank_path
from ..trace import load_steps, load_summary
from .common import CONTEXT, RANK_OPTION, fail, load_trace, load_traces
from .costs import show_costs
from .report import show_ranks, show_steps, show_summary, show_table

__all__ = ["show"]


@click.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path())
@click.option("--summary", "what", flag_value="summary",
              help="The run summary (default; read from the head of trace.json, however big the trace).")
@click.option("--steps", "what", flag_value="steps",
              help="A row per step: ops, loss, gradient norm, the largest gradient and change, NaN/Inf "
                   "(read from the head of trace.json).")
@click.option("--ops", "what", flag_value="ops",
              help="Every op, in call order (default with --line, --module or --step).")
@click.option("--backward", "what", flag_value="backward", help="Backward calls, weights and gradients.")
@click.option("--aliases", "what", flag_value="aliases", help="Views, aliases and in-place writes.")
@click.option("--moves", "what", flag_value="moves", help="Device and dtype moves.")
@click.option("--modules", "what", flag_value="modules", help="Modules and their op counts.")
@click.option("--costs", "what", flag_value="costs",
              help="FLOPs, parameters and memory saved for backward, by module and by line (with --step: "
                   "of that step).")
@click.option("--top", "top", type=click.IntRange(min=1), default=10, show_default=True, metavar="N",
              help="With --costs: the N lines holding the most activation memory.")
@click.option("--line", "line", default=None, metavar="FILE:LINE", help="Only ops from this source line.")
@click.option("--module", "module", default=None, metavar="PATH", help="Only ops inside this module.")
@click.option("--step", "step", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only ops of step N (from 1; see --steps).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@RANK_OPTION
def show(folder, what, line, module, step, top, as_json, rank):
    """Print tables over a saved trace FOLDER: its summary, or the table an option names.

    A folder of rank<k> folders (a launched run): without --rank, a table of the
    ranks (status, ops, backward calls, all-reduce buckets, findings), or with a
    table option that table for each rank in turn; --rank N shows one rank.
    With --json the per-rank tables are an object keyed by rank.

    \b
    Example:
      gradtrace show gradtrace-out/autograd --backward
      gradtrace show gradtrace-out/train --ops --line train.py:42 --json
      gradtrace show gradtrace-out/train --steps
      gradtrace show gradtrace-out/train --ops --step 402
      gradtrace show gradtrace-out/train --costs --step 2
      gradtrace show runs/ddp --rank 1 --backward
    """
    if rank is None and rank_folders(folder):
        _show_ranks(folder, what, line, module, step, as_json, top)
        return
    what = what or ("ops" if line or module or step else "summary")
    if what == "costs":
        rows = _costs(folder, rank, step, top, as_json)
    elif what == "summary":
        rows = _summary(folder, rank, as_json)
    elif what == "steps":
        rows = _steps(folder, rank, as_json)
    else:
        tr = load_trace(folder, rank)
        try:
            rows = show_table(tr.graph, what, line=line, module=module, as_json=as_json, step=step)
        except ValueError as e:
            fail(str(e))
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))


def _costs(folder, rank, step, top, as_json):
    """Print (or return, for ``--json``) the costs of one trace, or of its step ``step``."""
    return _graph_costs(load_trace(folder, rank).graph, folder, step, top, as_json)


def _graph_costs(G, folder, step, top, as_json):
    steps = find_steps(G)
    if step is not None and step not in steps.step_of.values():
        fail(f"step {step} is not in this trace (see gradtrace show {folder} --steps)")
    # a training run: one step (the last finished one by default) is what the model costs
    return show_costs(G, step or (steps.last_complete if steps.count > 1 else None), top, as_json)


def _summary(folder, rank, as_json) -> dict:
    """Print (or return, for ``--json``) the summary of one trace, read from its head."""
    try:
        s, meta = load_summary(rank_path(folder, rank))
    except TraceError as e:
        fail(str(e))
    return show_summary(s, meta.get("script"), as_json)


def _steps(folder, rank, as_json) -> list:
    """Print (or return, for ``--json``) the step rows of one trace, read from its head."""
    try:
        rows, _ = load_steps(rank_path(folder, rank))
    except TraceError as e:
        fail(str(e))
    return show_steps(rows, as_json)


def _show_ranks(folder, what, line, module, step, as_json, top=10):
    """A multi-rank folder: the table of its ranks, or one table per rank."""
    traces = load_traces(folder)
    if what is None and not line and not module and not step:
        rows = show_ranks(traces, folder, as_json=as_json, missing=missing_ranks(traces))
        if as_json:
            click.echo(json.dumps(rows, indent=1, default=str))
        return
    out = {}
    for k, tr in traces.items():
        if not as_json:
            click.echo(click.style(f"── rank {k} ({tr.path}) ──", bold=True))
        if what == "costs":
            out[str(k)] = _graph_costs(tr.graph, folder, step, top, as_json)
            continue
        try:
            out[str(k)] = show_table(tr.graph, what or "ops", line=line, module=module, as_json=as_json, step=step)
        except ValueError as e:
            fail(str(e))
    if as_json:
        click.echo(json.dumps(out, indent=1, default=str))
