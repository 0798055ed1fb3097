"""How many Python bytecode instructions the recorder runs: per tiny op (``y = x + 1`` on
8 elements) and per step of the benchmark GPT (forward and backward, the third trace of
the process, so that one-time set-up is left out), values none and stats.

    python benchmarks/opcodes.py                # both, the 12 costliest functions of each
    python benchmarks/opcodes.py --top 30 --only loop

Unlike a timing on a shared machine, the count is the same on every run of one tree:
a change to the per-op path shows its effect exactly, also where timings drown it in
noise. It counts the interpreter's instructions only (what a C call does inside is one
instruction), so it goes with, not in place of, ``bench.py``'s timings.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import torch

import gradtrace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402  (the benchmark's models, beside this file)


def counted(run) -> collections.Counter:
    """Bytecode instructions executed while ``run()`` runs, by (file name, function)."""
    counts: collections.Counter = collections.Counter()

    def on_call(frame, event, arg):
        frame.f_trace_opcodes = True
        return on_opcode

    def on_opcode(frame, event, arg):
        if event == "opcode":
            counts[(os.path.basename(frame.f_code.co_filename), frame.f_code.co_name)] += 1
        return on_opcode

    sys.settrace(on_call)
    try:
        run()
    finally:
        sys.settrace(None)
    return counts


def loop_counts(values: str, ops: int = 200) -> tuple:
    """(instructions per op, counter of all) of ``ops`` tiny ops traced with ``values``."""
    x = torch.ones(8)

    def run(n=ops):
        for _ in range(n):
            x + 1

    with gradtrace.trace(values=values):
        run(5)  # the first sight of the line fills the recorder's caches for it
        c = counted(run)
    c.pop(("opcodes.py", "run"), None)  # the loop itself
    return sum(c.values()) / ops, c


def step_counts(values: str) -> tuple:
    """(instructions per step, counter) of one traced GPT step, after two traced steps."""
    _, step = models.make("gpt")
    for _ in range(2):
        with gradtrace.trace(values=values):
            step()

    def run():
        with gradtrace.trace(values=values):
            step()

    c = counted(run)
    return sum(c.values()), c


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=12, help="costliest functions shown (default 12)")
    ap.add_argument("--only", choices=["loop", "gpt"], default=None)
    ap.add_argument("--json", default=None, help="also write the totals to this JSON file")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    totals = {}
    for what, fn, unit in (("loop", loop_counts, "per op"), ("gpt", step_counts, "per step")):
        if a.only and a.only != what:
            continue
        for values in ("none", "stats"):
            total, c = fn(values)
            totals[f"{what} {values}"] = round(total, 1)
            per = 200 if what == "loop" else 1
            print(f"{what}, values {values}: {total:,.1f} instructions {unit}")
            for (file, func), n in c.most_common(a.top):
                print(f"  {n / per:10,.1f}  {file}:{func}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(totals, f, indent=1)


if __name__ == "__main__":
    main()
