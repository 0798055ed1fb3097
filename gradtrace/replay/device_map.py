"""How a replay child process runs its target: :class:`DeviceMap` maps the script's
device (and, for ``cpu64``, dtype) requests to the target and draws random numbers
from one seeded CPU generator; :func:`setup_child` prepares the process around it."""

from __future__ import annotations

import datetime

import torch
from torch.overrides import TorchFunctionMode

from ..record.ops import qualified_name
from .targets import Target

__all__ = ["DeviceMap", "setup_child"]

_RANDOM_FACTORIES = {"rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial",
                     "poisson", "rand_like", "randn_like", "randint_like"}
_RANDOM_FILLS = {"uniform_", "normal_", "bernoulli_", "exponential_", "geometric_", "log_normal_",
                 "cauchy_", "random_"}
_INIT_FILLS = {"uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
               "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_"}
_DROPOUTS = {"dropout", "dropout1d", "dropout2d", "dropout3d"}
_LOW_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _constructors():
    try:  # lazy: torch's own list, absent from older torch
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
        import torch.distributed as dist  # lazy: optional in a torch build, and only ranks need it
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
