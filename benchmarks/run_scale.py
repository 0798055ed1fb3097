"""``gradtrace run`` against ``python`` on one generated script, end to end.

    python benchmarks/run_scale.py              # 200,000 ops, values none, 3 runs each
    python benchmarks/run_scale.py --ops 2000 --reps 1
    python benchmarks/run_scale.py --phases     # the same loop in this process, phase by phase
    python benchmarks/run_scale.py --run-phases # one `gradtrace run`, each phase of the command timed

The script is a loop of two small ops (``y = x + 1; x = y * 0.5`` on 8 elements), the shape
of a long training loop without modules. Each run is its own process; wall time and peak
resident memory (``os.wait4``'s ``ru_maxrss``) are medians over ``--reps``. Prints one JSON
line: ``{"ops", "python_s", "python_mib", "gradtrace_s", "gradtrace_mib", "time_ratio",
"memory_ratio", "exit_codes"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = """import torch
x = torch.ones(8)
for i in range({iterations}):
    y = x + 1
    x = y * 0.5
print(float(x.sum()))
"""


def timed(cmd: list) -> tuple:
    """Run ``cmd`` to its end; return (seconds, peak RSS in MiB, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        sys.stderr.write(err[-2000:])
    return seconds, usage.ru_maxrss / 1024, proc.returncode


def measure(ops: int, reps: int, values: str = "none") -> dict:
    """Return the medians of ``reps`` interleaved runs of python and gradtrace run."""
    tmp = Path(tempfile.mkdtemp(prefix="gradtrace-run-scale-"))
    try:
        script = tmp / "loop.py"
        script.write_text(SCRIPT.format(iterations=ops // 2), encoding="utf-8")
        gradtrace = [sys.executable, "-m", "gradtrace", "run", "--values", values,
                     "-o", str(tmp / "out"), str(script)]
        py, gt, codes = [], [], set()
        for _ in range(reps):
            for cmd, acc in (([sys.executable, str(script)], py), (gradtrace, gt)):
                s, mib, code = timed(cmd)
                acc.append((s, mib))
                codes.add(code)
                shutil.rmtree(tmp / "out", ignore_errors=True)
        med = {name: (statistics.median(s for s, _ in acc), statistics.median(m for _, m in acc))
               for name, acc in (("python", py), ("gradtrace", gt))}
        return {"ops": ops, "values": values, "reps": reps,
                "python_s": med["python"][0], "python_mib": med["python"][1],
                "gradtrace_s": med["gradtrace"][0], "gradtrace_mib": med["gradtrace"][1],
                "time_ratio": med["gradtrace"][0] / med["python"][0],
                "memory_ratio": med["gradtrace"][1] / med["python"][1],
                "exit_codes": sorted(codes)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def phases(ops: int, values: str = "none") -> dict:
    """Time the same loop in this process, phase by phase: recording, building the graph,
    ``save`` (no DOT), ``load`` (validated), ``check``; with the peak RSS (MiB) after each."""
    import resource

    import torch

    import gradtrace
    from gradtrace.analyze.checks import check_graph

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    out, tmp = {"ops": ops, "values": values}, Path(tempfile.mkdtemp(prefix="gradtrace-phases-"))
    try:
        t0 = time.perf_counter()
        with gradtrace.trace(values) as tr:
            x = torch.ones(8)
            for _ in range(ops // 2):
                y = x + 1
                x = y * 0.5
        t1 = time.perf_counter()
        G = tr.graph
        t2 = time.perf_counter()
        out.update(record_s=t1 - t0, build_s=t2 - t1, peak_after_build_mib=peak())
        tr.save(tmp / "t", dot=False)
        t3 = time.perf_counter()
        back = gradtrace.load(tmp / "t").graph
        t4 = time.perf_counter()
        check_graph(back)
        t5 = time.perf_counter()
        out.update(save_s=t3 - t2, load_s=t4 - t3, check_s=t5 - t4, peak_mib=peak(), nodes=G.number_of_nodes())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


_RUN_PHASES = r"""
import json, resource, sys, time
t_start = time.perf_counter()
import gradtrace.graph.build as build
import gradtrace.outputs as outputs
import gradtrace.runner as runner
times, peaks = {}, {}

def timed(module, name, label):
    f = getattr(module, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            times[label] = times.get(label, 0.0) + time.perf_counter() - t
            peaks[label] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    setattr(module, name, wrapper)

for module, name, label in ((runner, "_run_as_main", "script"), (build, "build_graph", "build"),
                            (outputs, "save", "save"), (outputs, "summarize", "summary"),
                            (outputs, "_write_html", "viewer_size_check"), (outputs, "_too_big_note", "too_big_note"),
                            (outputs, "check_graph", "check")):
    timed(module, name, label)
times["imports"] = time.perf_counter() - t_start
sys.argv = ["gradtrace", "run", "--values", sys.argv[1], "-o", sys.argv[2], sys.argv[3]]
from gradtrace.cli import main
try:
    main()
finally:
    times["until_exit"] = time.perf_counter() - t_start
    sys.stderr.write("PHASES " + json.dumps({"seconds": times, "peak_mib_after": peaks}) + "\n")
"""


def run_phases(ops: int, values: str = "none") -> dict:
    """``gradtrace run`` on the loop script in a fresh process, each phase of the command
    timed (imports, the script, graph build, save, the summary, the viewer's size check,
    the too-big note, the checks) with the peak RSS after it; ``exit_s`` is what the
    process took after the command returned (interpreter exit, freeing the graph)."""
    tmp = Path(tempfile.mkdtemp(prefix="gradtrace-run-phases-"))
    try:
        script = tmp / "loop.py"
        script.write_text(SCRIPT.format(iterations=ops // 2), encoding="utf-8")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _RUN_PHASES, values, str(tmp / "out"), str(script)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("PHASES ")), None)
        if line is None:
            raise RuntimeError(f"gradtrace run failed: {proc.stderr[-2000:]}")
        out = json.loads(line[len("PHASES "):])
        out.update(ops=ops, values=values, wall_s=wall, exit_s=wall - out["seconds"]["until_exit"],
                   exit_code=proc.returncode)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=200_000, help="ops the script runs (default 200,000)")
    p.add_argument("--reps", type=int, default=3, help="runs of each command (median)")
    p.add_argument("--values", default="none", choices=["none", "stats", "all"])
    p.add_argument("--phases", action="store_true", help="time the loop's phases in this process instead")
    p.add_argument("--run-phases", action="store_true",
                   help="time each phase of one `gradtrace run` of the script (a fresh process)")
    args = p.parse_args(argv)
    if args.run_phases:
        print(json.dumps(run_phases(args.ops, args.values)))
    elif args.phases:
        print(json.dumps(phases(args.ops, args.values)))
    else:
        print(json.dumps(measure(args.ops, args.reps, args.values)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
