"""The ``gradtrace`` command: a thin layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
SCRIPT_CONTEXT = {**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False}


def fail(message: str, code: int = 2):
    """Print a one-line error and exit (2: usage or input error)."""
    click.echo(f"gradtrace: error: {message}", err=True)
    sys.exit(code)


def _load(folder, rank=None):
    """One trace: a trace folder, or rank ``rank`` of a multi-rank folder."""
    from ..graph.io import TraceError, check_path
    from ..ranks import load_rank

    try:
        check_path(folder)  # a looping link or an empty path, named as such
        return load_rank(folder, rank)
    except TraceError as e:
        fail(str(e))


def _load_ranks(folder, rank=None) -> dict:
    """``{rank: Trace}``: every rank of a multi-rank folder (or only ``rank``), or the
    one trace of a trace folder."""
    if rank is not None:
        return {rank: _load(folder, rank)}
    from ..graph.io import TraceError, check_path
    from ..ranks import load_ranks

    try:
        check_path(folder)
        return load_ranks(folder)
    except TraceError as e:
        fail(str(e))


def _launcher_position():
    """``(rank, world_size)`` under torchrun / torch.distributed.run, else None."""
    from ..ranks import launcher_position

    try:
        return launcher_position()
    except ValueError as e:
        fail(str(e))


class _Size(click.ParamType):
    """A number of bytes: ``1000``, ``512K``, ``64M``, ``2G`` (powers of 1024)."""

    name = "size"
    _UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
        unit = text[-1:] if text[-1:] in self._UNITS else ""
        try:
            n = float(text[: len(text) - len(unit)])
        except ValueError:
            self.fail(f"{value!r} is not a size (examples: 512M, 2G, 1000000)", param, ctx)
        if n < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return int(n * self._UNITS[unit])


SIZE = _Size()


RANK_OPTION = click.option("--rank", "rank", type=click.IntRange(min=0), default=None, metavar="N",
                           help="In a folder of rank<k> folders (a launched run), this rank's trace.")


def _check_script(script: str):
    p = Path(script)
    if not p.exists():
        fail(f"script not found: {script}")
    if p.is_dir():
        fail(f"script is a folder, not a Python file: {script}")


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="gradtrace")
def main():
    """See what a PyTorch program did: every op, alias, in-place write, device move,
    autograd node and gradient, as a graph.

    \b
    Example:
      gradtrace run train.py --epochs 1     # trace a script unchanged
      gradtrace show gradtrace-out/train --ops
      gradtrace dot gradtrace-out/train --view autograd -o autograd.svg
    """


@main.command(context_settings=SCRIPT_CONTEXT)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Trace folder to write [default: gradtrace-out/<script stem>].")
@click.option("--values", type=click.Choice(["none", "stats", "all"]), default="stats", show_default=True,
              help="What to keep of tensor values: nothing, statistics, or everything.")
@click.option("--values-max", "values_max", type=SIZE, default=None, metavar="SIZE",
              help="With --values all: copy at most SIZE (512M, 2G) [default: half the memory available].")
@click.option("--depth", type=int, default=None, help="Module depth of graph.dot/graph.svg.")
@click.option("--no-svg", is_flag=True, help="Do not render graph.svg.")
@click.argument("script", type=click.Path(dir_okay=True))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(out_dir, values, values_max, depth, no_svg, script, args):
    """Run SCRIPT [ARGS]... as `python SCRIPT ARGS` would, traced, and write its trace.

    gradtrace's options go before SCRIPT; everything after it is the script's.
    The folder gets trace.json, values.safetensors (when values were kept),
    graph.dot, graph.svg when Graphviz is installed, and graph.html (the
    interactive viewer, also with --no-svg). The exit code is the script's.

    Under a launcher (torchrun, python -m torch.distributed.run: RANK and
    WORLD_SIZE set) each rank writes its own folder, OUT/rank<k>, with its rank
    and world size in the trace; rank 0 prints the report, the other ranks one
    line each. `gradtrace show OUT` then lists the ranks.

    \b
    Example:
      gradtrace run -o runs/mlp --values all examples/train_mlp.py --steps 3
      torchrun --nproc-per-node 2 -m gradtrace run -o runs/ddp train_ddp.py
    """
    _check_script(script)
    from ..report import print_run_report, start_fresh_line, write_run_outputs
    from ..runner import run_script
    from ..views.dot import DEFAULT_DEPTH

    pos = _launcher_position()
    base = Path(out_dir) if out_dir else Path("gradtrace-out") / Path(script).stem
    if pos is not None:
        from ..ranks import clear_single_trace, rank_folder

        rank, world = pos
        out = rank_folder(base, rank)
        if rank == 0:  # an earlier single-process trace in base would be read instead of the ranks
            clear_single_trace(base)
    else:
        rank, world, out = 0, 1, base
    _check_out_dir(out)
    if values == "all":
        from ..analyze.summary import human_bytes
        from ..trace import default_values_max

        limit = values_max if values_max is not None else default_values_max()
        print(f"gradtrace: --values all keeps a copy of every tensor version and gradient, at most "
              f"{human_bytes(limit)} (--values-max); a version whose value did not change shares its copy",
              file=sys.stderr)
    result = run_script(script, list(args), values=values, rank=rank, world_size=world, values_max=values_max)
    start_fresh_line()
    try:
        written = write_run_outputs(result.trace, out, depth=depth or DEFAULT_DEPTH, svg=not no_svg, html=True)
    except Exception as e:  # the script ran: its exit code stands, whatever the disk says
        fail(f"the trace was not written to {out}: {_reason(e)}", result.exit_code)
    print_run_report(result.trace, out, all_ranks=base if pos is not None else None, written=written)
    sys.exit(result.exit_code)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    return f"{type(e).__name__}: {e}"


def _check_out_dir(out: Path):
    """Make the trace folder now and check that a file can be written in it, so a run
    that could not be saved is refused before the script runs."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".gradtrace-probe-"):
            pass
    except OSError as e:
        fail(f"cannot write the trace folder {out}: {_reason(e)}")


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path())
@click.option("--ops", "what", flag_value="ops", help="Every op, in call order (default).")
@click.option("--backward", "what", flag_value="backward", help="Backward calls, weights and gradients.")
@click.option("--aliases", "what", flag_value="aliases", help="Views, aliases and in-place writes.")
@click.option("--moves", "what", flag_value="moves", help="Device and dtype moves.")
@click.option("--modules", "what", flag_value="modules", help="Modules and their op counts.")
@click.option("--summary", "what", flag_value="summary", help="The run summary.")
@click.option("--line", "line", default=None, metavar="FILE:LINE", help="Only ops from this source line.")
@click.option("--module", "module", default=None, metavar="PATH", help="Only ops inside this module.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@RANK_OPTION
def show(folder, what, line, module, as_json, rank):
    """Print tables over a saved trace FOLDER.

    A folder of rank<k> folders (a launched run): without --rank, a table of the
    ranks (status, ops, backward calls, all-reduce buckets, findings), or with a
    table option that table for each rank in turn; --rank N shows one rank.
    With --json the per-rank tables are an object keyed by rank.

    \b
    Example:
      gradtrace show gradtrace-out/autograd --backward
      gradtrace show gradtrace-out/train --ops --line train.py:42 --json
      gradtrace show runs/ddp --rank 1 --backward
    """
    from ..ranks import missing_ranks, rank_folders
    from ..report import show_ranks, show_table

    if rank is None and rank_folders(folder):
        traces = _load_ranks(folder)
        if what is None and not line and not module:
            rows = show_ranks(traces, folder, as_json=as_json, missing=missing_ranks(traces))
            if as_json:
                click.echo(json.dumps(rows, indent=1, default=str))
            return
        out = {}
        for k, tr in traces.items():
            if not as_json:
                click.echo(click.style(f"── rank {k} ({tr.path}) ──", bold=True))
            try:
                out[str(k)] = show_table(tr.graph, what or "ops", line=line, module=module, as_json=as_json)
            except ValueError as e:
                fail(str(e))
        if as_json:
            click.echo(json.dumps(out, indent=1, default=str))
        return
    tr = _load(folder, rank)
    try:
        rows = show_table(tr.graph, what or "ops", line=line, module=module, as_json=as_json)
    except ValueError as e:
        fail(str(e))
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))


@main.command(context_settings=CONTEXT)
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
    from ..ranks import rank_folders
    from ..views.dot import DEFAULT_DEPTH, GraphvizMissing, RenderError, render_to_file, to_dot

    if rank is None:
        folders = rank_folders(folder)
        if len(folders) > 1:
            rank = next(iter(folders))
            click.echo(f"gradtrace: note: {folder} holds ranks {', '.join(str(k) for k in folders)}; drawing "
                       f"rank {rank} (pick another with --rank N)", err=True)
    tr = _load(folder, rank)
    if fmt is None:
        fmt = Path(out).suffix.lstrip(".").lower() if out and Path(out).suffix.lower() in (".svg", ".png") else "dot"
    if fmt != "dot" and not out:
        fail(f"--format {fmt} needs -o FILE")
    try:
        text = to_dot(tr.graph, view=view, depth=depth if depth is not None else DEFAULT_DEPTH,
                      step=step, phase=phase, tensors=tensors, saved=saved, findings=_findings(tr.graph))
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


@main.command(context_settings=CONTEXT)
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
    from ..views.html import DEFAULT_DEPTH, write_html

    tr = _load(folder, rank)
    here = Path(getattr(tr, "path", folder))  # a rank's own folder when --rank picked one
    target = Path(out) if out else (here if here.is_dir() else here.parent) / "graph.html"
    try:
        write_html(tr.graph, target, findings=_findings(tr.graph),
                   depth=depth if depth is not None else DEFAULT_DEPTH)
    except OSError as e:
        fail(f"cannot write {target} ({e.strerror or e})")
    click.echo(f"wrote {target}")


def _findings(G) -> list:
    """The findings of `gradtrace check` to mark in a drawing; none when checking fails
    (a drawing must not be lost to a check's error)."""
    from ..analyze.checks import check  # gradtrace.check, the public API

    try:
        return list(check(G))
    except Exception as e:  # noqa: BLE001
        click.echo(f"gradtrace: note: findings not marked ({type(e).__name__}: {e})", err=True)
        return []


# Commands that live in their own modules register themselves on `main`.
from . import check as cli_check  # noqa: E402,F401
from . import replay as cli_replay  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()
