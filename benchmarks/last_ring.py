"""What ``--last N`` (the flight recorder) holds as a run grows: the peak memory of a
training loop traced with ``gradtrace.trace(last=2)`` for 50 steps and for 5,000, each
in a process of its own, and the time per step against the same loop untraced and
traced whole (no ring) for the long run's length.

    python benchmarks/last_ring.py                    # 50 and 5,000 steps, --last 2
    python benchmarks/last_ring.py --long 2000 --last 4

The loop is a small MLP step (forward, backward, SGD step) on 64 rows. Each process
reports its peak resident memory (``ru_maxrss``), that peak less its resident memory
once torch and gradtrace were imported and the model built (what the run added), and
its seconds per step (trace end included). Prints one JSON line: the runs, the ratios
long/short of the peaks, and the long run's time against untraced and against whole.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def child(steps: int, last) -> dict:
    """Run the loop for ``steps`` steps, traced with ``last`` (``"whole"``: no ring;
    None: untraced); return its figures."""
    import torch

    import gradtrace

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 32), torch.randn(64, 1)
    base = _rss_mib()
    t0 = time.perf_counter()
    if last is None:
        _loop(model, opt, x, y, steps)
        rows = steps
    else:
        with gradtrace.trace(last=None if last == "whole" else last) as tr:
            _loop(model, opt, x, y, steps)
        rows = len(gradtrace.analyze.step_rows.step_rows(tr.graph))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steps": steps, "rows": rows, "peak_mib": round(peak, 1), "added_mib": round(peak - base, 1),
            "us_per_step": round(seconds / steps * 1e6, 1)}


def _loop(model, opt, x, y, steps):
    import torch

    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _spawn(steps: int, last: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(steps)] + ([] if last is None else ["--last", str(last)])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", type=int, default=50, help="steps of the short run (default 50)")
    ap.add_argument("--long", type=int, default=5000, help="steps of the long run (default 5000)")
    ap.add_argument("--last", type=int, default=2, help="steps the ring keeps (default 2)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--untraced", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, None if args.untraced else "whole" if args.whole else args.last)))
        return
    short, long = _spawn(args.short, args.last), _spawn(args.long, args.last)
    untraced, whole = (json.loads(subprocess.run([sys.executable, __file__, "--child", str(args.long), flag],
                                                 check=True, capture_output=True, text=True).stdout)
                       for flag in ("--untraced", "--whole"))
    print(json.dumps({"last": args.last, "short": short, "long": long, "untraced_long": untraced,
                      "whole_long": whole, "peak_ratio": round(long["peak_mib"] / short["peak_mib"], 3),
                      "added_ratio": round(long["added_mib"] / max(short["added_mib"], 0.1), 3),
                      "time_vs_untraced": round(long["us_per_step"] / untraced["us_per_step"], 2),
                      "time_vs_whole": round(long["us_per_step"] / whole["us_per_step"], 2)}))


if __name__ == "__main__":
    main()
