"""A transient progress line on a terminal's standard error for the slow steps of
``gradtrace run`` (building the graph, saving, drawing, checking).

Nothing is shown when standard error is not a terminal (pipes, files, tests), nor for
a step that ends within ``delay`` seconds; the line is erased when the step ends.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

__all__ = ["DELAY", "phase", "stderr_is_terminal"]

DELAY = 2.0


def stderr_is_terminal() -> bool:
    """Return True when standard error is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):
        return False


@contextmanager
def phase(description: str, delay: float = DELAY):
    """Run the ``with`` body; after ``delay`` seconds show a spinner, ``description``
    and the elapsed time on the terminal until the body ends."""
    if not stderr_is_terminal():
        yield
        return
    # lazy: rich's live display costs an import most runs (off a terminal) never need
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn(),
                   console=Console(stderr=True, highlight=False), transient=True,
                   redirect_stdout=False, redirect_stderr=False)
    bar.add_task(f"gradtrace: {description}", total=None)
    # A timer thread, so a step that ends quickly never flashes a line.
    timer = threading.Timer(delay, bar.start)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        bar.stop()
