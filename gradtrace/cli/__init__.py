"""The ``gradtrace`` command: a thin layer over the library.

Each command lives in its own module (:mod:`.run`, :mod:`.show`, :mod:`.draw`,
:mod:`.check`, :mod:`.replay`) over what they share (:mod:`.common`) and the
terminal output (:mod:`.report`); this module puts them on one group."""

from __future__ import annotations

import click

from .. import __version__
from . import check, draw, replay, run, show
from .common import CONTEXT

__all__ = ["main"]


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


for _command in (run.run, show.show, draw.dot, draw.html, check.check, replay.replay, replay.diff):
    main.add_command(_command)
