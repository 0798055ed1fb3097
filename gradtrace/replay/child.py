"""One replay run: ``python -m gradtrace.replay.child --target T --out DIR ... --script SCRIPT ARGS``.

Sets up the target (device mapping, seeded random numbers, float64 for ``cpu64``),
runs the script traced, and writes the trace and ``run.json`` (status, exit code,
and the user's line where it raised) into DIR, or DIR/rank<k> under a launcher.
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from ..analyze.causes import apply_switches
from ..graph.folders import rank_folder
from ..outputs import write_run_outputs
from ..runner import run_script
from ..views.dot import DEFAULT_DEPTH
from .device_map import setup_child
from .processes import RUN_FILE
from .targets import parse_target

__all__ = ["main"]


def _user_frame(exc, script_path):
    """The deepest traceback frame in the script (else in any non-library file)."""
    tb = exc.__traceback__ if exc is not None else None
    frames = traceback.extract_tb(tb) if tb is not None else []
    script_path = os.path.abspath(script_path)
    mine = [f for f in frames if os.path.abspath(f.filename) == script_path]
    if not mine:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the gradtrace package
        mine = [f for f in frames if not f.filename.startswith(here) and "site-packages" not in f.filename
                and "/lib/python" not in f.filename]
    if not mine:
        return None
    f = mine[-1]
    return {"file": f.filename, "line": f.lineno, "code": (f.line or "").strip() or None}


def main(argv=None):
    """Run one target of a replay as this process's command line asks; return the
    script's exit code (2 for a command line without ``--script``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--script" not in argv:
        print("usage: python -m gradtrace.replay.child OPTIONS --script SCRIPT [ARGS]", file=sys.stderr)
        return 2
    i = argv.index("--script")  # everything after the script is the script's
    opts, rest = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="gradtrace.replay.child")
    p.add_argument("--target", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--values", default="stats")
    p.add_argument("--rng", default="seeded")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--switch-off", action="append", default=[], metavar="CAUSE",
                   help="turn a cause of divergence off before the script runs "
                        "(gradtrace.analyze.causes.SWITCHES)")
    p.add_argument("--name", default=None, help="the target as the report names it (cpu-2)")
    p.add_argument("--backend", default=None, help="the process-group backend ranks use (nccl, gloo)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs the ranks are placed on (0: the script's own)")
    a = p.parse_args(opts)
    script, sargv = rest[0], rest[1:]

    target = parse_target(a.target)
    # a script may ask which target it runs on, named as the report names it (cpu-2)
    os.environ["GRADTRACE_TARGET"] = a.name or target.name
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    out = rank_folder(a.out, rank) if target.kind == "ddp" else Path(a.out)

    state = {"running": True}

    def on_term(signum, frame):  # the launcher stopping a rank, or the replay's timeout
        if state["running"]:
            state["running"] = False
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)

    if target.kind == "ddp" and a.gpus:
        target.device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % a.gpus}"
        torch.cuda.set_device(target.device)  # NCCL uses the current device
    mode = setup_child(target, a.rng, a.seed, a.timeout, backend=a.backend)
    switched = apply_switches(a.switch_off)
    t0 = time.time()
    if mode is not None:
        with mode:
            result = run_script(script, sargv, values=a.values, target=target.name, rank=rank,
                                world_size=world)
    else:
        result = run_script(script, sargv, values=a.values, target=target.name, rank=rank, world_size=world)
    state["running"] = False
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish writing what was recorded
    ended = time.time()
    tr = result.trace
    tr.meta["replay"] = {"target": target.name, "kind": target.kind, "device": target.device,
                         "rng": a.rng, "seed": a.seed if a.rng == "seeded" else None}
    if switched:
        tr.meta["replay"]["switched_off"] = switched
    if a.backend:
        tr.meta["replay"]["backend"] = a.backend
    status = tr.meta.get("status")
    if result.exit_code != 0 and status == "ok":
        status = "error"
    err = None
    if status != "ok":
        e = tr.meta.get("error") or {}
        err = {"type": e.get("type") or "SystemExit", "message": e.get("message") or f"exit code {result.exit_code}"}
        err.update(_user_frame(result.exception, script) or {"file": None, "line": None, "code": None})
        if err["file"] is None and e.get("traceback"):
            err.update(_frame_from_text(e["traceback"], script) or {})
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_run_outputs(tr, out, depth=DEFAULT_DEPTH, svg=False)
    except Exception as e:  # keep run.json even when the trace cannot be written
        print(f"gradtrace: trace not written: {type(e).__name__}: {e}", file=sys.stderr)
    info = {"target": target.name, "rank": rank, "world_size": world, "status": status,
            "exit_code": result.exit_code, "error": err, "started_at": t0, "ended_at": ended,
            "seconds": round(ended - t0, 3)}
    (out / RUN_FILE).write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    return result.exit_code


def _frame_from_text(text, script):
    """Fallback: the last ``File "<script>", line N`` of a formatted traceback."""
    found = None
    for m in re.finditer(r'File "([^"]+)", line (\d+)', text):
        if os.path.abspath(m.group(1)) == os.path.abspath(script):
            found = m
    if found is None:
        return None
    line = int(found.group(2))
    return {"file": found.group(1), "line": line, "code": linecache.getline(found.group(1), line).strip() or None}


if __name__ == "__main__":
    sys.exit(main())
