"""Whether a run kept with ``--last N`` has the step rows of the same run traced whole.

    python benchmarks/ring_rows.py                      # tests/corpus, --last 2
    python benchmarks/ring_rows.py --last 1 --only mlp_adam gan_step

Each program runs under ``gradtrace run`` twice, whole and with ``--last N``, each in its
own process in the program's folder (``MALLOC_PERTURB_`` set, so that ``torch.empty``
returns the same bytes in both); the rows (``gradtrace show DIR --steps --json``'s) must
be equal field for field. Prints a line per program and exits 1 when any differ (the
first differing row of each is shown). A program whose op order varies between two whole
runs (``cnn_dataloader_workers``: its DataLoader workers' batches arrive at different
points) is shown, not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIES = {"cnn_dataloader_workers"}


def rows_of(program: Path, out: Path, last: int | None) -> list | str:
    """The step rows of ``program`` run under ``gradtrace run`` (with ``--last``), or why none."""
    cmd = [sys.executable, "-m", "gradtrace", "run", "--no-svg", "-o", str(out)]
    cmd += ["--last", str(last)] if last else []
    env = {**os.environ, "MALLOC_PERTURB_": "165", "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd + [program.name], cwd=program.parent, env=env, capture_output=True, timeout=1800)
    if not (out / "trace.json").is_file():
        return "no trace written"
    sys.path.insert(0, str(ROOT))
    from gradtrace.trace import load_steps

    return json.loads(json.dumps(load_steps(out)[0], default=str))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--last", type=int, default=2, help="steps the ring keeps (default 2)")
    ap.add_argument("--folder", default="tests/corpus", help="the programs' folder (default tests/corpus)")
    ap.add_argument("--only", nargs="*", default=[], help="program stems to run")
    args = ap.parse_args(argv)
    differ = 0
    for program in sorted((ROOT / args.folder).glob("*.py")):
        if program.stem.startswith("_") or (args.only and program.stem not in args.only):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            whole = rows_of(program, Path(tmp) / "whole", None)
            ring = rows_of(program, Path(tmp) / "ring", args.last)
        if whole == ring:
            print(f"same    {program.stem} ({len(whole)} rows)" if isinstance(whole, list) else f"same    {program.stem}")
            continue
        at = next((i for i, (a, b) in enumerate(zip(whole, ring)) if a != b), None) \
            if isinstance(whole, list) and isinstance(ring, list) else None
        shown = f"row {at}: {whole[at]} vs {ring[at]}" if at is not None else f"{whole!s:.200} vs {ring!s:.200}"
        print(f"{'varies' if program.stem in VARIES else 'DIFFER'}  {program.stem}  {shown}")
        differ += program.stem not in VARIES
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
