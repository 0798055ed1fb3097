"""Where `values="none"` tracing time goes on the benchmark models: the step untraced,
traced, and traced with one recorder part switched off at a time.

    python benchmarks/ablate.py [resnet18 gpt] [--reps 9]

The switched-off runs record less than a trace must; they only measure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402

import gradtrace  # noqa: E402
from gradtrace.record.grad_hooks import GradHooks  # noqa: E402
from gradtrace.record.saved import SavedTensors  # noqa: E402


def _median_ratio(f, base, reps):
    """Median time of ``base`` (ms) and the median of ``f``'s time over it, the two
    run alternately so that a busy moment slows both."""
    tb, tf = [], []
    for _ in range(reps):
        for g, times in ((base, tb), (f, tf)):
            t0 = time.perf_counter()
            g()
            times.append(time.perf_counter() - t0)
    mb, mf = sorted(tb)[reps // 2], sorted(tf)[reps // 2]
    return mb * 1000, mf / mb


def ablate(name: str, reps: int) -> dict:
    """Return the untraced time (ms) and the ratios of each variant to it."""
    _, step = models.make(name)
    for _ in range(3):
        step()

    def traced():
        with gradtrace.trace(values="none"):
            step()

    base, ratio = _median_ratio(traced, step, reps)
    out = {"untraced_ms": base, "none": ratio}
    switches = {
        "without saved-tensor reads": (SavedTensors, "read", lambda self, readable: None),
        "without backward pre-hooks": (GradHooks, "install", lambda self, roots, bw, seen: ([], {})),
    }
    for label, (cls, attr, stub) in switches.items():
        orig = getattr(cls, attr)
        setattr(cls, attr, stub)
        try:
            out[label] = _median_ratio(traced, step, reps)[1]
        finally:
            setattr(cls, attr, orig)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", default=["resnet18", "gpt"])
    p.add_argument("--reps", type=int, default=9)
    args = p.parse_args()
    print("| | untraced | none | without saved-tensor reads | without backward pre-hooks |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        r = ablate(name, args.reps)
        print(f"| {name} | {r['untraced_ms']:.1f} ms | {r['none']:.2f}x | "
              f"{r['without saved-tensor reads']:.2f}x | {r['without backward pre-hooks']:.2f}x |")


if __name__ == "__main__":
    main()
