"""gradtrace's benchmark: what tracing costs, measured side by side in one process.

    python benchmarks/bench.py                 # everything (about 10 minutes on 2 cores)
    python benchmarks/bench.py --tiny          # the smoke configuration (seconds)
    python benchmarks/bench.py --sections loop,models --reps 9
    python benchmarks/bench.py --max-ops 100000 --json out.json --markdown out.md
    python benchmarks/bench.py --device cuda   # the GPU table (a few minutes on an H100)

Sections:

loop    a loop of small ops (``y = x + 1`` on an 8-element tensor): µs per op untraced,
        under a no-op ``TorchFunctionMode`` (the floor of any Python-level tracer), and
        traced with ``values`` none / stats / all (recording only; the graph build is a
        separate column).
models  forward+backward of a CIFAR ResNet-18 and a small GPT (benchmarks/models.py):
        untraced, no-op mode, gradtrace none / stats / all, ``torch.profiler`` with
        shapes and stacks, and TorchLens (forward pass, compared with the untraced
        forward pass) when it is installed. On CUDA too when a GPU is present.
scale   traces of 10k, 100k and 1M ops (``--max-ops``): recording time and peak
        Python heap (tracemalloc, a separate pass) per op, graph build, ``save``,
        ``load``, and DOT export at the default module depth.
gpu     the table of docs/gpu.md: GPT 4L d128 T64 b4, ResNet-18 b32, GPT 8L d512 T256 b8,
        forward+backward untraced, under a no-op mode, torch.profiler and gradtrace
        none / stats / all, and the synchronising CUDA calls of one step
        (torch.cuda.set_sync_debug_mode). ``--device cuda`` runs it alone; on a
        machine without a GPU that says so in one line and exits 2.
run     ``gradtrace run`` against ``python`` on a generated 200k-op script, end to end,
        each run its own process: wall time and peak RSS (``run_scale.py``).
viewer  (only when asked for) how long graph.html takes to open in headless Chromium:
        loops of 1k, 10k, 50k ops and ResNet-18 (``viewer_open.py``).

Every figure is the median of ``--reps`` runs, the variants of one row interleaved
run by run so that drift on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402

import gradtrace  # noqa: E402
from gradtrace.views.dot import DEFAULT_DEPTH, to_dot  # noqa: E402

VALUES = ("none", "stats", "all")


class NoOpMode(TorchFunctionMode):
    """The floor: a function mode that only calls through."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


# -- the machine ---------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gradtrace": gradtrace.__version__,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# -- timing helpers -----------------------------------------------------------------


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def run_interleaved(variants: dict, reps: int) -> dict:
    """``variants``: name -> callable returning a dict of timings (seconds) for one run.
    Runs every variant once per repetition, in turn; returns name -> key -> median."""
    samples: dict = {name: {} for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            gc.collect()
            for k, v in fn().items():
                samples[name].setdefault(k, []).append(v)
    return {name: {k: median(v) for k, v in d.items()} for name, d in samples.items()}


def timed_plain(work, device="cpu", ctx=None):
    def run():
        _sync(device)
        t0 = time.perf_counter()
        if ctx is None:
            work()
        else:
            with ctx():
                work()
        _sync(device)
        return {"t": time.perf_counter() - t0}

    return run


def timed_trace(work, values, device="cpu"):
    """Recording (enter, run, exit) and, separately, building the graph."""

    def run():
        _sync(device)
        t0 = time.perf_counter()
        with gradtrace.trace(values) as tr:
            work()
        _sync(device)
        t1 = time.perf_counter()
        G = tr.graph
        t2 = time.perf_counter()
        n = sum(1 for _, k in G.nodes(data="kind") if k == "op")
        del tr, G
        return {"t": t1 - t0, "build": t2 - t1, "ops": n}

    return run


def timed_profiler(work, device="cpu"):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    if device == "cuda":
        acts.append(ProfilerActivity.CUDA)

    def run():
        _sync(device)
        t0 = time.perf_counter()
        with profile(activities=acts, record_shapes=True, with_stack=True) as prof:
            work()
        _sync(device)
        t = time.perf_counter() - t0
        del prof
        return {"t": t}

    return run


def torchlens_module():
    try:
        import torchlens
    except Exception:
        return None
    return torchlens


# -- sections -----------------------------------------------------------------------


def section_loop(cfg) -> dict:
    n = cfg["loop_ops"]
    x = torch.ones(8)

    def work():
        for _ in range(n):
            y = x + 1  # noqa: F841

    for _ in range(2):
        work()
    variants = {"untraced": timed_plain(work), "no-op mode": timed_plain(work, ctx=NoOpMode)}
    for v in VALUES:
        variants[f"gradtrace {v}"] = timed_trace(work, v)
    res = run_interleaved(variants, cfg["reps"])
    base = res["untraced"]["t"] / n * 1e6
    rows = []
    for name, r in res.items():
        us = r["t"] / n * 1e6
        rows.append({
            "variant": name, "us_per_op": us, "over_untraced_us": us - base,
            "ratio": us / base, "build_us_per_op": r["build"] / n * 1e6 if "build" in r else None,
        })
    return {"ops": n, "rows": rows}


def _model_rows(name, device, cfg, tl) -> dict:
    model, step = models.make(name, batch=cfg["batch"], device=device, tiny=cfg["tiny"])

    def work():
        model.zero_grad(set_to_none=True)
        step()

    for _ in range(cfg["warmup"]):
        work()
    variants = {"untraced": timed_plain(work, device), "no-op mode": timed_plain(work, device, NoOpMode)}
    for v in VALUES:
        variants[f"gradtrace {v}"] = timed_trace(work, v, device)
    variants["torch.profiler (shapes+stacks)"] = timed_profiler(work, device)
    res = run_interleaved(variants, cfg["reps"])
    base = res["untraced"]["t"]
    rows = []
    for vname, r in res.items():
        rows.append({
            "variant": vname, "ms": r["t"] * 1e3, "ratio": r["t"] / base,
            "build_ms": r["build"] * 1e3 if "build" in r else None,
            "ratio_with_build": (r["t"] + r["build"]) / base if "build" in r else None,
            "ops": r.get("ops"),
        })
    if tl is not None:
        fwd = step.forward

        def tl_run():
            _sync(device)
            t0 = time.perf_counter()
            log = tl.log_forward_pass(model, list(step.inputs), layers_to_save="all", vis_opt="none")
            _sync(device)
            t = time.perf_counter() - t0
            del log
            return {"t": t}

        with torch.no_grad():
            fwd()
        r2 = run_interleaved({"fwd": timed_plain(fwd, device), "tl": tl_run}, max(1, min(cfg["reps"], 3)))
        rows.append({
            "variant": "TorchLens (forward, all layers saved)", "ms": r2["tl"]["t"] * 1e3,
            "ratio": r2["tl"]["t"] / r2["fwd"]["t"], "build_ms": None, "ratio_with_build": None,
            "ops": None, "note": f"vs untraced forward {r2['fwd']['t'] * 1e3:.2f} ms",
        })
    return {"model": name, "device": device, "rows": rows}


def section_models(cfg) -> dict:
    tl = None if cfg["no_torchlens"] else torchlens_module()
    devices = ["cpu"]
    if torch.cuda.is_available() and not cfg["cpu_only"]:
        devices.append("cuda")
    out = []
    for device in devices:
        for name in ("resnet18", "gpt"):
            out.append(_model_rows(name, device, cfg, tl))
            if device == "cuda":
                torch.cuda.empty_cache()
    return {
        "tables": out,
        "torchlens": "not measured (--no-torchlens)" if cfg["no_torchlens"] else (
            f"torchlens {getattr(tl, '__version__', '?')}" if tl is not None
            else "not installed: skipped (pip install torchlens to include it)"),
        "cuda": "measured" if "cuda" in devices else "no GPU here: skipped",
    }


def _scale_work(n):
    x = torch.ones(2)

    def work():
        for _ in range(n):
            y = x + 1  # noqa: F841

    return work


def section_scale(cfg) -> dict:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="gradtrace-bench-"))
    try:
        for n in cfg["scale_ops"]:
            work = _scale_work(n)
            reps = cfg["reps_scale"] if n < 1_000_000 else 1
            rec, build, save_t, load_t, dot_t = [], [], [], [], []
            for _ in range(reps):
                gc.collect()
                t0 = time.perf_counter()
                with gradtrace.trace("none") as tr:
                    work()
                t1 = time.perf_counter()
                G = tr.graph
                t2 = time.perf_counter()
                rec.append(t1 - t0)
                build.append(t2 - t1)
                folder = tmp / f"run{n}"
                t0 = time.perf_counter()
                tr.save(folder, dot=False)
                save_t.append(time.perf_counter() - t0)
                del G, tr
                gc.collect()
                t0 = time.perf_counter()
                back = gradtrace.load(folder)
                load_t.append(time.perf_counter() - t0)
                if n <= cfg["max_dot_ops"]:
                    t0 = time.perf_counter()
                    text = to_dot(back.graph, depth=DEFAULT_DEPTH)
                    dot_t.append(time.perf_counter() - t0)
                    del text
                del back
                shutil.rmtree(folder, ignore_errors=True)
            size_mb = None
            # Memory: a separate pass, tracemalloc on (it slows Python down).
            gc.collect()
            tracemalloc.start()
            base_cur, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            with gradtrace.trace("none") as tr:
                work()
            cur, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            del tr
            gc.collect()
            rows.append({
                "ops": n, "reps": reps,
                "record_us_per_op": median(rec) / n * 1e6,
                "peak_bytes_per_op": (peak - base_cur) / n,
                "kept_bytes_per_op": (cur - base_cur) / n,
                "build_s": median(build), "save_s": median(save_t), "load_s": median(load_t),
                "dot_s": median(dot_t) if dot_t else None, "trace_mb": size_mb,
            })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = rows[0] if rows else None
    for r in rows:
        r["time_vs_smallest"] = r["record_us_per_op"] / first["record_us_per_op"]
        r["mem_vs_smallest"] = r["peak_bytes_per_op"] / first["peak_bytes_per_op"]
    return {"rows": rows, "max_dot_ops": cfg["max_dot_ops"]}


def section_run(cfg) -> dict:
    """``gradtrace run`` against ``python`` on one generated loop script (run_scale.py)."""
    import run_scale

    return run_scale.measure(cfg["run_ops"], cfg["reps_run"])


def section_viewer(cfg) -> dict:
    """How long graph.html takes to open in headless Chromium (viewer_open.py)."""
    import viewer_open

    sizes = [200] if cfg["tiny"] else [1000, 10000, 50000]
    rows = viewer_open.measure(sizes, 1 if cfg["tiny"] else min(cfg["reps"], 5), resnet=not cfg["tiny"])
    return {"rows": rows, "note": None if rows else "no headless Chromium / selenium here: skipped"}


def section_memory(cfg) -> dict:
    """Peak memory of one backward call of MIB MiB of Linear weights, each variant in
    a fresh process (``peak_memory.py``)."""
    import subprocess

    script = str(Path(__file__).with_name("peak_memory.py"))
    rows = []
    for mode in ("untraced", "none", "stats", "all"):
        out = subprocess.run([sys.executable, script, mode, str(cfg["memory_mib"])],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return {"rows": rows, "mib": cfg["memory_mib"]}


# -- output -------------------------------------------------------------------------


# -- the GPU table: the three models of the CUDA measurements, one row each ------------------

GPU_MODELS = (  # (key, label, builder arguments)
    ("gpt4", "GPT 4L d128 T64 b4", {"layers": 4, "d": 128, "block": 64, "batch": 4}),
    ("resnet18", "ResNet-18 b32", {"batch": 32}),
    ("gpt8", "GPT 8L d512 T256 b8", {"layers": 8, "d": 512, "block": 256, "batch": 8}),
)


def _gpu_model(key, spec, device, tiny):
    """``step()`` (forward+backward of one batch) for a row of the GPU table."""
    import torch.nn.functional as F  # noqa: F401  (models' steps use it)

    if key == "resnet18":
        _, step = models.make("resnet18", batch=2 if tiny else spec["batch"], device=device, tiny=tiny)
        return step
    torch.manual_seed(0)
    layers, d, t, b = (1, 32, 8, 2) if tiny else (spec["layers"], spec["d"], spec["block"], spec["batch"])
    model = models.gpt(layers=layers, d=d, block=t, vocab=64 if tiny else 512).to(device)
    idx = torch.randint(0, model.wte.num_embeddings, (b, t), device=device)
    tgt = torch.randint(0, model.wte.num_embeddings, (b, t), device=device)

    def step():
        model.zero_grad(set_to_none=True)
        loss = model(idx, tgt)
        loss.backward()
        return loss

    return step


def count_syncs(fn, device) -> int | None:
    """How many synchronising CUDA calls ``fn()`` makes (torch.cuda.set_sync_debug_mode
    warns once per call); None on CPU."""
    if device != "cuda":
        return None
    import warnings

    _sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    _sync(device)
    return sum(1 for w in caught if "synchroniz" in str(w.message).lower())


def _syncs_per_mode(step, device) -> dict:
    """Synchronising calls during one step, untraced and traced per values mode, and
    those made when the trace ends (finalize) and its graph is built."""
    out = {"untraced": count_syncs(step, device)}
    for v in VALUES:
        box = {}

        def traced(v=v, box=box):
            box["tr"] = gradtrace.trace(v)
            box["tr"].__enter__()
            step()

        out[v] = count_syncs(traced, device)
        out[f"{v} leaving"] = count_syncs(lambda box=box: (box["tr"].__exit__(None, None, None), box["tr"].graph),
                                          device)
        box.clear()
    return out


def section_gpu(cfg) -> dict:
    device = cfg["device"]
    rows = []
    for key, label, spec in GPU_MODELS:
        step = _gpu_model(key, spec, device, cfg["tiny"])
        for _ in range(cfg["warmup"]):
            step()
        variants = {"untraced": timed_plain(step, device), "no-op mode": timed_plain(step, device, NoOpMode),
                    "profiler": timed_profiler(step, device)}
        for v in VALUES:
            variants[v] = timed_trace(step, v, device)
        res = run_interleaved(variants, cfg["reps"])
        base = res["untraced"]["t"]
        rows.append({"model": label + (" (tiny)" if cfg["tiny"] else ""), "device": device, "untraced_ms": base * 1e3,
                     "ratios": {k: r["t"] / base for k, r in res.items() if k != "untraced"},
                     "syncs": _syncs_per_mode(step, device)})
        del step
        if device == "cuda":
            torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    return {"device": device, "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "rows": rows}


def _f(x, fmt):
    return "–" if x is None else format(x, fmt)


def tables(result) -> list:
    """Return the report as ``(title, header, rows)`` tables of strings."""
    out = []
    if "loop" in result:
        lp = result["loop"]
        rows = [[r["variant"], _f(r["us_per_op"], ".2f"), _f(r["over_untraced_us"], "+.2f"),
                 _f(r["ratio"], ".2f") + "x", _f(r["build_us_per_op"], ".2f")] for r in lp["rows"]]
        out.append((f"Loop of {lp['ops']:,} small ops (y = x + 1, 8 elements)",
                    ["variant", "µs/op", "µs/op over untraced", "ratio", "graph build µs/op"], rows))
    if "models" in result:
        for t in result["models"]["tables"]:
            rows = []
            for r in t["rows"]:
                rows.append([r["variant"], _f(r["ms"], ".2f"), _f(r["ratio"], ".2f") + "x",
                             _f(r["build_ms"], ".1f"),
                             (_f(r["ratio_with_build"], ".2f") + "x") if r["ratio_with_build"] else "–",
                             str(r["ops"]) if r.get("ops") else r.get("note", "")])
            out.append((f"{t['model']} forward+backward on {t['device']}",
                        ["variant", "ms", "ratio", "graph build ms", "ratio incl. build",
                         "ops / note"], rows))
    if "gpu" in result:
        g = result["gpu"]
        rows = []
        for r in g["rows"]:
            ra, sy = r["ratios"], r["syncs"]
            rows.append([r["model"], _f(r["untraced_ms"], ".1f") + " ms"]
                        + [_f(ra[k], ".2f") + "x" for k in ("no-op mode", "profiler", *VALUES)]
                        + [" / ".join(_f(sy.get(k), "d") for k in ("untraced", *VALUES)),
                           " / ".join(_f(sy.get(f"{k} leaving"), "d") for k in VALUES)])
        where = f"{g['gpu']}, torch {g['torch']}, CUDA {g['cuda']}" if g["gpu"] else f"{g['device']}, torch {g['torch']}"
        out.append((f"Forward+backward on {where} (medians, synchronised; ratios to untraced)",
                    ["model", "untraced", "no-op TorchFunctionMode", "torch.profiler (shapes, stack)",
                     "gradtrace none", "stats", "all", "syncs in a step (untraced/none/stats/all)",
                     "syncs leaving the trace (none/stats/all)"], rows))
    if "scale" in result:
        rows = [[f"{r['ops']:,}", _f(r["record_us_per_op"], ".2f"), _f(r["time_vs_smallest"], ".2f") + "x",
                 _f(r["peak_bytes_per_op"], ".0f"), _f(r["kept_bytes_per_op"], ".0f"),
                 _f(r["mem_vs_smallest"], ".2f") + "x", _f(r["build_s"], ".2f"),
                 _f(r["save_s"], ".2f"), _f(r["load_s"], ".2f"), _f(r["dot_s"], ".2f"), str(r["reps"])]
                for r in result["scale"]["rows"]]
        out.append(("Scale (values='none', y = x + 1)",
                    ["ops", "record µs/op", "vs smallest", "peak heap B/op", "kept B/op",
                     "vs smallest", "build s", "save s", "load s",
                     f"DOT s (depth {DEFAULT_DEPTH})", "reps"], rows))
    if "run" in result:
        r = result["run"]
        rows = [["python", _f(r["python_s"], ".2f"), _f(r["python_mib"], ".0f"), "1.00x", "1.00x"],
                ["gradtrace run", _f(r["gradtrace_s"], ".2f"), _f(r["gradtrace_mib"], ".0f"),
                 _f(r["time_ratio"], ".2f") + "x", _f(r["memory_ratio"], ".2f") + "x"]]
        out.append((f"End to end: a {r['ops']:,}-op script (values='{r['values']}', {r['reps']} runs)",
                    ["command", "s", "peak RSS MiB", "time ratio", "memory ratio"], rows))
    if "viewer" in result and result["viewer"]["rows"]:
        rows = [[r["page"], f"{r['ops']:,}", f"{r['bytes'] / 1e6:.1f}", _f(r["ready_ms"], ".0f"),
                 _f(r["layout_ms"], ".0f")] for r in result["viewer"]["rows"]]
        out.append(("Opening graph.html in headless Chromium (medians, fresh load each)",
                    ["page", "ops", "file MB", "ready ms", "of which layout ms"], rows))
    if "memory" in result:
        base = result["memory"]["rows"][0]["backward_peak_rise_mib"]
        rows = [[r["mode"], _f(r["weights_mib"], ".0f"), _f(r["backward_peak_rise_mib"], ".1f"),
                 _f(r["backward_peak_rise_mib"] - base, "+.1f")] for r in result["memory"]["rows"]]
        out.append(("Peak memory of one backward call (nn.Linear stack, fresh process each)",
                    ["variant", "weights MiB", "peak rise in backward MiB", "vs untraced MiB"], rows))
    return out


def print_tables(result):
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency
        Console = None
    if Console is not None:
        con = Console(width=160)
        for title, header, rows in tables(result):
            tb = Table(title=title, title_justify="left")
            for i, h in enumerate(header):
                tb.add_column(h, justify="left" if i == 0 else "right")
            for r in rows:
                tb.add_row(*r)
            con.print(tb)
    else:
        print(markdown(result))


def markdown(result) -> str:
    lines = []
    for title, header, rows in tables(result):
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------


def config(args) -> dict:
    tiny = args.tiny
    max_ops = args.max_ops if args.max_ops is not None else (2_000 if tiny else 1_000_000)
    sizes = [500, 2_000] if tiny else [10_000, 100_000, 1_000_000]
    return {
        "tiny": tiny,
        "reps": args.reps or (1 if tiny else 7),
        "reps_scale": 1 if tiny else 3,
        "warmup": 1 if tiny else 2,
        "batch": 2 if tiny else 4,
        "loop_ops": args.loop_ops or (300 if tiny else 10_000),
        "scale_ops": [s for s in sizes if s <= max_ops] or [max_ops],
        "max_dot_ops": args.max_dot_ops if args.max_dot_ops is not None else (
            2_000 if tiny else 1_000_000),
        "no_torchlens": args.no_torchlens,
        "cpu_only": args.cpu_only,
        "memory_mib": 16 if tiny else 256,
        "run_ops": 2_000 if tiny else 200_000,
        "reps_run": 1 if tiny else 3,
        "device": args.device,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", "--quick", action="store_true",
                   help="the smoke configuration: tiny models, few ops, one repetition")
    p.add_argument("--reps", type=int, default=None, help="repetitions per measurement (median)")
    p.add_argument("--sections", default="loop,models,scale,run,memory",
                   help="comma-separated: loop,models,gpu,scale,run,memory,viewer")
    p.add_argument("--max-ops", type=int, default=None,
                   help="largest scale trace (default 1,000,000; 100000 skips the 1M row)")
    p.add_argument("--max-dot-ops", type=int, default=None,
                   help="largest scale trace to export as DOT (default: all)")
    p.add_argument("--loop-ops", type=int, default=None, help="ops in the loop section (default 10,000)")
    p.add_argument("--no-torchlens", action="store_true", help="leave TorchLens out even when installed")
    p.add_argument("--cpu-only", action="store_true", help="skip the CUDA rows even with a GPU")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--markdown", default=None, help="also write the tables as Markdown to this file")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="cuda: the GPU table alone (untraced, no-op mode, profiler, none, stats, all, "
                        "synchronising calls) for three models; with --sections gpu, the device it runs on")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"bench.py: --device cuda needs a CUDA GPU; torch.cuda.is_available() is False here "
              f"(torch {torch.__version__})", file=sys.stderr)
        return 2
    sections_given = any(a == "--sections" or a.startswith("--sections=") for a in (sys.argv[1:] if argv is None
                                                                                    else argv))
    if args.device == "cuda" and not sections_given:
        args.sections = "gpu"
    args.device = args.device or "cpu"
    cfg = config(args)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"loop", "models", "gpu", "scale", "run", "memory", "viewer"}
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    info = machine()
    print("gradtrace benchmark: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    print("command: python benchmarks/bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
          flush=True)
    result: dict = {"machine": info, "config": cfg}
    started = time.perf_counter()
    for s in ("loop", "models", "gpu", "scale", "run", "memory", "viewer"):
        if s in sections:
            t0 = time.perf_counter()
            result[s] = globals()[f"section_{s}"](cfg)
            print(f"[{s}: {time.perf_counter() - t0:.1f} s]", flush=True)
    result["seconds"] = time.perf_counter() - started
    print_tables(result)
    if "models" in result:
        print(f"TorchLens: {result['models']['torchlens']}. CUDA: {result['models']['cuda']}.")
    print(f"total {result['seconds']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
