"""Whether the statistics of a CPU tensor depend on torch's thread count, and what
summing in a fixed order would cost.

    python benchmarks/stats_threads.py                 # 20 vectors per size, timings
    python benchmarks/stats_threads.py --vectors 3 --sizes 2048,40000 --no-timing
    python benchmarks/stats_threads.py --bits   # seeded sums as hex: compare torch releases

For each size, random float64 vectors are summed (``sum``) and squared-and-summed
(``torch.dot``, what ``record/stats.py`` takes for the norm) once at
``torch.set_num_threads(1)`` and once at 2: how many of the vectors gave other bits. Then
``stats.compute`` of a float32 tensor against the same statistics summed in a fixed order
(chunks of 32,768 elements, under torch's parallel grain, and ``mul`` + ``sum`` in place
of ``dot``), the fastest of 7 runs at 2 threads. ``--bits`` prints instead the bits of one seeded vector's ``sum``
and ``dot`` per size at 2 threads, to compare under two torch releases. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import timeit

import torch

from gradtrace.record import stats

_GRAIN = 32768


def differing(n: int, vectors: int, seed: int = 0) -> dict:
    """Of ``vectors`` random float64 vectors of ``n`` elements, how many summed (``sum``)
    and squared-and-summed (``dot``) to other bits at 1 thread than at 2."""
    g = torch.Generator().manual_seed(seed)
    was = torch.get_num_threads()
    found = {"sum": 0, "dot": 0}
    try:
        for _ in range(vectors):
            x = torch.randn(n, dtype=torch.float64, generator=g) * 1e3 + 0.1
            got = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                got.append((x.sum().item(), torch.dot(x, x).item()))
            found["sum"] += got[0][0] != got[1][0]
            found["dot"] += got[0][1] != got[1][1]
    finally:
        torch.set_num_threads(was)
    return found


def fixed_order(t: torch.Tensor) -> tuple:
    """Min, max, mean and norm of ``t`` summed in an order that no thread count changes."""
    flat = t.reshape(-1)
    parts = []
    for c in flat.split(_GRAIN):
        d = c.to(torch.float64)
        parts.append(d.sum())
        parts.append(torch.mul(d, d).sum())
    s, q = torch.stack(parts).view(-1, 2).sum(0).tolist()
    mn, mx = torch.aminmax(flat)
    return mn.item(), mx.item(), s / flat.numel(), math.sqrt(q)


def timing(n: int) -> dict:
    """Microseconds per call of ``stats.compute`` and of :func:`fixed_order` on a float32
    tensor of ``n`` elements (fastest of 7 runs)."""
    t = torch.randn(n)
    k = max(5, 1_000_000 // n)
    today = min(timeit.repeat(lambda: stats.compute(t), number=k, repeat=7)) / k * 1e6
    fixed = min(timeit.repeat(lambda: fixed_order(t), number=k, repeat=7)) / k * 1e6
    return {"stats_us": round(today, 1), "fixed_order_us": round(fixed, 1), "ratio": round(fixed / today, 2)}


def bits(n: int, seed: int = 0) -> list:
    """``[sum, dot]`` of one seeded float64 vector of ``n`` elements at 2 threads, as hex."""
    was = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 1e3 + 0.1
        return [x.sum().item().hex(), torch.dot(x, x).item().hex()]
    finally:
        torch.set_num_threads(was)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vectors", type=int, default=20)
    ap.add_argument("--sizes", default="2048,4096,32768,40000,131072,1048576")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--bits", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.bits:
        print(json.dumps({"torch": torch.__version__, "bits": {n: bits(n) for n in sizes}}))
        return
    out = {"torch": torch.__version__, "vectors": args.vectors,
           "differing_1_vs_2_threads": {n: differing(n, args.vectors) for n in sizes}}
    if not args.no_timing:
        torch.set_num_threads(2)
        out["timing_2_threads"] = {n: timing(n) for n in sizes}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
