"""Running a replay target: one process (``python -m gradtrace.replay.child``), or N
ranks under torch.distributed's own launcher (``python -m torch.distributed.run``) on
a free port of 127.0.0.1, each writing its trace and ``run.json``; and reading back
what they wrote, and which rank's failure came first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..analyze.diff import diff_graphs
from ..graph.folders import rank_folder
from ..graph.io import TRACE_FILE
from ..trace import load
from .targets import Target, ddp_placement

__all__ = ["DEFAULT_TIMEOUT", "RUN_FILE", "RunResult", "diff_runs", "failure_text", "free_port", "load_graphs",
           "root_failure", "run_target"]

DEFAULT_TIMEOUT = 300.0
RUN_FILE = "run.json"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunResult:
    """What one target's run left: its folder, each rank's ``run.json``, how it ended."""

    target: Target
    folder: Path
    ranks: list = field(default_factory=list)  # per rank: the run.json dict (or a stand-in)
    returncode: int | None = 0
    timed_out: bool = False
    seconds: float = 0.0
    log: str = ""
    placement: dict | None = None  # ddp: where the ranks ran (ddp_placement)

    @property
    def failed(self):
        return self.timed_out or any(r.get("status") != "ok" for r in self.ranks)


def _child_cmd(target: Target, out: Path, script, argv, values, rng, seed, timeout, switches=(),
               placement=None):
    extra = [x for s in switches for x in ("--switch-off", s)]
    if placement is not None:
        extra += ["--backend", placement["backend"], "--gpus", str(placement["gpus"])]
    return ["-m", "gradtrace.replay.child", "--target", target.name, "--name", target.folder, "--out", str(out),
            "--values", values, "--rng", rng, "--seed", str(seed), "--timeout", str(timeout),
            *extra, "--script", str(script), *argv]


def _env():
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the child imports this gradtrace, not another one
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_proc(cmd, timeout, log_path: Path):
    """Run ``cmd`` in its own session, output to ``log_path``; on timeout send SIGTERM
    to the whole group (ranks write their traces), then SIGKILL."""
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        timed_out = False
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(p, signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _kill_group(p, signal.SIGKILL)
                p.wait()
    return p.returncode, timed_out, time.time() - t0


def _kill_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_target(target: Target, out: Path, script, argv, values="stats", rng="seeded", seed=0,
               timeout=DEFAULT_TIMEOUT, switches=(), folder=None) -> RunResult:
    """Run ``script`` once on ``target`` (N ranks for ``ddp:N``), traced, into
    ``out/<target folder>`` (or ``out/<folder>``), with the causes named in
    ``switches`` turned off (``gradtrace.analyze.causes``); return its :class:`RunResult`."""
    folder = out / (folder or target.folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    placement = ddp_placement(target, _gpu_count()) if target.kind == "ddp" else None
    child = _child_cmd(target, folder, script, argv, values, rng, seed, timeout, switches, placement)
    if target.kind == "ddp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc-per-node", str(target.world_size), "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "--max-restarts", "0", "--monitor-interval", "0.2",
               *child]
    else:
        cmd = [sys.executable, *child]
    log_path = folder / "output.log"
    rc, timed_out, secs = _run_proc(cmd, timeout, log_path)
    res = RunResult(target, folder, returncode=rc, timed_out=timed_out, seconds=secs, placement=placement)
    res.log = log_path.read_text(encoding="utf-8", errors="replace")
    n = target.world_size if target.kind == "ddp" else 1
    for k in range(n):
        rdir = rank_folder(folder, k) if target.kind == "ddp" else folder
        info = _read_run(rdir)
        if info is None:
            info = {"target": target.name, "rank": k, "status": "missing", "exit_code": None,
                    "error": {"type": "Timeout" if timed_out else "NoTrace",
                              "message": ("did not finish within the timeout" if timed_out
                                          else "the process ended without writing a trace"),
                              "file": None, "line": None, "code": None},
                    "folder": str(rdir), "trace": False}
        info.setdefault("folder", str(rdir))
        res.ranks.append(info)
    return res


def _read_run(folder: Path):
    p = folder / RUN_FILE
    if not p.exists():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except Exception:
        return None
    d["trace"] = (folder / TRACE_FILE).exists()
    return d


_COLLATERAL = ("connection closed", "connection reset", "broken pipe", "sigterm", "terminated",
               "timed out", "timeout")


def root_failure(run: RunResult):
    """Return the ``run.json`` dict of the rank whose failure came first (an error of its
    own rather than one caused by a peer going away: gloo's closed connection, the
    launcher's SIGTERM), or None when every rank ended well."""
    bad = [r for r in run.ranks if r.get("status") != "ok"]
    if not bad:
        return None

    def collateral(r):
        e = r.get("error") or {}
        text = f"{e.get('type')} {e.get('message')}".lower()
        return r.get("status") == "missing" or any(c in text for c in _COLLATERAL)

    bad.sort(key=lambda r: (collateral(r), r.get("ended_at") or float("inf")))
    return bad[0]


def failure_text(run: RunResult, r: dict) -> str:
    """Return one line saying where rank ``r`` of ``run`` raised what."""
    e = r.get("error") or {}
    # the folder name: two runs of one target (cpu, cpu-2) are told apart
    who = f"{run.target.folder} rank {r.get('rank')}" if run.target.kind == "ddp" else run.target.folder
    where = ""
    if e.get("file"):
        where = f" at {e['file']}:{e.get('line')}" + (f" `{e['code']}`" if e.get("code") else "")
    msg = (e.get("message") or "").strip().splitlines()
    return f"{who} raised {e.get('type')}: {msg[0] if msg else ''}{where}"


def _gpu_count() -> int:
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def load_graphs(run: RunResult) -> list:
    """Return, per rank of ``run``, ``(graph, values, run.json dict)``; graph None where
    no trace was written."""
    graphs = []
    for r in run.ranks:
        if r.get("trace"):
            tr = load(r["folder"])
            graphs.append((tr.graph, tr.values, r))
        else:
            graphs.append((None, {}, r))
    return graphs


def diff_runs(base_runs, runs, kind, names, rtol=None, atol=None) -> dict:
    """Return the diff (:func:`~gradtrace.analyze.diff.diff_graphs`) of two runs' first
    ranks (what :func:`load_graphs` gives), with every rank of ``runs`` for a ``ddp``
    ``kind``."""
    (ga, va, _), (gb, vb, _) = base_runs[0], runs[0]
    ranks = [(g, v) for g, v, _ in runs if g is not None] if kind == "ddp" else None
    return diff_graphs(ga, gb, rtol=rtol, atol=atol, values_a=va, values_b=vb, ranks=ranks, names=names)
