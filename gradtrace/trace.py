"""``gradtrace.trace()``: the context manager users hold, and ``gradtrace.load()``."""

from __future__ import annotations

import platform
import sys
import threading
import traceback
from pathlib import Path

from . import __version__
from .analyze.step_rows import step_rows
from .analyze.summary import summarize
from .graph.head import read_head
from .graph.io import HEAD_ATTRS, STEPS, SUMMARY, load_graph, load_values
from .graph.schema import FORMAT
from .outputs import run_findings, run_rows, save_trace

# torch, the recorder (``record``) and the graph builder are imported where a trace is
# recorded, not here: loading a trace (``gradtrace show``) never imports them.

__all__ = ["STOP_AT", "Trace", "VALUES", "default_values_max", "load", "load_steps", "load_summary", "math_settings", "step", "trace"]

VALUES = ("none", "stats", "all")
STOP_AT = (None, "nonfinite")
_active = threading.local()


def math_settings() -> dict:
    """Return the numerics settings that change results (trace format ``math``)."""
    import torch

    def get(f, default=None):
        try:
            return f()
        except Exception:
            return default

    return {
        "default_dtype": str(torch.get_default_dtype()).replace("torch.", ""),
        "tf32_matmul": get(lambda: torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": get(lambda: torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": get(torch.get_float32_matmul_precision),
        "cudnn_enabled": get(lambda: torch.backends.cudnn.enabled),
        "cudnn_benchmark": get(lambda: torch.backends.cudnn.benchmark),
        "cudnn_deterministic": get(lambda: torch.backends.cudnn.deterministic),
        "deterministic_algorithms": get(torch.are_deterministic_algorithms_enabled),
        "autocast_cpu": get(lambda: torch.is_autocast_enabled("cpu")),
        "autocast_cuda": get(lambda: torch.is_autocast_enabled("cuda")),
        "seed": get(torch.initial_seed),
    }


def _window(steps):
    """``(first, end)`` of a ``steps`` argument (``"10:13"``, ``(10, 13)``, None)."""
    if steps is None:
        return None
    from .record.window import parse_steps  # no torch needed to read a trace: only to record one

    if isinstance(steps, (tuple, list)) and len(steps) == 2:
        steps = f"{steps[0]}:{steps[1] or ''}"
    return parse_steps(steps)


def default_values_max() -> int:
    """The bytes ``values="all"`` may copy by default: half the memory available when
    the trace starts (4 GiB where that cannot be read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30


class Trace:
    """One traced run: use as ``with gradtrace.trace() as tr: ...``, then read
    ``tr.graph`` (a ``networkx.MultiDiGraph`` in trace format ``gradtrace/1``)."""

    def __init__(self, values: str = "stats", *, script=None, argv=None, target=None,
                 rank: int = 0, world_size: int = 1, values_max: int | None = None, stop_at: str | None = None,
                 steps=None, last: int | None = None, updates: bool = True, time: bool = False):
        if values not in VALUES:
            raise ValueError(f"values must be one of {', '.join(VALUES)}, not {values!r}")
        if stop_at not in STOP_AT:
            raise ValueError(f"stop_at must be None or one of {', '.join(s for s in STOP_AT if s)}, not {stop_at!r}")
        if stop_at == "nonfinite" and values == "none":
            raise ValueError("stop_at='nonfinite' reads the statistics of values and gradients: "
                             "use values='stats' or 'all'")
        if last is not None and (type(last) is not int or last < 1):
            raise ValueError(f"last must be a whole number of steps, at least 1, not {last!r}")
        self.stop_at = stop_at
        self.steps = _window(steps)
        self.last = last
        self.updates = bool(updates)
        self.time = bool(time)
        import torch

        self.values_mode = values
        # values="all" copies every tensor version: bounded, so that a big run ends with
        # a trace (and what was left out said) rather than out of memory
        self.values_max = (values_max if values_max is not None else default_values_max()) \
            if values == "all" else None
        self.meta = {
            "format": FORMAT,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "gradtrace_version": __version__,
            "script": script,
            "argv": argv,
            "target": target or "cpu",
            "rank": rank,
            "world_size": world_size,
            "values": values,
            "status": "running",
            "error": None,
        }
        self._rec = None  # the recorder (gradtrace.record.mode.Recorder), once started
        self._session = None
        self._window = None  # with ``steps``: the StepWindow counting the run's steps
        self._groups: list = []  # process groups held past the window (record.distributed)
        self._dropped_rows: list = []  # with ``last``: the rows of the steps that fell off the ring
        self._steps_dropped = 0
        self._rows_to = -1  # the call order of the last op the dropped steps' rows hold
        self._level = 0  # torch's mode stack depth when the trace was entered
        self._outer = None  # the trace this one was entered inside, paused while this one runs
        self._paused = False  # a trace entered inside this one is running
        self._open_on_resume = False  # the --steps window was to open while paused
        self._problems: list = []
        self._graph = None
        self._values = None

    # -- recording --------------------------------------------------------------------

    def __enter__(self) -> Trace:
        if self._rec is not None or self._outer is not None or getattr(_active, "trace", None) is self:
            raise RuntimeError("this gradtrace.trace() has already run; start a new one")
        from .record import modestack

        # A trace entered inside another (the program's own, under `gradtrace run`)
        # records its block; the outer one pauses there and says so.
        outer = getattr(_active, "trace", None)
        if outer is not None:
            outer._pause(sys._getframe(1))
            self._outer = outer
        try:
            self.meta["math_start"] = math_settings()
            if self.steps is None:
                self._start(sys._getframe(1))
            else:
                from .record.window import StepWindow

                self.meta["steps_window"] = list(self.steps)
                self._level = modestack.depth()
                self._window = StepWindow(*self.steps, self._window_opened, self._window_closed)
                self._window.install()
        except BaseException:
            if outer is not None:
                outer._resume()
            raise
        _active.trace = self
        return self

    def _pause(self, frame) -> None:
        """A trace entered inside this one (at the user's ``frame``) runs now: record
        nothing until :meth:`_resume`."""
        self._paused = True
        if self._rec is not None and self._session is not None:
            self._rec.pause(frame)

    def _resume(self) -> None:
        """The trace entered inside this one ended: record again (a ``--steps`` window
        that was to open meanwhile opens now)."""
        self._paused = False
        if self._rec is not None and self._session is not None:
            self._rec.resume()
        elif self._open_on_resume:
            self._open_on_resume = False
            self._window_opened()

    def _start(self, frame, level=None) -> None:
        from .record import session

        self._session = session.start(self.values_mode, self.values_max, frame, self.stop_at, level,
                                      self.last, self._step_dropped, self.updates, self.time)
        self._rec = self._session.recorder
        if self.last is not None:
            self.meta["last"] = self.last

    def _step_dropped(self, records, end: int) -> None:
        # Called where a step ended, or as the recording stops: never raises into the
        # program. The steps' rows are made from their records (built into a graph of
        # their own), which then go.
        try:
            from types import SimpleNamespace

            from .graph.build import build_graph

            rec = self._rec
            first = self.meta.get("first_step", 1) + self._steps_dropped
            # The ops the rows of earlier steps hold (their last ops ran after their cut) are theirs.
            records.ops = [op for op in records.ops if op[0] > self._rows_to]
            with rec.quiet():
                G = build_graph(SimpleNamespace(records=records, labels=rec.labels, modules=rec.modules),
                                {"status": "running", "first_step": first})
                # The steps as the graph finds them (as in the trace of the whole run: two
                # backward calls and two optimizers may make two steps of one cut), those
                # that begin before the last cut; the next one is the kept records'.
                rows = [r for r in step_rows(G) if r["first_seq"] < end]
            self._dropped_rows.extend(rows)
            self._steps_dropped += len(rows)
            if rows:
                self._rows_to = max(self._rows_to, rows[-1]["last_seq"])
        except Exception as e:
            self._problems.append(f"the --last ring lost the rows of the steps before op {end}: "
                                  f"{type(e).__name__}: {e}")

    def _window_opened(self) -> None:
        # Called where a step ended (an optimizer step's hook, gradtrace.step()): never
        # raises into the program; a recording that cannot start is noted in the trace.
        from .record import source

        if self._paused:  # a trace of the program's own runs: open once it ends
            self._open_on_resume = True
            return
        try:
            self._start(source.user_frame(1), self._level)
            self.meta["first_step"] = self._window.first
        except Exception as e:
            self._problems.append(f"the --steps window did not open: {type(e).__name__}: {e}")

    def _window_closed(self) -> None:
        if self._session is not None:
            # the DDP models keep the comm hook after the window: hold their groups on
            self._groups.extend(self._rec.process_groups)
            self._problems.extend(self._session.stop())
            self._session = None

    def __exit__(self, et, ev, tb) -> bool:
        # Nothing here may replace the user's exception: each step is kept apart,
        # and what fails is noted in the trace.
        problems = self._problems
        if self._window is not None:
            self._window.remove()
            self.meta["steps_seen"] = self._window.ended
            if self._rec is None:  # the window never opened: an empty recording says so
                self._start(sys._getframe(1))
        if self._session is not None:
            problems.extend(self._session.stop())
            self._session = None
        if self._steps_dropped:  # --last: the steps that fell off the ring leave their rows
            self.meta["earlier_steps"] = self._dropped_rows
            self.meta["first_step"] = self.meta.get("first_step", 1) + self._steps_dropped
        if self._groups:
            from .record import distributed

            distributed.release(self._groups)
        rec = self._rec
        _active.trace = self._outer
        if self._outer is not None:  # this recording has stopped: the outer one goes on
            self._outer._resume()
        try:
            self.meta["math"] = math_settings()
        except Exception as e:
            problems.append(f"{type(e).__name__}: {e}")
        if self.values_mode == "all":
            self.meta["values_kept"] = rec.copies.facts()
        if problems:
            self.meta["recorder_errors"] = problems
        if et is None or (issubclass(et, SystemExit) and ev is not None and ev.code in (0, None)):
            self.meta["status"] = "ok"
        else:
            self.meta["status"] = "error"
            interrupted = getattr(et, "gradtrace_signal", None) or (
                "SIGINT" if issubclass(et, KeyboardInterrupt) else None)
            if interrupted:
                self.meta["interrupted"] = interrupted
            from .record.watch import StoppedAtNonfinite  # imported already: the trace ran

            if isinstance(ev, StoppedAtNonfinite):
                self.meta["stopped_at"] = {"reason": "nonfinite", "where": ev.where}
            self.meta["error"] = {
                "type": et.__name__,
                "message": str(ev),
                "traceback": "".join(traceback.format_exception(et, ev, tb)),
            }
        return False

    @property
    def recorder(self):
        """The function mode recording this trace (``gradtrace.record.mode.Recorder``),
        None before it starts; a loaded trace has none."""
        return self._rec

    # -- results ----------------------------------------------------------------------

    @property
    def graph(self):
        """The trace graph (built on first access once recording has ended)."""
        if self._graph is None:
            if self._rec is None:
                raise RuntimeError("nothing recorded yet: use `with gradtrace.trace() as tr:`")
            from .graph.build import build_graph

            if self.meta["status"] == "running":
                return build_graph(self._rec, self.meta)  # a live view; not cached
            self._graph = build_graph(self._rec, self.meta)
        return self._graph

    @property
    def values(self) -> dict:
        """Captured tensor values (``values="all"``), keyed by node id or edge value key."""
        if self._values is None:
            self._values = dict(self._rec.copies.wait()) if self._rec is not None else {}
        return self._values

    def save(self, folder, dot: bool = True) -> Path:
        """Write the trace folder (``trace.json``, ``values.safetensors``, ``graph.dot``);
        return its path.

        ``graph.dot`` is left out (with a note on standard error) when the drawing would
        be too big to lay out (:data:`gradtrace.views.drawsize.SVG_MAX_LINES`); values that
        safetensors cannot hold are listed in ``values_not_saved``."""
        return save_trace(self, folder, dot)

    def summary(self) -> str:
        """Return a plain-text summary of the trace."""
        from .analyze.summary import summary_text

        return summary_text(self.graph)

    def __repr__(self):
        g = self._graph
        n = sum(1 for _, k in g.nodes(data="kind") if k == "op") if g is not None else "?"
        return f"<gradtrace.Trace status={self.meta.get('status')} ops={n}>"

    def _repr_svg_(self):
        from .views.dot import render_svg

        return render_svg(self.graph)

    def _repr_html_(self):
        """The interactive viewer (:mod:`gradtrace.views.html`) in an iframe, for notebooks;
        None while recording, so the notebook falls back to the text form."""
        if self.meta.get("status") == "running" or (self._graph is None and self._rec is None):
            return None
        from .views.html import notebook_html

        return notebook_html(self.graph, run_findings(self.graph), rows=run_rows(self.graph))

    def _repr_pretty_(self, p, cycle):
        p.text(self.summary())


def step() -> None:
    """Mark the end of a step in the trace recording on this thread (nothing when none
    is): for loops whose steps no backward call and update mark (inference, evaluation,
    a hand-written sampler), or to say where steps end when they do. Once a trace holds
    one mark, its steps are the marks' (``gradtrace show DIR --steps``, the pictures'
    ``--step N``)."""
    tr = getattr(_active, "trace", None)
    if tr is None:
        return
    if tr._window is not None:
        tr._window.mark()
    if tr._session is not None:
        tr._rec.step_marked()  # may stop the run (--stop-at): the step is counted already
    if tr._window is not None:
        tr._window.settle()


def trace(values: str = "stats", **kwargs) -> Trace:
    """Return a context manager that records the torch program run inside it.

    ``values``: ``"stats"`` (default) keeps min/max/mean/norm/NaN/Inf per tensor and
    gradient; ``"all"`` also keeps every value (written to ``values.safetensors``), up
    to ``values_max`` bytes of copies (default: half the memory available; a version
    whose value did not change shares its copy; ``meta["values_kept"]`` says what was
    kept and what the limit left out); ``"none"`` keeps metadata only.

    ``steps="A:B"`` (or ``(A, B)``): record only steps A to B-1 of the run (from 1; a
    step ends after an optimizer step, or at ``gradtrace.step()`` once the program calls
    it); outside them nothing of the recorder is installed.

    ``last=N``: a flight recorder for a whole run: keep the last N steps in full and, of
    each older step, only its row (``meta["earlier_steps"]``; see
    :func:`gradtrace.analyze.step_rows.step_rows`); the recording stays bounded however
    long the run.

    ``stop_at="nonfinite"``: at the end of the step where the first NaN or Inf appeared
    in a value, a gradient or a parameter after its update, raise
    ``gradtrace.record.watch.StoppedAtNonfinite`` into the program (the trace ends with
    it, ``meta["stopped_at"]`` says where).

    ``updates=False``: take no update-to-weight ratios (:mod:`gradtrace.record.updates`),
    whose copy of the parameters an update writes is held while it runs (all of them at
    once for a foreach or fused optimizer); the step rows then give relative changes of
    norms.

    ``time=True``: how long each op took (op attributes ``time_ns``, and
    ``device_time_ns`` on CUDA: :mod:`gradtrace.record.timing`), for
    ``gradtrace show DIR --costs``.

    A trace entered while another records on the same thread (a script that traces
    itself, run by ``gradtrace run``) records its block; the outer one pauses until it
    ends and marks the place with an op ``gradtrace.trace``."""
    return Trace(values, **kwargs)


def load(path) -> Trace:
    """Load a saved trace folder and return it as a :class:`Trace` (never unpickles).

    The folder is checked against the trace format (:mod:`gradtrace.schema`) here,
    once, so what the returned trace holds is what the format promises. Raises
    ``gradtrace.TraceError`` (one line) when the folder is not a readable, well-formed
    trace."""
    G = load_graph(path)
    t = Trace.__new__(Trace)  # not __init__: it describes a run about to be recorded
    t._rec = t._session = t.values_max = t.stop_at = t.steps = t.last = t._window = t.updates = t.time = None
    t._outer, t._paused, t._open_on_resume = None, False, False
    t._graph, t.meta = G, G.graph
    t.values_mode = t.meta.get("values", "none")
    t._values = load_values(path, G)
    t.path = Path(path)
    return t


def load_summary(path) -> tuple[dict, dict]:
    """Return ``(summary, meta)`` of a saved trace folder: the figures of
    :func:`gradtrace.analyze.summary.summarize` and the graph attributes.

    A trace written with its summary at the head of ``trace.json`` (graph attribute
    ``summary``) is read no further than its head, a few kilobytes of however many
    megabytes; an older one is loaded whole and summarized. Raises
    ``gradtrace.TraceError`` (one line) when the folder is not a readable trace."""
    return _head_figure(path, SUMMARY, summarize)


def load_steps(path) -> tuple[list, dict]:
    """Return ``(rows, meta)`` of a saved trace folder: a row per step
    (:func:`gradtrace.analyze.step_rows.step_rows`) and the graph attributes, read from
    the head of ``trace.json`` as :func:`load_summary` reads the summary."""
    return _head_figure(path, STEPS, step_rows)


def _head_figure(path, key: str, make):
    head = read_head(path)
    if head is not None and key in head:
        meta = {k: v for k, v in head.items() if k not in HEAD_ATTRS}
        return head[key], meta
    G = load_graph(path)
    return make(G), G.graph
