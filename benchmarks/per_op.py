"""What tracing adds to a tiny op (``y = x + 1`` on 8 elements) at one torch thread, in
thread CPU time: untraced, under a no-op ``TorchFunctionMode`` (the floor) and traced
with values none and stats, interleaved round by round in one process; prints the
fastest round of each (the one a busy machine disturbed least) and the median.

    python benchmarks/per_op.py                  # 15 rounds of 2,000 ops each
    python benchmarks/per_op.py --rounds 31 --ops 3000

To compare two trees, run it in each alternately (``PYTHONPATH=TREE``): on a shared
machine the fastest rounds move less than ``bench.py``'s medians at two threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench import NoOpMode  # the floor bench.py measures against (its folder is this file's)

import gradtrace


def per_op_us(ops: int, variant: str) -> float:
    """Thread CPU µs per op of ``ops`` tiny ops under ``variant``."""
    x = torch.ones(8)

    def loop():
        t0 = time.thread_time()
        for _ in range(ops):
            y = x + 1  # noqa: F841 (a bound name, as in a program)
        return (time.thread_time() - t0) / ops * 1e6

    if variant == "untraced":
        return loop()
    if variant == "no-op mode":
        with NoOpMode():
            return loop()
    with gradtrace.trace(values=variant):
        return loop()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--ops", type=int, default=2000, help="ops a round (default 2,000)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    variants = ("untraced", "no-op mode", "none", "stats")
    got: dict = {v: [] for v in variants}
    for _ in range(a.rounds):
        for v in variants:
            got[v].append(per_op_us(a.ops, v))
    fast, mid = min(got["untraced"]), statistics.median(got["untraced"])
    out = {v: {"fastest_over_untraced_us": round(min(t) - fast, 2),
               "median_over_untraced_us": round(statistics.median(t) - mid, 2)} for v, t in got.items()}
    out["untraced"]["us_per_op"] = round(fast, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
