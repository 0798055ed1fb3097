"""Tracing is faithful on a corpus of realistic programs (tests/corpus/*.py).

Each program runs four times, each in its own process (tests/corpus/_harness.py):
untraced, and under ``gradtrace.trace(values=...)`` for none, stats and all. A traced
run must print the same stdout, raise the same exception (or none), leave every
tensor, module (state, buffers, ``.grad``) and optimizer state in its globals
bit-identical, keep no more of them alive once its globals are dropped, and give a
trace that builds, saves and has the right status.

Tests are one fact each: ``test_traced_run[PROGRAM-MODE-FACT]``. The runs are started
once for all selected programs, two processes at a time (``GRADTRACE_CORPUS_JOBS``).
``GRADTRACE_CORPUS_REPRO=1`` adds a second untraced run per program and checks that
the program is bit-reproducible on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import TESTS

pytestmark = pytest.mark.corpus

ROOT = TESTS.parent
CORPUS = TESTS / "corpus"
HARNESS = CORPUS / "_harness.py"
PROGRAMS = sorted(p.stem for p in CORPUS.glob("*.py") if not p.name.startswith("_"))
TRACED = ("none", "stats", "all")
FACTS = ("finished", "stdout", "stderr", "exception", "digests", "alive", "graph", "save", "status")
RAISES = {"raises_midway": {"type": "ValueError",
                            "message": "expected a batch of shape (N, 7), got (8, 8)"}}
JOBS = int(os.environ.get("GRADTRACE_CORPUS_JOBS", "2"))
REPRO = os.environ.get("GRADTRACE_CORPUS_REPRO") == "1"
TIMEOUT_S = 300


class Runs:
    """Harness runs in subprocesses, JOBS at a time, started in the order tests need them."""

    def __init__(self, folder: Path, order: list[str], corpus: Path = CORPUS):
        self.folder = folder
        self.order = order
        self.corpus = corpus
        self.pool = ThreadPoolExecutor(max_workers=JOBS, thread_name_prefix="corpus")
        self.futures: dict = {}
        self.procs: set = set()
        self.lock = threading.Lock()
        self.closed = False

    def _modes(self):
        return ("untraced", *TRACED, *(("untraced-again",) if REPRO else ()))

    def _submit(self, program: str):
        for mode in self._modes():
            if (program, mode) not in self.futures:
                self.futures[program, mode] = self.pool.submit(self._run, program, mode)

    def get(self, program: str, mode: str) -> dict:
        if (program, mode) not in self.futures:
            for p in [program, *self.order]:  # this one first, then all the others, in order
                self._submit(p)
        return self.futures[program, mode].result()

    def _run(self, program: str, mode: str) -> dict:
        out = self.folder / f"{program}.{mode}.json"
        log = self.folder / f"{program}.{mode}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
        cmd = [sys.executable, str(HARNESS), str(self.corpus / f"{program}.py"),
               mode.replace("-again", ""), str(out)]
        with self.lock:
            if self.closed:
                return {"_error": "not run: the test session ended"}
            with open(log, "wb") as f:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
            self.procs.add(proc)
        try:
            rc = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout"
        finally:
            with self.lock:
                self.procs.discard(proc)
        tail = log.read_text(errors="replace")[-3000:]
        if rc != 0 or not out.exists():
            return {"_error": f"harness exit {rc} after {TIMEOUT_S}s limit; output tail:\n{tail}"}
        result = json.loads(out.read_text())
        result["_log"] = tail
        return result

    def close(self):
        with self.lock:
            self.closed = True
            for proc in self.procs:
                proc.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)


def module_runs(request, tmp_path_factory, corpus: Path):
    """Runs of the programs of ``corpus`` in the order the module's tests ask for them."""
    order = []
    for item in request.session.items:
        spec = getattr(item, "callspec", None)
        if item.module is request.module and spec and spec.params.get("program") not in order:
            order.append(spec.params["program"])
    return Runs(tmp_path_factory.mktemp(corpus.name), order, corpus)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    r = module_runs(request, tmp_path_factory, CORPUS)
    yield r
    r.close()


def _finished(run: dict, program: str, mode: str):
    assert "_error" not in run, f"{program} [{mode}]: the harness did not finish: {run.get('_error')}"


def _short(d, name):
    if name not in d:
        return "<missing>"
    v = d[name]
    if isinstance(v, dict) and "sha256" in v:
        return f"{v['dtype']}{v['shape']} sha256 {v['sha256'][:12]}"
    return repr(v)


def _first_differences(a: dict, b: dict, limit: int = 6, what: str = "untraced vs traced") -> str:
    names = sorted(set(a) | set(b))
    diff = [n for n in names if a.get(n, "<missing>") != b.get(n, "<missing>")]
    shown = [f"{n}: {_short(a, n)} vs {_short(b, n)}" for n in diff[:limit]]
    return f"{len(diff)} of {len(names)} differ ({what}): " + "; ".join(shown)


def _stdout_difference(a: str, b: str) -> str:
    la, lb = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return f"first difference at line {i + 1}: untraced {x!r} traced {y!r}"
    return f"untraced has {len(la)} lines, traced {len(lb)}; first extra: {(la[len(lb):] or lb[len(la):])[0]!r}"


def _cases():
    for program in PROGRAMS:
        yield pytest.param(program, "untraced", "finished", id=f"{program}-untraced-finished")
        for mode in TRACED:
            for fact in FACTS:
                yield pytest.param(program, mode, fact, id=f"{program}-{mode}-{fact}")


@pytest.mark.parametrize(("program", "mode", "fact"), list(_cases()))
def test_traced_run(runs, program, mode, fact):
    check_fact(runs, program, mode, fact)


def check_fact(runs, program, mode, fact):
    """Assert one fact of a traced run of ``program`` against its untraced run."""
    base = runs.get(program, "untraced")
    if mode == "untraced":
        _finished(base, program, mode)
        expected = RAISES.get(program)
        assert base["exception"] == expected, (
            f"{program} [untraced]: exception {base['exception']}, expected {expected}")
        return
    if fact != "finished" and "_error" in base:
        pytest.skip(f"{program}: the untraced run did not finish")
    run = runs.get(program, mode)
    _finished(run, program, mode)
    where = f"{program} [{mode}]"
    if fact == "stdout":
        assert run["stdout"] == base["stdout"], (
            f"{where}: stdout differs from untraced: {_stdout_difference(base['stdout'], run['stdout'])}")
    elif fact == "stderr":  # warnings included: where they point, and how often
        assert run["stderr"] == base["stderr"], (
            f"{where}: stderr differs from untraced: {_stdout_difference(base['stderr'], run['stderr'])}")
    elif fact == "exception":
        assert run["exception"] == base["exception"], (
            f"{where}: exception {run['exception']}, untraced {base['exception']}")
    elif fact == "digests":
        assert run["digests"] == base["digests"], (
            f"{where}: tensors/modules/optimizer state not bit-identical to untraced: "
            f"{_first_differences(base['digests'], run['digests'])}")
    elif fact == "alive":
        extra = sorted(set(run["alive"]) - set(base["alive"]))
        assert not extra, (
            f"{where}: still alive after the program's globals were dropped, but not untraced: {extra} "
            f"(untraced alive: {base['alive']})")
    elif fact == "graph":
        g = run["trace"]["graph"]
        assert g["ok"], f"{where}: tr.graph did not build: {g.get('error')}\n{g.get('traceback')}"
    elif fact == "save":
        s = run["trace"]["save"]
        assert s and s["ok"], (
            f"{where}: tr.save or gradtrace.load failed: {(s or {}).get('error')}\n{(s or {}).get('traceback')}")
        assert s["same_nodes"], f"{where}: the loaded trace has {s['loaded_nodes']} nodes, tr.graph another count"
        assert s["same_summary"], f"{where}: the summary or step rows at the head of trace.json are not the loaded trace's"
    elif fact == "status":
        expected = "error" if base["exception"] else "ok"
        t = run["trace"]
        assert t["status"] == expected, (
            f"{where}: tr.meta['status'] is {t['status']!r}, expected {expected!r} (error: {t['error']})")
        if base["exception"]:
            assert t["error"] == base["exception"], (
                f"{where}: tr.meta['error'] is {t['error']}, the program raised {base['exception']}")


@pytest.mark.skipif(not REPRO, reason="set GRADTRACE_CORPUS_REPRO=1 to check run-to-run reproducibility")
@pytest.mark.parametrize("program", PROGRAMS)
def test_untraced_run_is_reproducible(runs, program):
    a, b = runs.get(program, "untraced"), runs.get(program, "untraced-again")
    _finished(a, program, "untraced")
    _finished(b, program, "untraced-again")
    assert a["stdout"] == b["stdout"], f"{program}: stdout differs between two untraced runs"
    assert a["digests"] == b["digests"], (
        f"{program}: two untraced runs differ: {_first_differences(a['digests'], b['digests'], what='run 1 vs run 2')}")
    assert a["alive"] == b["alive"], f"{program}: alive differs between two untraced runs"
