"""How long ``gradtrace check`` takes on the trace of a long training loop: a seeded
2,000-step MLP (Linear 4-8, ReLU, Linear 8-1, SGD, 16 rows), traced once with
``gradtrace run``, then checked ``--reps`` times, each in a process of its own.

    python benchmarks/check_long.py                 # 2,000 steps, 3 checks
    python benchmarks/check_long.py --steps 500 --reps 1

Prints one JSON line: the steps, the seconds of each check and their median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = """import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(16, 4), torch.randn(16, 1)
for step in range({steps}):
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="steps of the loop (default 2,000)")
    ap.add_argument("--reps", type=int, default=3, help="checks to time (default 3)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        script, out = Path(d) / "loop.py", Path(d) / "trace"
        script.write_text(SCRIPT.format(steps=a.steps))
        gradtrace = [sys.executable, "-m", "gradtrace"]
        subprocess.run([*gradtrace, "run", "--no-svg", "-o", str(out), str(script)], check=True,
                       capture_output=True)
        seconds = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            subprocess.run([*gradtrace, "check", str(out)], capture_output=True)
            seconds.append(round(time.perf_counter() - t0, 2))
    print(json.dumps({"steps": a.steps, "check_s": seconds, "median_s": statistics.median(seconds)}))


if __name__ == "__main__":
    main()
