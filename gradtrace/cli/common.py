"""What the ``gradtrace`` commands share: the one-line error exit, loading traces,
checking a script and an output folder, and the option types."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from ..graph.io import TraceError
from ..ranks import launcher_position, load_rank, load_ranks

__all__ = ["CONTEXT", "RANK_OPTION", "SCRIPT_CONTEXT", "SIZE", "check_out_dir", "check_script", "fail",
           "launch_position", "load_trace", "load_traces", "reason"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
SCRIPT_CONTEXT = {**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False}


def fail(message: str, code: int = 2):
    """Print a one-line error and exit (2: usage or input error); never returns."""
    click.echo(f"gradtrace: error: {message}", err=True)
    sys.exit(code)


def load_trace(folder, rank=None):
    """Return one trace: a trace folder, or rank ``rank`` of a multi-rank folder."""
    try:
        return load_rank(folder, rank)
    except TraceError as e:
        fail(str(e))


def load_traces(folder, rank=None) -> dict:
    """Return ``{rank: Trace}``: every rank of a multi-rank folder (or only ``rank``), or
    the one trace of a trace folder."""
    if rank is not None:
        return {rank: load_trace(folder, rank)}
    try:
        return load_ranks(folder)
    except TraceError as e:
        fail(str(e))


def launch_position():
    """Return ``(rank, world_size)`` under torchrun / torch.distributed.run, else None."""
    try:
        return launcher_position()
    except ValueError as e:
        fail(str(e))


def check_script(script: str):
    """Exit with a one-line error unless ``script`` is a file."""
    p = Path(script)
    if not p.exists():
        fail(f"script not found: {script}")
    if p.is_dir():
        fail(f"script is a folder, not a Python file: {script}")


def check_out_dir(out: Path):
    """Make the trace folder now and check that a file can be written in it, so a run
    that could not be saved is refused before the script runs; exit with a one-line
    error when it cannot."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".gradtrace-probe-"):
            pass
    except OSError as e:
        fail(f"cannot write the trace folder {out}: {reason(e)}")


def reason(e: BaseException) -> str:
    """Return why ``e`` happened, in one line (an OS error's own words and its file)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    return f"{type(e).__name__}: {e}"


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
