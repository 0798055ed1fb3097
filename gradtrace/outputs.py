"""The one writer of a trace folder: ``trace.json``, ``values.safetensors``,
``graph.dot``, ``graph.svg`` and ``graph.html``.

``Trace.save`` and ``gradtrace run`` (also ``check -o`` and each replay run) write
through here. A drawing too big to lay out is left out, with a note on standard
error, and a drawing an earlier run left in the folder is removed, so what a folder
holds always describes its own trace.
"""

from __future__ import annotations

import sys
import weakref
from pathlib import Path

from .analyze.checks import check_graph
from .analyze.costs import costs_line, op_costs
from .analyze.step_rows import step_rows
from .analyze.summary import nodes_of, summarize
from .graph.io import DOT_FILE, STEPS, SUMMARY, TRACE_FILE, VALUES_FILE, save
from .progress import phase
from .views import dot as dot_view
from .views import drawsize
from .views import html as html_view

__all__ = ["HTML_FILE", "RUN_FILES", "SVG_FILE", "clear_single_trace", "cost_notes", "run_findings", "run_rows", "run_summary",
           "save_trace", "write_run_outputs"]

SVG_FILE = "graph.svg"
HTML_FILE = "graph.html"
# Every file a run may leave, so that an earlier single-process trace is cleared whole.
RUN_FILES = (TRACE_FILE, VALUES_FILE, DOT_FILE, SVG_FILE, HTML_FILE)

_graphviz_note_said = False  # one note a process is enough, however many folders it writes

# Weak, per graph: the run report, its notes and the viewer's size check all read the
# summary, and the viewer and the report both show the findings; each pass over a
# 200k-op trace costs a second.
_summaries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_rows: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_summary(G) -> dict:
    """Return :func:`~gradtrace.analyze.summary.summarize` of ``G``, computed once per graph."""
    s = _summaries.get(G)
    if s is None:
        s = _summaries[G] = summarize(G)
    return s


def run_rows(G) -> list:
    """Return :func:`~gradtrace.analyze.step_rows.step_rows` of ``G``, computed once per
    graph (the head of trace.json and the viewer's timeline both show them)."""
    rows = _rows.get(G)
    if rows is None:
        rows = _rows[G] = step_rows(G)
    return rows


def run_findings(G) -> list:
    """Return the findings of ``gradtrace check`` on ``G``, checked once per graph, for
    a report or a picture to show; when checking fails, none (with a note on standard
    error): a drawing or a report must not be lost to a check's error."""
    found = _checked.get(G)
    if found is None:
        try:
            found = check_graph(G)
        except Exception as e:  # noqa: BLE001
            print(f"gradtrace: note: findings not marked ({type(e).__name__}: {e})", file=sys.stderr)
            found = []
        _checked[G] = found
    return found


# -- Trace.save ---------------------------------------------------------------------------


def save_trace(trace, folder, dot: bool = True) -> Path:
    """Write ``trace`` (a :class:`gradtrace.Trace`) into ``folder``: ``trace.json`` (its
    summary at the head), ``values.safetensors`` and, with ``dot``, ``graph.dot`` at the default depth unless
    the drawing would be too big to lay out. Returns the folder's path."""
    text = _dot_text(trace.graph, Path(folder)) if dot else None
    out = save(trace.graph, folder, trace.values, text, _head(trace.graph))
    if dot and text is None:
        (out / DOT_FILE).unlink(missing_ok=True)  # an earlier trace's drawing would misstate this one
    return out


def _head(G) -> dict:
    """The figures to write at the head of trace.json (the summary, the step rows); one
    that cannot be made is left out, with a note: readers then compute it from the whole
    trace, and the trace is kept."""
    head = {}
    for key, make in ((SUMMARY, run_summary), (STEPS, run_rows)):
        try:
            head[key] = make(G)
        except Exception as e:  # noqa: BLE001
            print(f"gradtrace: note: no {key} written at the head of {TRACE_FILE} ({type(e).__name__}: {e})",
                  file=sys.stderr)
    return head


def _dot_text(G, folder: Path):
    """The DOT text of ``G``'s default drawing, or None (with a note) when it is not drawn."""
    try:
        why = drawsize.too_big_to_draw(G, dot_view.DEFAULT_DEPTH)
        if why:
            print(f"gradtrace: note: {folder / DOT_FILE} not written: {why}", file=sys.stderr)
            return None
        return dot_view.to_dot(G)
    except Exception as e:  # a drawing problem must not lose the trace
        print(f"gradtrace: graph.dot not written ({type(e).__name__}: {e})", file=sys.stderr)
        return None


# -- gradtrace run ------------------------------------------------------------------------


def write_run_outputs(trace, out: Path, depth: int, svg: bool = True, html: bool | None = None) -> dict:
    """Save a finished trace into ``out``, with its graph.dot (and graph.svg when
    Graphviz is installed) when the drawing is small enough to lay out, and graph.html
    (the interactive viewer; ``html`` None: when ``svg`` is asked for, so replay and
    check runs, which draw nothing, skip it); return the paths written, by name. The
    DOT text is made at most once, and not at all for a drawing too big to draw."""
    out = Path(out)
    with phase("building the graph"):
        G = trace.graph
    with phase(f"saving {out}"):
        save_trace(trace, out, dot=False)
    written = {"trace": out / TRACE_FILE}
    if (out / VALUES_FILE).exists():
        written["values"] = out / VALUES_FILE
    if svg if html is None else html:
        written.update(_write_html(G, out, depth))
    size = drawsize.drawn_elements(G, depth)
    if size > drawsize.SVG_MAX_LINES:
        _forget(out / DOT_FILE)
        _forget(out / SVG_FILE)
        print(_too_big_note(G, out, f"{DOT_FILE} and {SVG_FILE}", f"{size} elements"), file=sys.stderr)
        return written
    written.update(_draw(G, out, depth, svg))
    return written


def clear_single_trace(out) -> list[Path]:
    """Remove the files of a single-process trace from ``out`` (what ``gradtrace run``
    wrote there before); return what was removed. A folder with a ``trace.json`` of
    its own is read as one trace, so without this an earlier single-process run
    would hide the rank folders a launched run writes beside it."""
    removed = []
    for name in RUN_FILES:
        f = Path(out) / name
        if f.is_file():
            f.unlink()
            removed.append(f)
    return removed


def _forget(path: Path):
    # A drawing left by an earlier run into this folder would not match this trace.
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _too_big_note(G, out: Path, what: str, size: str) -> str:
    """The note for a drawing too big to lay out, with a next step that can help this trace."""
    if any(True for _ in nodes_of(G, "module")) and drawsize.drawn_elements(G, 1) <= drawsize.SVG_MAX_LINES:
        hint = f"try `gradtrace dot {out} --depth 1 -o g.svg`"
    else:
        top = _busiest_line(run_summary(G))
        hint = (f"list one line's ops with `gradtrace show {out} --line {top}`" if top
                else f"see `gradtrace show {out} --summary`")
    return f"gradtrace: note: {what} not written: the drawing has {size}, too many to lay out quickly; {hint}"


def _busiest_line(s: dict):
    """``FILE:LINE`` (file name only) of the source line with the most ops (of a
    :func:`summarize` dict), or None."""
    top = s["top_lines"]
    return f"{Path(top[0]['file']).name}:{top[0]['line']}" if top else None


def _write_html(G, out: Path, depth: int) -> dict:
    """graph.html, the interactive viewer: written also when the SVG is too big to lay
    out (the page folds and opens modules itself), skipped with a note past
    :data:`~gradtrace.views.html.HTML_MAX_OPS` ops."""
    _forget(out / HTML_FILE)
    ops = run_summary(G)["ops"]
    if ops > html_view.HTML_MAX_OPS:
        print(f"gradtrace: note: graph.html not written: the trace has {ops} ops, more than the viewer opens "
              f"quickly ({html_view.HTML_MAX_OPS}); see `gradtrace show {out} --summary`", file=sys.stderr)
        return {}
    try:
        with phase("writing graph.html"):
            html_view.write_html(G, out / HTML_FILE, findings=run_findings(G), depth=depth, rows=run_rows(G),
                                 costs=op_costs(G))
    except Exception as e:  # a viewer problem must not lose the trace
        print(f"gradtrace: note: graph.html not written ({type(e).__name__}: {e})", file=sys.stderr)
        return {}
    return {"html": out / HTML_FILE}


def cost_notes(G, step="last") -> list:
    """The legend's line of the drawn step's costs (``gradtrace show --costs``), or none."""
    try:
        line = costs_line(G, step)
    except Exception as e:  # a legend line must not cost the picture
        print(f"gradtrace: note: costs not in the legend ({type(e).__name__}: {e})", file=sys.stderr)
        return []
    if not line:
        return []
    head, parts = line.split(": ", 1)  # short lines: a long one would widen the legend's colour column
    return [f"{head} (gradtrace show --costs):", *parts.split(", ")]


def _draw(G, out: Path, depth: int, svg: bool) -> dict:
    """graph.dot at ``depth`` and, with ``svg``, graph.svg when Graphviz can lay it out."""
    global _graphviz_note_said
    written = {}
    with phase("drawing graph.dot"):
        try:
            text = dot_view.to_dot(G, "forward", depth, notes=cost_notes(G))
        except Exception as e:  # a drawing problem must not lose the trace
            print(f"gradtrace: note: graph.dot not written ({type(e).__name__}: {e})", file=sys.stderr)
            return written
        (out / DOT_FILE).write_text(text, encoding="utf-8")
    written["dot"] = out / DOT_FILE
    _forget(out / SVG_FILE)
    if not svg:
        return written
    if not dot_view.have_graphviz():
        if not _graphviz_note_said:
            print("gradtrace: note: Graphviz's 'dot' is not installed, so graph.svg was not "
                  "rendered (apt-get install graphviz); graph.dot was written.", file=sys.stderr)
            _graphviz_note_said = True
        return written
    lines = text.count("\n")
    if lines > drawsize.SVG_MAX_LINES:
        print(_too_big_note(G, out, SVG_FILE, f"{lines} elements"), file=sys.stderr)
        return written
    try:
        with phase("rendering graph.svg"):
            (out / SVG_FILE).write_bytes(dot_view.render(text, "svg"))
        written["svg"] = out / SVG_FILE
    except (dot_view.GraphvizMissing, RuntimeError, OSError) as e:
        print(f"gradtrace: note: graph.svg not rendered ({e})", file=sys.stderr)
    except Exception as e:  # e.g. a render timeout on a huge graph
        print(f"gradtrace: note: graph.svg not rendered ({type(e).__name__})", file=sys.stderr)
    return written
