"""What ``--steps A:B`` costs outside its window: a training loop's steps after the window
closed, timed against the same loop untraced, interleaved in one process.

    python benchmarks/steps_window.py                 # 2,000 steps after a window of 3, 5 rounds
    python benchmarks/steps_window.py --steps 200 --rounds 3

The loop is a small MLP step (forward, backward, SGD step) on 64 rows, the kind of step
whose Python overhead a tracer would show most. Each round runs the untraced loop and the
loop under ``gradtrace.trace(steps="2:5")`` (steps 2-4 recorded, every later step outside
the window); the figure is the median over rounds of the time per step after the window,
and the ratio of the two. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import gradtrace


def _loop(model, opt, x, y, steps, marks=None):
    for i in range(steps):
        if marks is not None and i == marks:
            t0 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def measure(steps: int, rounds: int) -> dict:
    """Return the medians of ``rounds`` interleaved rounds (seconds per step after the window)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 32), torch.randn(64, 1)
    skip = 10  # steps before timing: the window (2:5) is over by then
    untraced, windowed = [], []
    for _ in range(rounds):
        untraced.append(_loop(model, opt, x, y, skip + steps, skip) / steps)
        with gradtrace.trace(steps="2:5"):
            windowed.append(_loop(model, opt, x, y, skip + steps, skip) / steps)
    u, w = statistics.median(untraced), statistics.median(windowed)
    return {"steps": steps, "rounds": rounds, "untraced_us_per_step": round(u * 1e6, 2),
            "outside_window_us_per_step": round(w * 1e6, 2), "ratio": round(w / u, 4)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="timed steps after the window (default 2000)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.steps, args.rounds)))


if __name__ == "__main__":
    main()
