"""``gradtrace dot`` and ``gradtrace html``: drawings of a saved trace, with the
findings of ``gradtrace check`` marked."""

from __future__ import annotations

from pathlib import Path

import click

from ..analyze.costs import op_costs
from ..graph.folders import rank_folders
from ..outputs import cost_notes, run_findings, run_rows
from ..views.dot import DEFAULT_DEPTH, GraphvizMissing, RenderError, render_to_file, to_dot
from ..views.html import DEFAULT_DEPTH as HTML_DEPTH
from ..views.html import write_html
from .common import CONTEXT, RANK_OPTION, fail, load_trace

__all__ = ["dot", "html"]


@click.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path())
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default=None,
              help="File to write [default: standard output for DOT].")
@click.option("--view", type=click.Choice(["forward", "autograd", "memory", "all"]), default="forward",
              show_default=True)
@click.option("--depth", type=int, default=None,
              help="Collapse modules more levels deep than this (containers add no level); runs of 3 or more "
                   "repeated blocks fold unless it is raised.  [default: 3]")
@click.option("--format", "fmt", type=click.Choice(["dot", "svg", "png"]), default=None,
              help="Output format [default: from the -o suffix, else dot].")
@click.option("--step", default=None, metavar="N|all",
              help="Which step of a training loop to draw  [default: the last complete one].")
@click.option("--phase", default=None, metavar="PHASE",
              help="init, data, forward, backward, optimizer or all (several: forward,optimizer)  "
                   "[default: forward,backward].")
@click.option("--tensors", is_flag=True, help="Draw tensors as nodes (default: edges labelled with their shape).")
@click.option("--saved", is_flag=True, help="Autograd view: draw the tensors each grad_fn saved for backward.")
@RANK_OPTION
def dot(folder, out, view, depth, fmt, step, phase, tensors, saved, rank):
    """Draw a saved trace FOLDER as DOT, SVG or PNG; the nodes of `gradtrace check`
    findings are outlined in red.

    A folder of rank<k> folders (a launched run) draws one rank: --rank N, by
    default the lowest rank (with a note naming the others on standard error).

    \b
    Example:
      gradtrace dot gradtrace-out/autograd --view autograd -o autograd.svg
      gradtrace dot gradtrace-out/train --depth 2 --format png -o model.png
      gradtrace dot gradtrace-out/train --step 1 --phase all --tensors -o step1.svg
      gradtrace dot runs/ddp --rank 1 -o rank1.dot
    """
    if rank is None:
        folders = rank_folders(folder)
        if len(folders) > 1:
            rank = next(iter(folders))
            click.echo(f"gradtrace: note: {folder} holds ranks {', '.join(str(k) for k in folders)}; drawing "
                       f"rank {rank} (pick another with --rank N)", err=True)
    tr = load_trace(folder, rank)
    if fmt is None:
        fmt = Path(out).suffix.lstrip(".").lower() if out and Path(out).suffix.lower() in (".svg", ".png") else "dot"
    if fmt != "dot" and not out:
        fail(f"--format {fmt} needs -o FILE")
    try:
        text = to_dot(tr.graph, view=view, depth=depth if depth is not None else DEFAULT_DEPTH,
                      step=step, phase=phase, tensors=tensors, saved=saved, findings=run_findings(tr.graph),
                      notes=cost_notes(tr.graph, "last" if step is None else step) if view in ("forward", "all")
                      else ())
    except ValueError as e:
        fail(str(e))
    if fmt == "dot":
        if not out:
            click.echo(text)
            return
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as e:
            fail(f"cannot write {out} ({e.strerror or e})")
        return
    try:
        render_to_file(text, fmt, out)
    except (GraphvizMissing, RenderError) as e:
        fail(str(e))
    click.echo(f"wrote {out}")


@click.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path())
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False),
              help="HTML file to write  [default: graph.html beside the trace: FOLDER/graph.html, "
                   "or FOLDER/rank<N>/graph.html with --rank].")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="Module depth folded when the page opens (modules expand in the page).")
@RANK_OPTION
def html(folder, out, depth, rank):
    """Write the interactive viewer of a saved trace FOLDER: one self-contained HTML
    file (open it in a browser, from disk; nothing is fetched).

    \b
    Example:
      gradtrace html gradtrace-out/train            # writes gradtrace-out/train/graph.html
      gradtrace html gradtrace-out/train -o train.html
    """
    tr = load_trace(folder, rank)
    here = Path(getattr(tr, "path", folder))  # a rank's own folder when --rank picked one
    target = Path(out) if out else (here if here.is_dir() else here.parent) / "graph.html"
    try:
        write_html(tr.graph, target, findings=run_findings(tr.graph), rows=run_rows(tr.graph), costs=op_costs(tr.graph),
                   depth=depth if depth is not None else HTML_DEPTH)
    except OSError as e:
        fail(f"cannot write {target} ({e.strerror or e})")
    click.echo(f"wrote {target}")
