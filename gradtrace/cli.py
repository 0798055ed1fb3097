"""The ``gradtrace`` command: a thin layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
SCRIPT_CONTEXT = {**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False}


def fail(message: str, code: int = 2):
    """Print a one-line error and exit (2: usage or input error)."""
    click.echo(f"gradtrace: error: {message}", err=True)
    sys.exit(code)


def _load(folder):
    from .trace import load
    from .tracefile import TraceError

    try:
        return load(folder)
    except TraceError as e:
        fail(str(e))


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
@click.option("--depth", type=int, default=None, help="Module depth of graph.dot/graph.svg.")
@click.option("--no-svg", is_flag=True, help="Do not render graph.svg.")
@click.argument("script", type=click.Path(dir_okay=True))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(out_dir, values, depth, no_svg, script, args):
    """Run SCRIPT [ARGS]... as `python SCRIPT ARGS` would, traced, and write its trace.

    gradtrace's options go before SCRIPT; everything after it is the script's.
    The folder gets trace.json, values.safetensors (when values were kept),
    graph.dot, and graph.svg when Graphviz is installed. The exit code is the
    script's.

    \b
    Example:
      gradtrace run -o runs/mlp --values all examples/train_mlp.py --steps 3
    """
    _check_script(script)
    from .dot import DEFAULT_DEPTH
    from .report import print_run_report, write_run_outputs
    from .runner import run_script

    result = run_script(script, list(args), values=values)
    out = Path(out_dir) if out_dir else Path("gradtrace-out") / Path(script).stem
    write_run_outputs(result.trace, out, depth=depth or DEFAULT_DEPTH, svg=not no_svg)
    print_run_report(result.trace, out)
    sys.exit(result.exit_code)


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path())
@click.option("--ops", "what", flag_value="ops", default=True, help="Every op, in call order (default).")
@click.option("--backward", "what", flag_value="backward", help="Backward calls, weights and gradients.")
@click.option("--aliases", "what", flag_value="aliases", help="Views, aliases and in-place writes.")
@click.option("--moves", "what", flag_value="moves", help="Device and dtype moves.")
@click.option("--modules", "what", flag_value="modules", help="Modules and their op counts.")
@click.option("--summary", "what", flag_value="summary", help="The run summary.")
@click.option("--line", "line", default=None, metavar="FILE:LINE", help="Only ops from this source line.")
@click.option("--module", "module", default=None, metavar="PATH", help="Only ops inside this module.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def show(folder, what, line, module, as_json):
    """Print tables over a saved trace FOLDER.

    \b
    Example:
      gradtrace show gradtrace-out/autograd --backward
      gradtrace show gradtrace-out/train --ops --line train.py:42 --json
    """
    from .report import show_table

    tr = _load(folder)
    try:
        rows = show_table(tr.graph, what, line=line, module=module, as_json=as_json)
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
@click.option("--depth", type=int, default=None, help="Collapse modules deeper than this.  [default: 3]")
@click.option("--format", "fmt", type=click.Choice(["dot", "svg", "png"]), default=None,
              help="Output format [default: from the -o suffix, else dot].")
def dot(folder, out, view, depth, fmt):
    """Draw a saved trace FOLDER as DOT, SVG or PNG; the nodes of `gradtrace check`
    findings are outlined in red.

    \b
    Example:
      gradtrace dot gradtrace-out/autograd --view autograd -o autograd.svg
      gradtrace dot gradtrace-out/train --depth 2 --format png -o model.png
    """
    from .check import finding_nodes
    from .dot import DEFAULT_DEPTH, GraphvizMissing, render, to_dot

    tr = _load(folder)
    if fmt is None:
        fmt = Path(out).suffix.lstrip(".").lower() if out and Path(out).suffix.lower() in (".svg", ".png") else "dot"
    text = to_dot(tr.graph, view=view, depth=depth if depth is not None else DEFAULT_DEPTH,
                  highlight=finding_nodes(tr.graph))
    if fmt == "dot":
        if out:
            Path(out).write_text(text, encoding="utf-8")
        else:
            click.echo(text)
        return
    try:
        data = render(text, fmt)
    except GraphvizMissing as e:
        fail(str(e))
    if not out:
        fail(f"--format {fmt} needs -o FILE")
    Path(out).write_bytes(data)
    click.echo(f"wrote {out}")


# Commands that live in their own modules register themselves on `main`.
from . import cli_check, cli_replay  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()
