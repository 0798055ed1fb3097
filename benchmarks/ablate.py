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
from gradtrace import recorder as R  # noqa: E402


def _median_ms(f, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return sorted(times)[reps // 2] * 1000


def ablate(name: str, reps: int) -> dict:
    """Return the untraced time (ms) and the ratios of each variant to it."""
    _, step = models.make(name)
    for _ in range(3):
        step()

    def traced():
        with gradtrace.trace(values="none"):
            step()

    base = _median_ms(step, reps)
    out = {"untraced_ms": base, "none": _median_ms(traced, reps) / base}
    switches = {
        "without saved-tensor reads": ("_saved_of", lambda self, fn: []),
        "without backward pre-hooks": ("_hook_graph", lambda self, roots, bw, seen: ([], {})),
    }
    for label, (attr, stub) in switches.items():
        orig = getattr(R.Recorder, attr)
        setattr(R.Recorder, attr, stub)
        try:
            out[label] = _median_ms(traced, reps) / base
        finally:
            setattr(R.Recorder, attr, orig)
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
