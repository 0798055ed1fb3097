"""Run a script the way ``python SCRIPT ARGS`` does, under a trace."""

from __future__ import annotations

import builtins
import contextlib
import io
import operator
import os
import runpy
import signal
import sys
import threading
import traceback
import types
import zipfile

from .trace import Trace

__all__ = ["STOPPED_EXIT", "HardExit", "ScriptResult", "Terminated", "die_of_sigterm", "run_script",
           "sigterm_held", "user_traceback"]

_HERE = os.path.dirname(os.path.abspath(__file__))


class Terminated(BaseException):
    """The traced script received SIGTERM: raised where it was, so that the trace ends and
    is written (marked ``interrupted: SIGTERM``); ``gradtrace run`` then dies of the signal
    as the script would have. A BaseException, so ``except Exception`` does not catch it."""

    gradtrace_signal = "SIGTERM"

    def __init__(self):
        super().__init__("terminated by SIGTERM")


class _Sigterm:
    """The SIGTERM handler while gradtrace runs a script: in the script, SIGTERM raises
    :class:`Terminated`; anywhere else (the trace ending, its files being written) it is
    held, and the process dies of it once they are done. A launcher stopping the other
    ranks (torchrun, after one rank failed) would otherwise end a rank mid-write."""

    def __init__(self):
        self.in_script = False
        self.held = False

    def __call__(self, signum, frame):
        if self.in_script:
            raise Terminated()
        self.held = True

    @contextlib.contextmanager
    def raising(self):
        """Within: SIGTERM raises :class:`Terminated` where the script is."""
        self.in_script = True
        try:
            yield
        finally:
            self.in_script = False


@contextlib.contextmanager
def sigterm_held():
    """Within, SIGTERM is held (and raised as :class:`Terminated` in a script that
    :func:`run_script` runs inside); on leaving, a held SIGTERM ends the process as its
    default action would. Yields the handler. Nested uses share the outermost; where
    SIGTERM is handled already (the script's launcher, the caller) or signals cannot be
    set (not the main thread), SIGTERM keeps its handler."""
    current = _current_sigterm()
    if isinstance(current, _Sigterm):
        yield current
        return
    guard = _Sigterm()
    if current is not signal.SIG_DFL or not _set_sigterm(guard):
        yield guard
        return
    try:
        yield guard
    finally:
        if _current_sigterm() is guard:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if guard.held:
                die_of_sigterm()


def _current_sigterm():
    try:
        return signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        return None


def _set_sigterm(handler) -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        return False
    return True


def die_of_sigterm() -> None:
    """End this process by SIGTERM, with its default action (what the traced script met)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


class ScriptResult:
    """The outcome of a traced script: its trace and the exit code Python would give."""

    def __init__(self, trace: Trace, exit_code: int, exc: BaseException | None):
        self.trace = trace
        self.exit_code = exit_code
        self.exception = exc


STOPPED_EXIT = 3  # the exit code of a run --stop-at stopped


def run_script(script, argv=(), values: str = "stats", target: str | None = None,
               rank: int | None = None, world_size: int | None = None,
               print_traceback: bool = True, values_max: int | None = None,
               stop_at: str | None = None, steps=None, last: int | None = None,
               updates: bool = True, time: bool = False, on_hard_exit=None) -> ScriptResult:
    """Trace ``script`` run as ``__main__`` with ``sys.argv = [script, *argv]`` and its
    folder first on ``sys.path``; return a :class:`ScriptResult`. An exception the
    script raises is printed as Python prints it (unless ``print_traceback`` is
    false) and ends the trace with status ``error``; SIGTERM raises :class:`Terminated`
    in the script (unless SIGTERM is handled already), so its trace is kept too, and is
    held while the trace ends (see :func:`sigterm_held`: a caller that writes the trace
    holds it until written by running this inside ``sigterm_held()``).

    ``values_max``: bytes ``values="all"`` may copy (default: half the memory available).
    ``stop_at="nonfinite"`` stops the script at the end of the step where the first NaN
    or Inf appeared (one line on standard error, exit code :data:`STOPPED_EXIT`);
    ``steps="A:B"`` records only steps A to B-1, ``last=N`` keeps the last N steps,
    ``updates=False`` takes no update-to-weight ratios, ``time=True`` times each op (see
    :func:`gradtrace.trace`).
    ``rank`` and ``world_size`` go into the trace's meta; left out, they come from
    the launcher's ``RANK`` and ``WORLD_SIZE`` (torchrun), else 0 and 1.

    ``on_hard_exit``: called with the :class:`ScriptResult` when the script ends the
    process itself with ``os._exit(code)`` on its own thread; the trace has ended there
    (meta ``hard_exit``). A line it returns goes to standard error past Python's buffers
    (nothing flushes the script's streams), and the process then exits with ``code`` as
    it would untraced, nothing else of Python's shutdown run. Without it, ``os._exit`` is
    left alone."""
    if rank is None or world_size is None:
        from .ranks import launcher_position

        env_rank, env_world = launcher_position() or (0, 1)
        rank = env_rank if rank is None else rank
        world_size = env_world if world_size is None else world_size
    script = str(script)
    path = os.path.abspath(script)
    tr = Trace(values, script=script, argv=list(argv), target=target, rank=rank, world_size=world_size,
               values_max=values_max, stop_at=stop_at, steps=steps, last=last, updates=updates,
               time=time)
    old_argv, old_path0 = sys.argv, sys.path[0] if sys.path else None
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(path))
    exit_code, exc = 0, None
    try:
        with sigterm_held() as sigterm, tr, sigterm.raising(), _hard_exit_ends(tr, sigterm, on_hard_exit):
            _run_as_main(path)
    except SystemExit as e:
        exit_code = _exit_code(e.code)
    except BaseException as e:  # the user's exception: shown, kept in the trace, exit 1
        exc, exit_code = e, _exit_code_of(e)
        if tr.meta.get("error"):
            tr.meta["error"]["traceback"] = user_traceback(e)
        if tr.meta.get("stopped_at"):
            print(f"gradtrace: {e} (--stop-at nonfinite)", file=sys.stderr)
        elif print_traceback:
            _print_user_traceback(e, path)
    finally:
        sys.argv = old_argv
        if sys.path and sys.path[0] == os.path.dirname(path):
            sys.path.pop(0)
        elif old_path0 is not None and old_path0 not in sys.path:
            sys.path.insert(0, old_path0)
    return ScriptResult(tr, exit_code, exc)


class HardExit(SystemExit):
    """What ends a trace when the script calls ``os._exit(code)``: never raised, only
    handed to the trace's exit (``code`` 0 ends it ``ok``, as ``sys.exit(0)`` would)."""

    def __str__(self):
        return f"os._exit({self.code})"


@contextlib.contextmanager
def _hard_exit_ends(tr: Trace, sigterm, on_hard_exit):
    """Within, ``os._exit`` called by the script on this thread of this process first
    ends ``tr`` and hands it to ``on_hard_exit``, then exits. A forked child (a DataLoader
    worker ends with ``os._exit``) exits at once, as untraced; another thread too, after
    one line on standard error."""
    if on_hard_exit is None:
        yield
        return
    real_exit, pid, thread = os._exit, os.getpid(), threading.get_ident()

    def _exit(code):
        try:
            code = operator.index(code)
        except TypeError:  # os._exit raises it, the trace going on as untraced code would
            real_exit(code)
        if os.getpid() == pid and threading.get_ident() == thread:
            sigterm.in_script = False  # from here on, gradtrace's own work: SIGTERM waits
            try:
                tr.meta["hard_exit"] = code
                tr.__exit__(HardExit, HardExit(code), None)
                line = on_hard_exit(ScriptResult(tr, code, None))
                if line:
                    _say(line)
            except BaseException as e:  # the exit the script asked for happens whatever fails
                _say(f"gradtrace: the trace was not written at os._exit(): {type(e).__name__}: {e}")
        elif os.getpid() == pid:  # the script's own thread may be inside an op: leave the trace
            _say("gradtrace: os._exit() on a thread other than the script's: the process ends without its trace")
        real_exit(code)

    os._exit = _exit
    try:
        yield
    finally:
        if os._exit is _exit:
            os._exit = real_exit


def _say(line: str) -> None:
    """Write ``line`` to standard error past Python's buffers (the process ends next)."""
    with contextlib.suppress(BaseException):
        os.write(2, (line + "\n").encode(errors="replace"))


def _run_as_main(path: str):
    """Run the file at ``path`` as ``__main__``, as ``python`` runs a script: ``__file__``
    absolute, ``sys.argv`` left as it is (``runpy.run_path`` would make ``sys.argv[0]``
    absolute too)."""
    if zipfile.is_zipfile(path):  # a zip application: runpy knows its layout
        runpy.run_path(path, run_name="__main__")
        return
    from pkgutil import read_code

    with io.open_code(path) as f:
        code = read_code(f)  # a compiled .pyc, else None
    if code is None:
        with io.open_code(path) as f:
            code = compile(f.read(), path, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    # python gives a script the builtins module itself, where exec would insert its dict
    main.__dict__.update(__file__=path, __cached__=None, __loader__=None, __package__=None, __spec__=None,
                         __builtins__=builtins)
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved
        else:
            sys.modules.pop("__main__", None)


def _exit_code_of(e: BaseException) -> int:
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, Terminated):
        return 128 + signal.SIGTERM
    from .record.watch import StoppedAtNonfinite  # imported already: the script ran traced

    return STOPPED_EXIT if isinstance(e, StoppedAtNonfinite) else 1


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _ours(fs) -> bool:
    return fs.filename.startswith(_HERE) or "runpy" in fs.filename or fs.name == "<traced by gradtrace>"


def _drop_our_frames(te: traceback.TracebackException, seen: set):
    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([fs for fs in te.stack if not _ours(fs)])
    for other in (te.__cause__, te.__context__):
        if other is not None:
            _drop_our_frames(other, seen)


def user_traceback(e: BaseException) -> str:
    """Return the traceback text as ``python SCRIPT`` would show it: without the
    frames of gradtrace and of the runner (runpy)."""
    te = traceback.TracebackException(type(e), e, e.__traceback__)
    _drop_our_frames(te, set())
    return "".join(te.format())


def _print_user_traceback(e: BaseException, script_path: str):
    sys.stderr.write(user_traceback(e))
