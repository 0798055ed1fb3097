"""Draw a trace graph as DOT (through pydot), and render it with Graphviz.

Views (trace format): ``forward`` (ops and the tensors between them),
``autograd`` (grad_fn nodes, backward calls and the gradients they sent),
``memory`` (storages as columns of their tensors, views, versions, numpy sharing,
moves) and ``all``. :func:`build` draws each on a :class:`~.picture.Picture` with
:mod:`.forward`, :mod:`.autograd` and :mod:`.memory`: one step of a training loop at
a time, tensors as shape-labelled edges, parameters folded into the ops that use
them, modules deeper than ``depth`` and repeated blocks folded, a title and a legend.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import networkx as nx
import pydot

from .autograd import draw_autograd
from .forward import Forward
from .memory import draw_memory
from .picture import DEFAULT_DEPTH, Picture

__all__ = [
    "DEFAULT_DEPTH", "VIEWS", "GraphvizMissing", "RenderError", "build", "have_graphviz", "marks_of", "render",
    "render_svg", "render_to_file", "to_dot", "to_pydot",
]

VIEWS = ("forward", "autograd", "memory", "all")


def build(G, view="forward", depth=DEFAULT_DEPTH, highlight=None, step=None, phase=None, tensors=False,
          saved=False, findings=None, legend=True, notes=()) -> pydot.Dot:
    """Return the pydot graph of one view of trace ``G``. ``highlight``: nodes to
    outline (a set, or {node: [finding codes]}); ``findings``: findings of
    ``gradtrace.check`` whose nodes are outlined with their codes; ``notes``: lines the
    legend ends with (the step's costs). Raises ``ValueError`` for an unknown view,
    phase or step."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}: choose one of {', '.join(VIEWS)}")
    p = Picture(G, depth, step, phase, tensors, saved, marks_of(highlight, findings))
    if view in ("forward", "all"):
        Forward(p).draw()
    if view in ("autograd", "all"):
        draw_autograd(p)
    if view in ("memory", "all"):
        draw_memory(p)
    p.title(view)
    if legend:
        p.legend(view, notes)
    return p.dot


def marks_of(highlight, findings) -> dict:
    """Return {node: [codes]} from a highlight set or dict and findings (read
    defensively: any object with ``code`` and ``nodes``)."""
    marks: dict = {}
    if isinstance(highlight, dict):
        for n, codes in highlight.items():
            marks.setdefault(n, []).extend(codes or ())
    else:
        for n in highlight or ():
            marks.setdefault(n, [])
    for f in findings or ():
        code = getattr(f, "code", None) or (f.get("code") if isinstance(f, dict) else None) or "finding"
        nodes = getattr(f, "nodes", None) or (f.get("nodes") if isinstance(f, dict) else None) or ()
        for n in nodes:
            if code not in marks.setdefault(n, []):
                marks[n].append(code)
    return marks


class GraphvizMissing(RuntimeError):
    """Graphviz's ``dot`` program is not installed."""


def to_pydot(G: nx.MultiDiGraph, view: str = "forward", depth: int = DEFAULT_DEPTH, highlight=None,
             **options) -> pydot.Dot:
    """Return the pydot graph of one view of a trace; ``highlight`` names nodes to
    outline (a set, or {node: [finding codes]}). ``options``: ``step`` (a number,
    ``"all"``, or None for the last complete step), ``phase`` (``init``, ``forward``,
    ``backward``, ``optimizer``, ``all``, or several joined by commas; None for
    forward and backward), ``tensors`` (draw tensors as nodes), ``saved`` (draw saved
    tensors in the autograd view), ``findings`` (outline their nodes with their codes),
    ``legend``, ``notes`` (lines under the legend). Raises ``ValueError`` for an unknown
    view, step or phase."""
    return build(G, view, depth, highlight, **options)


def to_dot(G: nx.MultiDiGraph, view: str = "forward", depth: int = DEFAULT_DEPTH, highlight=None,
           **options) -> str:
    """Return DOT text for one view of a trace (options as :func:`to_pydot`)."""
    return to_pydot(G, view, depth, highlight, **options).to_string()


def have_graphviz() -> bool:
    """True when Graphviz's ``dot`` program is on PATH."""
    return shutil.which("dot") is not None


class RenderError(RuntimeError):
    """Graphviz could not draw a DOT text, or the drawing could not be written; the
    message is one line."""


def render(dot_text: str, fmt: str = "svg", timeout: float = 120) -> bytes:
    """Render DOT text with Graphviz and return the image bytes.

    Raises :class:`GraphvizMissing` when ``dot`` is not installed, and
    :class:`RenderError` (one line) when it fails or runs past ``timeout`` seconds."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing("Graphviz's 'dot' is not installed (apt-get install graphviz); "
                              "SVG and PNG need it, DOT text does not")
    try:
        r = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RenderError(f"Graphviz's dot did not finish drawing in {timeout:g} s") from None
    except OSError as e:
        raise RenderError(f"Graphviz's dot could not be run ({e.strerror or e})") from None
    if r.returncode != 0:
        lines = r.stderr.decode(errors="replace").strip().splitlines()
        raise RenderError(f"Graphviz's dot failed (exit {r.returncode})" + (f": {lines[-1].strip()}" if lines else ""))
    return r.stdout


def render_to_file(dot_text: str, fmt: str, path) -> Path:
    """Render DOT text with Graphviz into the file ``path``; return its path.

    Raises :class:`GraphvizMissing`, or :class:`RenderError` (one line) when Graphviz
    fails or the file cannot be written."""
    data = render(dot_text, fmt)
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise RenderError(f"cannot write {path} ({e.strerror or e})") from None
    return Path(path)


def render_svg(G, view: str = "forward", depth: int = DEFAULT_DEPTH):
    """Return the SVG text of a view, or None when Graphviz is missing."""
    if not have_graphviz():
        return None
    return render(to_dot(G, view, depth), "svg").decode("utf-8")
