"""``gradtrace run``: trace a script and write its trace folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..analyze.summary import human_bytes
from ..graph.folders import rank_folder
from ..outputs import clear_single_trace, write_run_outputs
from ..record.window import parse_steps
from ..runner import Terminated, die_of_sigterm, run_script, sigterm_held
from ..trace import default_values_max
from ..views.dot import DEFAULT_DEPTH
from .common import SCRIPT_CONTEXT, SIZE, check_out_dir, check_script, fail, launch_position, reason
from .report import print_run_report, start_fresh_line

__all__ = ["run"]


@click.command(context_settings=SCRIPT_CONTEXT)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Trace folder to write [default: gradtrace-out/<script stem>].")
@click.option("--values", type=click.Choice(["none", "stats", "all"]), default="stats", show_default=True,
              help="What to keep of tensor values: nothing, statistics, or everything.")
@click.option("--values-max", "values_max", type=SIZE, default=None, metavar="SIZE",
              help="With --values all: copy at most SIZE (512M, 2G) [default: half the memory available].")
@click.option("--steps", "steps", default=None, metavar="A:B",
              help="Record only steps A to B-1 (from 1; A: from A on; A: step A alone). A step ends after an "
                   "optimizer step, or at gradtrace.step(); outside the window nothing of gradtrace runs.")
@click.option("--last", "last", type=click.IntRange(min=1), default=None, metavar="N",
              help="Keep the last N steps in full (a flight recorder); older steps leave their row in "
                   "`gradtrace show DIR --steps`. Memory stays bounded however long the run.")
@click.option("--stop-at", "stop_at", type=click.Choice(["nonfinite"]), default=None,
              help="Stop the script at the end of the step where the first NaN or Inf appears in a value, "
                   "a gradient or an updated parameter (exit code 3); the trace is written.")
@click.option("--no-update-ratios", "no_updates", is_flag=True,
              help="Take no update-to-weight ratios: they copy the parameters an update writes while it runs "
                   "(all at once for a foreach or fused optimizer).")
@click.option("--time", "time_ops", is_flag=True,
              help="Time each op (wall time; GPU time on CUDA, read once at the end): "
                   "`gradtrace show DIR --costs` then has a time column.")
@click.option("--depth", type=int, default=None, help="Module depth of graph.dot/graph.svg.")
@click.option("--no-svg", is_flag=True, help="Do not render graph.svg.")
@click.argument("script", type=click.Path(dir_okay=True))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(out_dir, values, values_max, steps, last, stop_at, no_updates, time_ops, depth, no_svg, script, args):
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
      gradtrace run --last 2 --stop-at nonfinite train.py   # leave it on
      torchrun --nproc-per-node 2 -m gradtrace run -o runs/ddp train_ddp.py
    """
    check_script(script)
    pos = launch_position()
    base = Path(out_dir) if out_dir else Path("gradtrace-out") / Path(script).stem
    if pos is not None:
        rank, world = pos
        out = rank_folder(base, rank)
        if rank == 0:  # an earlier single-process trace in base would be read instead of the ranks
            clear_single_trace(base)
    else:
        rank, world, out = 0, 1, base
    check_out_dir(out)
    if values == "all":
        limit = values_max if values_max is not None else default_values_max()
        print(f"gradtrace: --values all keeps a copy of every tensor version and gradient, at most "
              f"{human_bytes(limit)} (--values-max); a version whose value did not change shares its copy",
              file=sys.stderr)
    if steps is not None:
        try:
            parse_steps(steps)
        except ValueError as e:
            fail(str(e))
    if stop_at and values == "none":
        fail("--stop-at nonfinite reads the statistics of values and gradients: use --values stats or all")

    def write(result):
        return write_run_outputs(result.trace, out, depth=depth or DEFAULT_DEPTH, svg=not no_svg, html=True)

    def written_at_hard_exit(result):
        write(result)
        return (f"gradtrace: {script} ended the process with os._exit({result.exit_code}); its trace is in "
                f"{out} (gradtrace show {out})")

    with sigterm_held():  # a launcher stopping this rank waits for its trace
        result = run_script(script, list(args), values=values, rank=rank, world_size=world,
                            values_max=values_max, stop_at=stop_at, steps=steps, last=last,
                            updates=not no_updates, time=time_ops, on_hard_exit=written_at_hard_exit)
        start_fresh_line()
        try:
            written = write(result)
        except Exception as e:  # the script ran: its exit code stands, whatever the disk says
            fail(f"the trace was not written to {out}: {reason(e)}", result.exit_code)
        print_run_report(result.trace, out, all_ranks=base if pos is not None else None, written=written)
    if isinstance(result.exception, Terminated):
        die_of_sigterm()  # as the script would have: a launcher reads the signal, not a code
    sys.exit(result.exit_code)
