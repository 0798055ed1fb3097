"""Whether two gradtrace trees write the same traces of the corpus programs.

    python benchmarks/same_traces.py --base ../other-checkout          # values none and stats
    python benchmarks/same_traces.py --base ../other-checkout --values all --only mlp_adam

A change that makes recording cheaper must not change what is recorded. Each program of
``tests/real_programs``, ``tests/corpus``, ``tests/views_corpus`` and ``examples`` runs
under ``gradtrace run`` once with this tree's package and once with ``--base``'s (each
through ``PYTHONPATH``, in its own process, in the program's folder); the two
``trace.json`` files must be equal as JSON, leaving out only what differs from run to run
of one tree: the random seed an unseeded program draws (``math.seed``, ``math_start.seed``)
and, where the two runs drew different seeds, the statistics; the figures at the head of
trace.json (``summary``, ``steps``) are compared when both trees write them. ``MALLOC_PERTURB_`` makes
what ``torch.empty`` returns the same in every run. Prints a line per program and
exits 1 when any differ (the first difference of each is named).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("tests/real_programs", "tests/corpus", "tests/views_corpus", "examples")
SKIP = {"survey", "_harness", "data_parallel"}  # not programs, or a torchrun program
# Programs whose trace differs between two runs of one tree: a difference is shown, not counted.
HEAD = ("summary", "steps")  # the head's figures (gradtrace.graph.head), derived from the graph
VARIES = {"cnn_dataloader_workers": "the size recorded for a worker's shared-memory batch storage varies"}


def programs(only: list) -> list:
    """The corpus programs to compare (paths), those named in ``only`` when given."""
    found = [p for folder in FOLDERS for p in sorted((ROOT / folder).glob("*.py")) if p.stem not in SKIP]
    return [p for p in found if not only or p.stem in only]


def trace_of(tree: Path, program: Path, values: str, out: Path) -> dict | str:
    """The parsed trace.json of ``program`` run under ``tree``'s gradtrace, or why none."""
    # glibc fills each allocation with one byte: what torch.empty returns is the same every run.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0", "MALLOC_PERTURB_": "165"}
    proc = subprocess.run([sys.executable, "-m", "gradtrace", "run", "--values", values, "-o", str(out),
                           program.name], cwd=program.parent, env=env, capture_output=True, text=True,
                          timeout=900)
    path = out / "trace.json"
    if not path.exists():
        return f"no trace (exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]})"
    data = json.loads(path.read_text(encoding="utf-8"))
    seed = (data["graph"].get("math_start") or {}).get("seed")
    for key in ("math", "math_start"):
        if isinstance(data["graph"].get(key), dict):
            data["graph"][key].pop("seed", None)
    data["graph"]["seed"] = seed
    return data


def first_difference(a, b, where="") -> str | None:
    """Where JSON values ``a`` and ``b`` first differ, or None when they are equal."""
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{where}.{k}: only in {'base' if k in b else 'this tree'}"
            d = first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None if len(a) == len(b) else f"{where}: {len(a)} vs {len(b)} items"
    return None if a == b else f"{where}: {str(a)[:80]!r} vs {str(b)[:80]!r}"


def compare(program: Path, values: str, base: Path, tmp: Path) -> tuple:
    """``(program, values, None or the first difference)``."""
    mine = trace_of(ROOT, program, values, tmp / "this" / values / program.stem)
    theirs = trace_of(base, program, values, tmp / "base" / values / program.stem)
    if isinstance(mine, str) or isinstance(theirs, str):
        return program, values, f"this tree: {mine if isinstance(mine, str) else 'ok'}; base: " \
                                f"{theirs if isinstance(theirs, str) else 'ok'}"
    for key in HEAD:  # figures made from the graph: compared where both trees write them
        if (key in mine["graph"]) != (key in theirs["graph"]):
            mine["graph"].pop(key, None)
            theirs["graph"].pop(key, None)
    if mine["graph"].pop("seed") != theirs["graph"].pop("seed"):
        # An unseeded program: the values differ from run to run, the rest must not.
        for data in (mine, theirs):
            _drop_statistics(data)
    return program, values, first_difference(mine, theirs)


def _drop_statistics(data: dict) -> None:
    for key in HEAD:  # they hold values (losses, norms) too
        data["graph"].pop(key, None)
    for item in data["nodes"] + data["edges"]:
        for key in ("stats", "prior", "local", "reduced", "gradient_value"):
            item.pop(key, None)
        if isinstance(item.get("received"), dict):
            item["received"].pop("stats", None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, type=Path, help="the other tree (a checkout of gradtrace)")
    ap.add_argument("--values", default="none,stats", help="values modes, comma-separated (default none,stats)")
    ap.add_argument("--only", nargs="*", default=[], help="program names (file stems) to compare")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    base = args.base.resolve()
    if not (base / "gradtrace" / "__init__.py").is_file():
        ap.error(f"{base}: not a gradtrace tree (no gradtrace/__init__.py)")
    cases = [(p, v) for p in programs(args.only) for v in args.values.split(",")]
    bad = 0
    with tempfile.TemporaryDirectory(prefix="gradtrace-same-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        for program, values, diff in pool.map(lambda c: compare(c[0], c[1], base, Path(tmp)), cases):
            varies = VARIES.get(program.stem)
            bad += diff is not None and not varies
            word = "same" if diff is None else "varies" if varies else "DIFFERENT"
            print(f"{word:9} {values:5} {program.relative_to(ROOT)}" + ("" if diff is None else f"  {diff}")
                  + (f" ({varies} in any one tree)" if diff and varies else ""), flush=True)
    print(f"{len(cases) - bad} of {len(cases)} traces the same (or varying in any one tree)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
