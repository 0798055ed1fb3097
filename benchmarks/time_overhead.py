"""What ``--time`` (``gradtrace.trace(time=True)``) adds per op: a tiny op (``y = x + 1``
on 8 elements) traced with values none, untimed against timed, interleaved in one
process, thread CPU time at one torch thread; prints the medians and their difference.

    python benchmarks/time_overhead.py               # 15 rounds of 3,000 ops each
    python benchmarks/time_overhead.py --rounds 5 --ops 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import gradtrace


def per_op_us(ops: int, timed: bool) -> float:
    """Thread CPU µs per op of ``ops`` tiny ops traced (``timed``: with ``time=True``)."""
    x = torch.ones(8)
    with gradtrace.trace(values="none", time=timed):
        t0 = time.thread_time()
        for _ in range(ops):
            x + 1
        t = time.thread_time() - t0
    return t / ops * 1e6


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--ops", type=int, default=3000, help="ops a round (default 3,000)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    untimed, timed = [], []
    for _ in range(a.rounds):
        untimed.append(per_op_us(a.ops, False))
        timed.append(per_op_us(a.ops, True))
    u, t = statistics.median(untimed), statistics.median(timed)
    print(json.dumps({"untimed_us": round(u, 2), "timed_us": round(t, 2), "added_us": round(t - u, 2)}))


if __name__ == "__main__":
    main()
