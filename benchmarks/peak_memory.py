"""Peak memory of one backward call, untraced and traced: ``python
benchmarks/peak_memory.py MODE [MIB]`` prints one JSON line.

A stack of ``nn.Linear`` layers holding MIB MiB of weights runs forward and
backward once in a fresh process. The figure is how far the process's peak
resident memory rose above its resident memory just before ``backward()``: the
gradients themselves (MIB) plus whatever the backward pass kept around. A
recorder that holds an arriving gradient makes AccumulateGrad copy it instead
of stealing it, and the peak grows by the size of the parameters.
"""

from __future__ import annotations

import json
import resource
import sys

import torch

import gradtrace


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main(mode: str, mib: int) -> dict:
    torch.manual_seed(0)
    width = 1024
    layers = max(1, mib * 2**20 // (width * width * 4))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])
    x = torch.randn(4, width)
    ctx = gradtrace.trace(values=mode) if mode != "untraced" else None
    if ctx is not None:
        ctx.__enter__()
    loss = model(x).square().sum()
    before = rss_mib()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if ctx is not None:
        ctx.__exit__(None, None, None)
    return {"mode": mode, "weights_mib": layers * width * width * 4 / 2**20,
            "backward_peak_rise_mib": round(max(peak - before, 0.0), 1),
            "peak_was_before_backward": peak <= peak_before}


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "untraced"
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    print(json.dumps(main(mode, mib)))
