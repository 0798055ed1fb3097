"""Replay one program on several targets (CPU, a GPU, data-parallel ranks, a float64
reference) and diff every run against a baseline.

Each target runs in its own process (``python -m gradtrace.replay.child``), traced;
``ddp:N`` runs N ranks through torch.distributed's own launcher
(``python -m torch.distributed.run``) on a free port of 127.0.0.1. See
docs/replay.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

RNG_MODES = ("seeded", "native")
DEFAULT_TIMEOUT = 300.0
RUN_FILE = "run.json"

# -- targets --------------------------------------------------------------------------

_TARGET_RE = re.compile(r"^(cpu|cpu64|cuda(?::(\d+))?|ddp:(\d+)(?::(cpu|cuda))?)$")


class TargetError(ValueError):
    """A target that is unknown or cannot run on this machine (a usage error)."""


@dataclass
class Target:
    name: str  # as the user wrote it: cpu, cuda:1, ddp:2
    kind: str  # cpu, cpu64, cuda, ddp
    device: str | None = None  # the device requests are mapped to; None: the script's own
    world_size: int = 1
    folder: str = ""


def parse_target(text: str) -> Target:
    """Parse ``cpu``, ``cpu64``, ``cuda``, ``cuda:N``, ``ddp:N`` (or ``ddp:N:cpu``,
    ``ddp:N:cuda``); raise :class:`TargetError` for anything else."""
    m = _TARGET_RE.match(text.strip())
    if not m:
        raise TargetError(f"unknown target {text!r} (targets: cpu, cpu64, cuda, cuda:N, ddp:N)")
    t = text.strip()
    if t in ("cpu", "cpu64"):
        return Target(t, t, "cpu", folder=t)
    if t.startswith("cuda"):
        return Target(t, "cuda", f"cuda:{m.group(2) or 0}", folder=t)
    n = int(m.group(3))
    if n < 1:
        raise TargetError(f"target {t}: a data-parallel run needs at least 1 rank")
    dev = m.group(4)
    return Target(t, "ddp", dev, world_size=n, folder=t)


def check_target(t: Target):
    """Raise :class:`TargetError` (one line) when ``t`` cannot run on this machine."""
    if t.device is not None and t.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TargetError(f"target {t.name} needs a CUDA GPU, and torch.cuda.is_available() is "
                              f"False on this machine (torch {torch.__version__})")
        idx = int(t.device.split(":")[1]) if ":" in t.device else 0
        if idx >= torch.cuda.device_count():
            raise TargetError(f"target {t.name}: this machine has {torch.cuda.device_count()} GPU(s)")
    if t.kind == "ddp":
        import torch.distributed as dist

        if not dist.is_available():
            raise TargetError(f"target {t.name}: this torch build has no torch.distributed")


def parse_targets(names) -> list:
    """Parse and check the ``--on`` targets; repeated names get ``-2``, ``-3`` folders."""
    out, seen = [], {}
    for n in names:
        t = parse_target(n)
        check_target(t)
        k = seen.get(t.name, 0) + 1
        seen[t.name] = k
        if k > 1:
            t.folder = f"{t.name}-{k}"
        out.append(t)
    if not out:
        raise TargetError("no target: give at least one --on (cpu, cpu64, cuda, ddp:N)")
    return out


# -- where data-parallel ranks run -------------------------------------------------------


def ddp_placement(target: Target, gpus: int) -> dict:
    """Where the ranks of a ``ddp:N`` target run on a machine with ``gpus`` GPUs:
    ``{backend, gpus, shared, devices, text}``. N GPUs or more (and no ``:cpu``): one
    rank per GPU over NCCL; fewer: the ranks share the GPUs over gloo (NCCL refuses
    two ranks on one GPU); none, or ``ddp:N:cpu``: gloo on CPU."""
    n = target.world_size
    if target.device == "cpu" or gpus <= 0:
        return {"backend": "gloo", "gpus": 0, "shared": False, "devices": ["cpu"] * n,
                "text": f"{n} ranks on CPU, gloo"}
    if gpus >= n:
        devices = [f"cuda:{k}" for k in range(n)]
        return {"backend": "nccl", "gpus": gpus, "shared": False, "devices": devices,
                "text": f"{n} ranks, one per GPU ({', '.join(devices)}), NCCL"}
    devices = [f"cuda:{k % gpus}" for k in range(n)]
    return {"backend": "gloo", "gpus": gpus, "shared": True, "devices": devices,
            "text": f"{n} ranks share {_plural_gpus(gpus)} ({', '.join(sorted(set(devices)))}), gloo: "
                    f"fewer GPUs than ranks, so ranks share a device"}


def _plural_gpus(n):
    return "1 GPU" if n == 1 else f"{n} GPUs"


def _gpu_count() -> int:
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


# -- the child's environment: device mapping and seeded random numbers ------------------

_RANDOM_FACTORIES = {"rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial",
                     "poisson", "rand_like", "randn_like", "randint_like"}
_RANDOM_FILLS = {"uniform_", "normal_", "bernoulli_", "exponential_", "geometric_", "log_normal_",
                 "cauchy_", "random_"}
_INIT_FILLS = {"uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
               "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_"}
_DROPOUTS = {"dropout", "dropout1d", "dropout2d", "dropout3d"}
_LOW_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _constructors():
    try:
        from torch.utils._device import _device_constructors

        return set(_device_constructors())
    except Exception:  # pragma: no cover - older torch
        return {torch.empty, torch.zeros, torch.ones, torch.full, torch.tensor, torch.arange,
                torch.rand, torch.randn, torch.randint, torch.eye, torch.linspace}


class DeviceMap(TorchFunctionMode):
    """Maps a script's device (and, for ``cpu64``, dtype) requests to the target, and
    (``rng="seeded"``) draws random numbers from the CPU generator, moving them to
    the device they were asked for, so every target sees the same numbers.

    It sits below the recorder, so the trace records the call as the script wrote it
    (``.to("cuda")``) and the tensor it actually got (on ``cpu``)."""

    def __init__(self, target: Target, rng: str = "seeded"):
        super().__init__()
        self.target = target
        self.device = torch.device(target.device) if target.device else None
        self.cuda_to_cpu = self.device is not None and self.device.type == "cpu"
        # a ddp rank's GPU takes the script's "cuda" requests only: its CPU tensors stay CPU
        self.default = (self.device if self.device is not None and self.device.type != "cpu"
                        and target.kind != "ddp" else None)
        self.seeded = rng == "seeded"
        self.f64 = target.kind == "cpu64"
        self._ctors = _constructors()
        self._names: dict = {}

    # device and dtype arguments
    def _dev(self, d):
        if d is None or self.device is None:
            return d
        try:
            dev = torch.device(d) if not isinstance(d, int) else torch.device("cuda", d)
        except Exception:
            return d
        if dev.type == "cuda":
            return self.device if self.cuda_to_cpu else (self.device if dev.index is None else dev)
        return d

    def _dtype(self, dt):
        if self.f64 and dt in _LOW_FLOATS:
            return torch.float64
        return dt

    def _name(self, func):
        n = self._names.get(func)
        if n is None:
            from ..record.ops import qualified_name

            n = self._names[func] = qualified_name(func)
        return n

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = self._name(func)
        base = name.rsplit(".", 1)[-1]
        if "device" in kwargs:
            kwargs["device"] = self._dev(kwargs["device"])
        if self.f64 and "dtype" in kwargs:
            kwargs["dtype"] = self._dtype(kwargs["dtype"])
        if name.startswith("Tensor."):
            if base == "to":
                args = tuple(self._dev(a) if isinstance(a, (str, torch.device)) else
                             (self._dtype(a) if isinstance(a, torch.dtype) else a)
                             for a in args)
            elif base == "cuda" and self.device is not None:
                dev = self._dev(args[1] if len(args) > 1 else kwargs.pop("device", None)) or self.device
                if self.cuda_to_cpu:
                    dev = self.device
                return args[0].to(dev, non_blocking=kwargs.get("non_blocking", False))
            elif self.f64 and base in ("float", "half", "bfloat16"):
                return args[0].double()
        elif (func in self._ctors and self.default is not None and kwargs.get("device") is None
              and not (base in ("as_tensor", "asarray") and args and isinstance(args[0], torch.Tensor))):
            kwargs["device"] = self.default
        if self.seeded:
            if base in _RANDOM_FACTORIES and not name.startswith("Tensor."):
                return self._random_factory(func, base, args, kwargs)
            if name.startswith("Tensor.") and base in _RANDOM_FILLS:
                return self._random_fill(func, args, kwargs)
            if name.startswith("torch.nn.init.") and base in _INIT_FILLS:
                return self._random_fill(func, args, kwargs)
            if name.startswith("torch.nn.functional.") and base in _DROPOUTS:
                return self._dropout(func, base, args, kwargs)
        out = func(*args, **kwargs)
        if self.f64 and func in self._ctors and isinstance(out, torch.Tensor) and out.dtype in _LOW_FLOATS \
                and "dtype" not in kwargs:
            out = out.double()  # data given as float32 (numpy, tensors) becomes float64
        return out

    def _random_factory(self, func, base, args, kwargs):
        dev = kwargs.get("device")
        tensor_dev = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        want = torch.device(dev) if dev is not None else (tensor_dev or self.default or torch.device("cpu"))
        dtype64 = self.f64 and kwargs.get("dtype") in (None, torch.float64) and base not in (
            "randint", "randperm", "randint_like", "multinomial")
        if want.type == "cpu" and not dtype64:
            return func(*args, **kwargs)
        cargs = tuple(a.to("cpu") if isinstance(a, torch.Tensor) else a for a in args)
        ckw = {k: (v.to("cpu") if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        if "device" in ckw or tensor_dev is None and base not in ("normal", "bernoulli", "multinomial",
                                                                    "poisson"):
            ckw["device"] = "cpu"
        if dtype64:  # the reference draws the numbers float32 runs draw, then widens them
            if base.endswith("_like") or base in ("normal", "bernoulli", "poisson", "multinomial"):
                cargs = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.float64 else a
                              for a in cargs)
            else:
                ckw["dtype"] = torch.float32
        out = func(*cargs, **ckw)
        if dtype64 and out.is_floating_point():
            out = out.double()
        return out.to(want)

    def _random_fill(self, func, args, kwargs):
        if args:
            t, rest, kw = args[0], args[1:], kwargs
        else:  # nn.init passes the tensor by keyword
            key = next((k for k in ("tensor", "input", "self") if k in kwargs), None)
            t = kwargs.get(key)
            rest, kw = (), {k: v for k, v in kwargs.items() if k != key}
        if not isinstance(t, torch.Tensor):
            return func(*args, **kwargs)
        wide = self.f64 and t.dtype == torch.float64
        if t.device.type == "cpu" and not wide:
            return func(*args, **kwargs)
        tmp = torch.empty(tuple(t.shape), dtype=torch.float32 if wide else t.dtype)
        rest = tuple(a.to("cpu") if isinstance(a, torch.Tensor) else a for a in rest)
        kw = {k: (v.to("cpu") if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        func(tmp, *rest, **kw)
        with torch.no_grad():
            t.copy_(tmp)
        return t

    def _dropout(self, func, base, args, kwargs):
        x = args[0] if args else kwargs.get("input")
        p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
        training = args[2] if len(args) > 2 else kwargs.get("training", True)
        inplace = args[3] if len(args) > 3 else kwargs.get("inplace", False)
        if x.device.type == "cpu" or base != "dropout" or not training or p == 0:
            return func(*args, **kwargs)
        if p == 1:
            return x.mul_(0) if inplace else x * 0
        # What ATen's CPU dropout computes: noise ~ Bernoulli(1 - p) / (1 - p), times x.
        noise = torch.empty(tuple(x.shape), dtype=x.dtype).bernoulli_(1 - p).div_(1 - p).to(x.device)
        return x.mul_(noise) if inplace else x * noise


def _patch_cuda_queries(target: Target):
    """Under a CPU target, torch.cuda tells the script the truth: no GPU."""
    if target.device is None or not target.device.startswith("cpu"):
        return
    torch.cuda.is_available = lambda: False
    torch.cuda.device_count = lambda: 0
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.set_device = lambda *a, **k: None


def _patch_process_group(seconds: float | None, backend: str | None):
    """A rank blocked in a collective gives up after the replay's timeout; with
    ``backend``, every process group uses it (the placement's choice: NCCL with one
    GPU per rank, gloo when ranks share a device)."""
    try:
        import datetime

        import torch.distributed as dist
    except Exception:  # pragma: no cover
        return
    orig = dist.init_process_group

    def init_process_group(*args, **kwargs):
        if seconds and kwargs.get("timeout") is None:
            kwargs["timeout"] = datetime.timedelta(seconds=seconds)
        if backend and args:
            args = (backend, *args[1:])
        elif backend:
            kwargs["backend"] = backend
        return orig(*args, **kwargs)

    dist.init_process_group = init_process_group


def setup_child(target: Target, rng: str, seed: int, timeout: float | None = None,
                backend: str | None = None) -> DeviceMap | None:
    """Prepare this process to run a script on ``target``; return the mode to enter
    (under the recorder), or None."""
    if target.kind == "cpu64":
        torch.set_default_dtype(torch.float64)
    _patch_cuda_queries(target)
    if timeout or backend:
        _patch_process_group(timeout, backend)
    if rng == "seeded":
        torch.manual_seed(seed)
    if target.device is None and rng == "native":
        return None
    return DeviceMap(target, rng)


# -- running targets --------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunResult:
    target: Target
    folder: Path
    ranks: list = field(default_factory=list)  # per rank: the run.json dict (or a stand-in)
    returncode: int | None = 0
    timed_out: bool = False
    seconds: float = 0.0
    log: str = ""
    placement: dict | None = None  # ddp: where the ranks ran (ddp_placement)

    @property
    def failed(self):
        return self.timed_out or any(r.get("status") != "ok" for r in self.ranks)


def _child_cmd(target: Target, out: Path, script, argv, values, rng, seed, timeout, switches=(),
               placement=None):
    extra = [x for s in switches for x in ("--switch-off", s)]
    if placement is not None:
        extra += ["--backend", placement["backend"], "--gpus", str(placement["gpus"])]
    return ["-m", "gradtrace.replay.child", "--target", target.name, "--name", target.folder, "--out", str(out),
            "--values", values, "--rng", rng, "--seed", str(seed), "--timeout", str(timeout),
            *extra, "--script", str(script), *argv]


def _env():
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_proc(cmd, timeout, log_path: Path):
    """Run ``cmd`` in its own session, output to ``log_path``; on timeout send SIGTERM
    to the whole group (ranks write their traces), then SIGKILL."""
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        timed_out = False
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(p, signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _kill_group(p, signal.SIGKILL)
                p.wait()
    return p.returncode, timed_out, time.time() - t0


def _kill_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_target(target: Target, out: Path, script, argv, values="stats", rng="seeded", seed=0,
               timeout=DEFAULT_TIMEOUT, switches=(), folder=None) -> RunResult:
    """Run ``script`` once on ``target`` (N ranks for ``ddp:N``), traced, into
    ``out/<target folder>`` (or ``out/<folder>``), with the causes named in
    ``switches`` turned off (``gradtrace.causes``)."""
    folder = out / (folder or target.folder)
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    placement = ddp_placement(target, _gpu_count()) if target.kind == "ddp" else None
    child = _child_cmd(target, folder, script, argv, values, rng, seed, timeout, switches, placement)
    if target.kind == "ddp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc-per-node", str(target.world_size), "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "--max-restarts", "0", "--monitor-interval", "0.2",
               *child]
    else:
        cmd = [sys.executable, *child]
    log_path = folder / "output.log"
    rc, timed_out, secs = _run_proc(cmd, timeout, log_path)
    res = RunResult(target, folder, returncode=rc, timed_out=timed_out, seconds=secs, placement=placement)
    res.log = log_path.read_text(encoding="utf-8", errors="replace")
    n = target.world_size if target.kind == "ddp" else 1
    for k in range(n):
        rdir = folder / f"rank{k}" if target.kind == "ddp" else folder
        info = _read_run(rdir)
        if info is None:
            info = {"target": target.name, "rank": k, "status": "missing", "exit_code": None,
                    "error": {"type": "Timeout" if timed_out else "NoTrace",
                              "message": ("did not finish within the timeout" if timed_out
                                          else "the process ended without writing a trace"),
                              "file": None, "line": None, "code": None},
                    "folder": str(rdir), "trace": False}
        info.setdefault("folder", str(rdir))
        res.ranks.append(info)
    return res


def _read_run(folder: Path):
    p = folder / RUN_FILE
    if not p.exists():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except Exception:
        return None
    d["trace"] = (folder / "trace.json").exists()
    return d


_COLLATERAL = ("connection closed", "connection reset", "broken pipe", "sigterm", "terminated",
               "timed out", "timeout")


def root_failure(run: RunResult):
    """The rank whose failure came first: an error of its own rather than one caused by
    a peer going away (gloo's closed connection, the launcher's SIGTERM)."""
    bad = [r for r in run.ranks if r.get("status") != "ok"]
    if not bad:
        return None

    def collateral(r):
        e = r.get("error") or {}
        text = f"{e.get('type')} {e.get('message')}".lower()
        return r.get("status") == "missing" or any(c in text for c in _COLLATERAL)

    bad.sort(key=lambda r: (collateral(r), r.get("ended_at") or float("inf")))
    return bad[0]


def failure_text(run: RunResult, r: dict) -> str:
    e = r.get("error") or {}
    # the folder name: two runs of one target (cpu, cpu-2) are told apart
    who = f"{run.target.folder} rank {r.get('rank')}" if run.target.kind == "ddp" else run.target.folder
    where = ""
    if e.get("file"):
        where = f" at {e['file']}:{e.get('line')}" + (f" `{e['code']}`" if e.get("code") else "")
    msg = (e.get("message") or "").strip().splitlines()
    return f"{who} raised {e.get('type')}: {msg[0] if msg else ''}{where}"


# -- the replay -------------------------------------------------------------------------


def replay(script, argv=(), targets=("cpu",), baseline=None, out=None, rtol=None, atol=None,
           values="stats", rng="seeded", seed=0, timeout=DEFAULT_TIMEOUT, parallel=True, explain=True) -> dict:
    """Run ``script`` on every target, diff each against the baseline, write
    ``report.json`` and ``report.md`` into ``out``; return the report (``exit_code``
    0 when every target agrees, 1 otherwise). With ``explain``, each diverging
    target's comparison gets an ``explanation`` (likely causes, and a re-run with the
    most likely switchable one turned off, see :func:`explain_divergence`). Raises
    :class:`TargetError` for a usage error."""
    from ..analyze.diff import accuracy_vs_reference, diff_graphs

    if rng not in RNG_MODES:
        raise TargetError(f"--rng must be one of {', '.join(RNG_MODES)}")
    tlist = parse_targets(targets)
    base_t = tlist[0]
    if baseline is not None:
        matches = [t for t in tlist if baseline in (t.name, t.folder)]
        if not matches:
            raise TargetError(f"baseline {baseline!r} is not one of the --on targets "
                              f"({', '.join(t.folder for t in tlist)})")
        base_t = matches[0]
    script = Path(script)
    out = Path(out) if out else Path("gradtrace-out") / f"replay-{script.stem}"
    out.mkdir(parents=True, exist_ok=True)

    results = {}
    if parallel and len(tlist) > 1:  # every target in its own process, side by side
        with ThreadPoolExecutor(max_workers=min(4, len(tlist))) as ex:
            futs = {t.folder: ex.submit(run_target, t, out, script, list(argv), values, rng, seed, timeout)
                    for t in tlist}
            for k, f in futs.items():
                results[k] = f.result()
    else:
        for t in tlist:
            results[t.folder] = run_target(t, out, script, list(argv), values, rng, seed, timeout)

    loaded = {t.folder: _load_graphs(results[t.folder]) for t in tlist}
    base_runs = loaded[base_t.folder]
    base_G, base_vals, _ = base_runs[0]
    ref_t = next((t for t in tlist if t.kind == "cpu64" and t is not base_t), None)

    report = {
        "script": str(script), "argv": list(argv), "out": str(out),
        "targets": [t.folder for t in tlist], "baseline": base_t.folder,
        "rng": {"mode": rng, "seed": seed if rng == "seeded" else None,
                "text": (f"seeded: random draws come from the CPU generator (seed {seed}) and are "
                         "moved to the target" if rng == "seeded" else
                         "native: each target draws from its own device's generator")},
        "values": values, "tolerance": {"rtol": rtol, "atol": atol},
        "runs": {}, "comparisons": {}, "reference": None, "verdicts": {}, "errors": [],
    }
    for t in tlist:
        run = results[t.folder]
        report["runs"][t.folder] = {
            "target": t.name, "kind": t.kind, "world_size": t.world_size, "folder": str(run.folder),
            "seconds": round(run.seconds, 2), "timed_out": run.timed_out, "returncode": run.returncode,
            "ranks": [{k: r.get(k) for k in ("rank", "status", "exit_code", "error", "folder", "trace")}
                      for r in run.ranks],
            "placement": run.placement,
        }
        rf = root_failure(run)
        if rf is not None:
            report["errors"].append({"target": t.folder, "rank": rf.get("rank"), "text": failure_text(run, rf),
                                     "error": rf.get("error"), "timed_out": run.timed_out,
                                     "traces_kept": [r["folder"] for r in run.ranks if r.get("trace")]})
    if base_G is None:
        report["verdicts"][base_t.folder] = "failed"
        report["exit_code"] = 1
        _write(report, out)
        return report
    for t in tlist:
        if t is base_t:
            continue
        runs = loaded[t.folder]
        G, vals, info = runs[0]
        if G is None:
            report["verdicts"][t.folder] = "failed"
            continue
        ranks = [(g, v) for g, v, _ in runs if g is not None] if t.kind == "ddp" else None
        rep = diff_graphs(base_G, G, rtol=rtol, atol=atol, values_a=base_vals, values_b=vals,
                                ranks=ranks, names=(base_t.folder, t.folder))
        if ref_t is not None and t is not ref_t:
            rG, rvals, _ = loaded[ref_t.folder][0]
            if rG is not None:
                rep["reference"] = accuracy_vs_reference(rG, rvals, base_G, base_vals, G, vals,
                                                               names=(ref_t.folder, base_t.folder, t.folder))
        report["comparisons"][t.folder] = rep
        report["verdicts"][t.folder] = _verdict(results[base_t.folder], results[t.folder], rep)
    if results[base_t.folder].failed:
        report["verdicts"][base_t.folder] = "failed"
    if explain:
        for t in tlist:
            if report["verdicts"].get(t.folder) == "diverges":
                report["comparisons"][t.folder]["explanation"] = explain_divergence(
                    report["comparisons"][t.folder], base_t, loaded[base_t.folder], t, loaded[t.folder], out,
                    script, list(argv), values=values, rng=rng, seed=seed, timeout=timeout, rtol=rtol, atol=atol)
    report["exit_code"] = 0 if all(v == "agrees" for v in report["verdicts"].values()) else 1
    _write(report, out)
    return report


def _load_graphs(run: RunResult) -> list:
    """Per rank of ``run``: ``(graph, values, run.json dict)``; graph None where no trace was written."""
    from ..trace import load

    graphs = []
    for r in run.ranks:
        if r.get("trace"):
            tr = load(r["folder"])
            graphs.append((tr.graph, tr.values, r))
        else:
            graphs.append((None, {}, r))
    return graphs


def _diff_runs(base_runs, runs, kind, names, rtol, atol):
    from ..analyze.diff import diff_graphs

    (ga, va, _), (gb, vb, _) = base_runs[0], runs[0]
    ranks = [(g, v) for g, v, _ in runs if g is not None] if kind == "ddp" else None
    return diff_graphs(ga, gb, rtol=rtol, atol=atol, values_a=va, values_b=vb, ranks=ranks, names=names)


def explain_divergence(rep, base_t, base_runs, t, runs, out, script, argv, values="stats", rng="seeded",
                       seed=0, timeout=DEFAULT_TIMEOUT, rtol=None, atol=None) -> dict:
    """Why target ``t`` diverges from the baseline (``rep`` is their diff): the likely
    causes (``gradtrace.causes.candidates``) and, for the most likely one a re-run
    can turn off, that re-run (the run the cause acts in, written to
    ``OUT/<folder>-without-<cause>``) diffed again. Returns ``{candidates, tried,
    text}``; ``tried`` is None when no candidate can be switched off, else
    ``{cause, side, switch_text, folder, result: {status, text}}``."""
    from ..analyze import causes

    cands = causes.candidates(rep, base_runs[0][0], runs[0][0])
    top = causes.first_switchable(cands)
    tried = None
    if top is not None:
        who = t if top["side"] == "b" else base_t
        folder = f"{who.folder}-without-{top['cause']}"
        res = run_target(who, out, script, argv, values, rng, seed, timeout, switches=[top["cause"]], folder=folder)
        graphs = _load_graphs(res)
        rf = root_failure(res)
        names = (base_t.folder, t.folder)
        if rf is not None or graphs[0][0] is None:
            result = causes.confirmation(rep, None, failure_text(res, rf) if rf else "no trace")
        elif top["side"] == "b":
            result = causes.confirmation(rep, _diff_runs(base_runs, graphs, t.kind, names, rtol, atol))
        else:
            result = causes.confirmation(rep, _diff_runs(graphs, runs, t.kind, names, rtol, atol))
        tried = {"cause": top, "side": top["side"], "switch_text": _switch_text(top["cause"]),
                 "folder": str(res.folder), "target": who.folder, "result": result}
    text = causes.explanation_text(rep.get("first_divergence"), cands, tried)
    if tried is not None:
        tried = {**tried, "cause": top["cause"]}
    return {"candidates": cands, "tried": tried, "text": text}


_SWITCH_WORDS = {"tf32": "TF32 off", "autocast": "autocast off", "nondeterministic": "deterministic algorithms",
                 "cudnn_benchmark": "cudnn.benchmark off", "loss_reduction": "the ranks' gradients summed"}


def _switch_text(cause) -> str:
    return _SWITCH_WORDS.get(cause, f"{cause} off")


def _verdict(base: RunResult, run: RunResult, rep: dict) -> str:
    """A target's verdict against the baseline: ``agrees`` or ``diverges`` when both
    ran to the end; ``failed`` (the target failed), ``baseline failed``, or ``both
    failed, the same way`` / ``both failed, differently`` (same exception at the same
    line). A run that failed never agrees."""
    if run.failed and base.failed:
        same = _same_error(root_failure(base), root_failure(run))
        return "both failed, the same way" if same else "both failed, differently"
    if run.failed:
        return "failed"
    if base.failed:
        return "baseline failed"
    return "agrees" if rep["agrees"] else "diverges"


def _same_error(r1, r2) -> bool:
    if r1 is None or r2 is None:  # a timeout leaves no rank of its own to blame
        return False
    e1, e2 = r1.get("error") or {}, r2.get("error") or {}
    return all(e1.get(k) == e2.get(k) for k in ("type", "message", "line", "code"))


def _write(report, out: Path):
    from ..analyze.diff import format_replay_md
    from ..graph.io import _clean

    (out / "report.json").write_text(json.dumps(_clean(report), indent=1, default=str), encoding="utf-8")
    (out / "report.md").write_text(format_replay_md(report), encoding="utf-8")
