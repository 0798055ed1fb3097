"""The ``gradtrace`` command: a thin layer over the library.

Each command lives in its own module (:mod:`.run`, :mod:`.show`, :mod:`.draw`,
:mod:`.check`, :mod:`.replay`) over what they share (:mod:`.common`) and the
terminal output (:mod:`.report`); this module puts them on one group, importing a
command's module when that command runs (``gradtrace show`` never imports torch)."""

from __future__ import annotations

import importlib

import click

from .. import __version__
from .common import CONTEXT

__all__ = ["main"]

# command name -> (module, function), in the order ``--help`` lists them
_COMMANDS = {"run": ("run", "run"), "show": ("show", "show"), "dot": ("draw", "dot"), "html": ("draw", "html"),
             "check": ("check", "check"), "replay": ("replay", "replay"), "diff": ("replay", "diff")}


class _LazyGroup(click.Group):
    """A group whose commands are imported when asked for."""

    def list_commands(self, ctx) -> list:
        return list(_COMMANDS)

    def get_command(self, ctx, name):
        where = _COMMANDS.get(name)
        if where is None:
            return None
        return getattr(importlib.import_module(f".{where[0]}", __name__), where[1])


@click.group(cls=_LazyGroup, context_settings=CONTEXT)
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

