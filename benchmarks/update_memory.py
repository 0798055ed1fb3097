"""What the update-to-weight ratios cost in memory: the rise of a training loop's peak
resident memory over its resident memory before the loop, untraced, traced, and traced
with ``updates=False``, for an optimizer that updates one parameter at a time and for a
foreach one, each run in a process of its own.

    python benchmarks/update_memory.py            # 64 MiB of weights, 3 steps
    python benchmarks/update_memory.py --mib 256

The model is a stack of bias-free ``nn.Linear(1024, 1024)`` layers holding MIB MiB of
weights, trained on 4 rows (activations are small: the optimizer step is the loop's
peak, the worst case for a copy held during it). One untraced step first creates the
optimizer's state. To hold the update's ``w`` while a step writes ``w'``, the recorder
copies the parameters the step writes: one at a time for a per-parameter optimizer,
all of a foreach op's at once. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

_OPTIMIZERS = ("adamw", "adamw_foreach")
_MODES = ("untraced", "traced", "no_updates")


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(optimizer: str, mode: str, mib: int, steps: int) -> dict:
    """Train, traced as ``mode`` says; return the peak's rise over the memory before."""
    import torch

    import gradtrace

    torch.manual_seed(0)
    torch.set_num_threads(1)
    width = 1024
    layers = max(1, mib * 2**20 // (width * width * 4))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=optimizer == "adamw_foreach")
    x = torch.randn(4, width)

    def step():
        loss = model(x).square().mean()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    step()  # the optimizer's state, and the gradients, exist from here on
    before = _rss_mib()
    if mode == "untraced":
        for _ in range(steps):
            step()
    else:
        with gradtrace.trace(updates=mode == "traced"):
            for _ in range(steps):
                step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"optimizer": optimizer, "mode": mode, "weights_mib": layers * width * width * 4 / 2**20,
            "peak_rise_mib": round(max(peak - before, 0.0), 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=64, help="MiB of weights (default 64)")
    ap.add_argument("--steps", type=int, default=3, help="traced steps (default 3)")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.mib, a.steps)))
        return
    for optimizer in _OPTIMIZERS:
        for mode in _MODES:
            cmd = [sys.executable, __file__, "--child", optimizer, mode, "--mib", str(a.mib), "--steps", str(a.steps)]
            print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
