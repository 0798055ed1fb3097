"""Why two runs of one program differ: the likely causes of a replay's first
divergence, each with the error it is expected to cause and the switch that turns
it off in a re-run.

:func:`candidates` reads a diff report (``gradtrace.diff.diff_graphs``) and the two
trace graphs; :func:`confirmation` judges the diff of a re-run made with the
cause switched off (``gradtrace.replay.child --switch-off CAUSE``, applied by
:func:`apply_switches` before the script runs). See docs/replay.md, "Likely cause".
"""

from __future__ import annotations

import re

from ..graph.query import numel

__all__ = [
    "SWITCHES", "apply_switches", "candidates", "confirmation", "explanation_text",
    "first_switchable", "where_text",
]

# Unit roundoff of each dtype: the relative error one rounding to it makes.
_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
# TF32 keeps 10 mantissa bits: one rounding is 2**-11; a dot product of a few
# hundred terms lands near 1e-3, the figure NVIDIA quotes.
_TF32_REL = 1e-3

_MATMULS = ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "addbmm", "baddbmm", "linear",
            "einsum", "tensordot", "addmv", "mv", "scaled_dot_product_attention", "bilinear", "inner")
_CONVS = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
          "convolution")
# CUDA kernels that accumulate with atomics, so their sums' order changes run to run
# (the list of torch.use_deterministic_algorithms): in the forward pass, and ops whose
# backward pass does (a gradient scattered back through an index, a pooling window).
_NONDET_FORWARD = ("index_add", "index_add_", "scatter_add", "scatter_add_", "scatter_reduce",
                   "scatter_reduce_", "index_put_", "index_put", "put_", "index_reduce", "histc", "bincount",
                   "cumsum", "embedding_bag")
_NONDET_BACKWARD = _NONDET_FORWARD + (
    "embedding", "ctc_loss", "nll_loss", "interpolate", "upsample", "grid_sample", "index_select", "gather",
    "__getitem__", "index", "take", "max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool")
_RANDOM = ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
           "rand", "randn", "randint", "randperm", "bernoulli", "bernoulli_", "multinomial", "normal",
           "normal_", "uniform_", "rand_like", "randn_like", "randint_like", "exponential_", "poisson")

# The switches a re-run can apply, by cause: what the child does before the script runs.
SWITCHES = {
    "tf32": "TF32 off: allow_tf32 False for cuBLAS and cuDNN, float32_matmul_precision 'highest', "
            "and the script's own attempts to turn it on ignored",
    "autocast": "autocast off: every torch.autocast region entered with enabled=False",
    "nondeterministic": "deterministic algorithms: torch.use_deterministic_algorithms(True), "
                        "cudnn.deterministic True, CUBLAS_WORKSPACE_CONFIG=:4096:8",
    "cudnn_benchmark": "cudnn.benchmark off (pinned False)",
    "loss_reduction": "DDP's all-reduce sums the ranks' gradients instead of averaging them",
}


def _base(name) -> str:
    """``torch.nn.functional.linear`` -> ``linear``; ``IndexAddBackward0`` -> ``index_add``."""
    n = str(name or "").rsplit(".", 1)[-1]
    m = re.match(r"^([A-Za-z0-9]+)Backward\d*$", n)
    if m:
        n = re.sub(r"(?<!^)(?=[A-Z])", "_", m.group(1)).lower()
    return n


def _is(name, family, prefix=True) -> bool:
    """Whether op ``name`` belongs to ``family``: its base name (trailing ``_`` of an
    in-place op ignored), or with ``prefix`` a longer name that starts with one of
    the family's longer names (``max_pool2d``, ``upsample_bilinear2d``)."""
    b = _base(name)
    core = b.rstrip("_") if not b.startswith("__") else b
    if b in family or core in family:
        return True
    return prefix and any(core.startswith(f) for f in family if len(f) > 6)


def _device(G, nodes) -> str | None:
    """The device type of the first tensor among ``nodes`` (an op's output), else None."""
    for n in nodes or ():
        d = G.nodes.get(n) or {}
        if d.get("kind") == "tensor" and d.get("device"):
            return str(d["device"]).split(":")[0]
    return None


def _on_cuda(G, nodes) -> bool:
    dev = _device(G, nodes)
    if dev is not None:
        return dev == "cuda"
    return str(G.graph.get("target") or "").startswith("cuda")


def _math(G) -> dict:
    return G.graph.get("math") or {}


def _tf32_on(m: dict, conv: bool) -> bool:
    if conv:
        return bool(m.get("tf32_cudnn"))
    return bool(m.get("tf32_matmul")) or m.get("float32_matmul_precision") in ("high", "medium")


def _cause(cause, side, text, expected_rel, evidence, switch=True) -> dict:
    return {"cause": cause, "side": side, "text": text, "expected_rel": expected_rel, "evidence": evidence,
            "switch": cause if switch and cause in SWITCHES else None}


def candidates(report: dict, A, B) -> list:
    """The likely causes of the divergence ``report`` describes between graphs ``A``
    (side ``a``, the baseline) and ``B`` (side ``b``), most likely first: a list of
    ``{cause, side, text, expected_rel, evidence, switch}``, where ``side`` is the
    run the cause acts in (``a``, ``b``), ``expected_rel`` the relative error it
    typically makes (None: a factor or an unrelated value, see ``text``) and
    ``switch`` the name to give ``--switch-off`` (None: no re-run can turn it off).
    Empty when the runs agree or nothing in them points at a known cause."""
    if report.get("agrees"):
        return []
    out = []
    dp = report.get("data_parallel") or {}
    cf = dp.get("constant_factor") or {}
    if cf.get("near_world_size"):
        summed = cf["factor"] > 1  # the single device's gradients are W times the averaged ones
        out.append(_cause(
            "loss_reduction", "b",
            (f"each rank's loss is summed over its rows while DDP averages the ranks' gradients, so the "
             f"all-reduced gradients are 1/{dp.get('world_size')} of one device's" if summed else
             f"the all-reduced gradients are {dp.get('world_size')}x one device's: a loss already averaged "
             "over the global batch, or gradients averaged twice"),
            None, {"factor": cf["factor"], "world_size": dp.get("world_size")}, switch=summed))
    f = report.get("first_divergence")
    if f is None:
        return out
    name = f.get("name") or ""
    fig = f.get("figures") or {}
    na, nb = f.get("nodes_a") or [], f.get("nodes_b") or []
    casts = f.get("autocast") or [None, None]
    lowered = _lowered_side(fig, casts)
    if lowered is not None:
        side, dt = lowered
        names = report.get("names") or ("A", "B")
        this, other = (names[0], names[1]) if side == "a" else (names[1], names[0])
        out.append(_cause("autocast", side,
                          f"autocast ran this op in {dt} in {this} ({other} kept "
                          f"{fig.get('dtype') if side == 'a' else fig.get('dtype_a')})",
                          _ROUNDOFF.get(dt, _ROUNDOFF["bfloat16"]), {"dtype": dt, "autocast": casts}))
    matmul, conv = _is(name, _MATMULS), _is(name, _CONVS)
    for side, G, nodes in (("b", B, nb), ("a", A, na)):
        if (matmul or conv) and _on_cuda(G, nodes) and _tf32_on(_math(G), conv) \
                and "float32" in (fig.get("dtype"), fig.get("dtype_a")):
            m = _math(G)
            how = ("torch.backends.cudnn.allow_tf32 was True" if conv else
                   "torch.backends.cuda.matmul.allow_tf32 was True" if m.get("tf32_matmul") else
                   f"float32_matmul_precision was '{m.get('float32_matmul_precision')}'")
            out.append(_cause("tf32", side, f"TF32 was allowed for CUDA {'convolutions' if conv else 'matmuls'} "
                                            f"({how})", _TF32_REL, {"op": name, "math": m}))
    for side, G, nodes in (("b", B, nb), ("a", A, na)):
        m = _math(G)
        if conv and _on_cuda(G, nodes) and m.get("cudnn_benchmark"):
            out.append(_cause("cudnn_benchmark", side, "cudnn.benchmark was True: cuDNN timed several "
                              "convolution algorithms and kept the fastest, whose sums run in another order",
                              _rounding(fig), {"op": name}))
    forward = f.get("what") in ("output", "write")
    nondet_op = _is(name, _NONDET_FORWARD if forward else _NONDET_BACKWARD)
    det = [m.get("deterministic_algorithms") for m in (_math(A), _math(B))]
    for side, G, nodes in (("b", B, nb), ("a", A, na)):
        m = _math(G)
        if m.get("deterministic_algorithms"):
            continue
        other_det = det[0 if side == "b" else 1]
        if (nondet_op and _on_cuda(G, nodes)) or other_det:
            names = report.get("names") or ("A", "B")
            this, other = (names[1], names[0]) if side == "b" else (names[0], names[1])
            why = (f"`{_base(name)}` accumulates with atomics on CUDA{'' if forward else ' in its backward'}, "
                   f"in an order that changes run to run, and torch.use_deterministic_algorithms was off in {this}"
                   if nondet_op and _on_cuda(G, nodes) else
                   f"deterministic algorithms were on in {other} and off in {this}")
            nan = "NaN/Inf counts differ" in str(fig.get("note") or "")
            if nan:  # deterministic mode fills torch.empty's memory with NaN
                why += (": with them on, torch.empty fills new memory with NaN, and this op reads memory "
                        "the program never wrote")
            elif not (nondet_op and _on_cuda(G, nodes)):
                why += f", where `{_base(name)}` may add in another order"
            out.append(_cause("nondeterministic", side, why, None if nan else _rounding(fig, _sum_terms(f)),
                              {"op": name, "deterministic_algorithms": det, "nan": nan}))
            break
    if _is(name, _RANDOM, prefix=False) and f.get("inputs_agreed") is not None \
            and all(i.get("agree") for i in f.get("inputs") or []):
        modes = [(G.graph.get("replay") or {}).get("rng") for G in (A, B)]
        out.append(_cause("rng", "b", (
            "random numbers drawn from each device's own generator (--rng native): the streams differ"
            if "native" in modes else
            "random numbers drawn from a generator the replay does not seed (a torch.Generator of the "
            "script's own, or a random op it does not map): the streams differ"),
            None, {"rng": modes}, switch=False))
    if dp and not cf and not dp.get("batchnorm_not_synced") and _small(fig):
        out.append(_cause("reduction_order", "b",
                          "the all-reduce adds the ranks' partial sums, in another order than one device adds "
                          "the whole batch", _rounding(fig), {"world_size": dp.get("world_size")}, switch=False))
    if dp.get("batchnorm_not_synced"):
        out.append(_cause("batchnorm", "b", "BatchNorm without SyncBatchNorm normalises each rank's rows by "
                          "that rank's own statistics: " + ", ".join(dp["batchnorm_not_synced"]),
                          None, {"modules": dp["batchnorm_not_synced"]}, switch=False))
    return _dedupe(out)


def _lowered_side(fig, casts):
    """``(side, dtype)`` when autocast ran the op in a lower dtype in one run than the other."""
    da, db = fig.get("dtype_a") or fig.get("dtype"), fig.get("dtype")
    if da == db:
        return None
    rank = {"float64": 3, "float32": 2, "bfloat16": 1, "float16": 1}
    if rank.get(db, 2) < rank.get(da, 2) and (casts[1] or fig.get("autocast")):
        return "b", db
    if rank.get(da, 2) < rank.get(db, 2) and (casts[0] or fig.get("autocast")):
        return "a", da
    return None


def _rounding(fig, terms: int | None = None) -> float:
    """The error of a sum taken in another order: the dtype's rounding times the square
    root of the terms summed into each output (``terms``; a few when unknown)."""
    dt = fig.get("dtype") or "float32"
    return _ROUNDOFF.get(dt, _ROUNDOFF["float32"]) * (max(terms, 1) ** 0.5 if terms else 4)


def _sum_terms(f) -> int | None:
    """About how many terms each output element sums: the largest input's size over the output's."""
    out = numel((f.get("figures") or {}).get("shape"))
    ins = [numel(i.get("shape")) for i in f.get("inputs") or [] if i.get("shape") is not None]
    if not ins or not out:
        return None
    return max(1, max(ins) // out)


def _small(fig) -> bool:
    r = fig.get("max_rel")
    return r is not None and r < 1e-3


def _dedupe(out):
    seen, keep = set(), []
    for c in out:
        if c["cause"] not in seen:
            seen.add(c["cause"])
            keep.append(c)
    return keep


def first_switchable(cands: list):
    """The most likely cause that a re-run can switch off, or None."""
    return next((c for c in cands if c.get("switch")), None)


def confirmation(original: dict, rerun: dict | None, failed: str | None = None) -> dict:
    """Judge a re-run made with a cause switched off, from the original diff report and
    the re-run's: ``{status, text}`` where status is ``confirmed`` (the re-run agrees),
    ``partly`` (it still diverges, later than before), ``not confirmed`` (it still
    diverges at the same op or earlier) or ``re-run failed``."""
    if failed or rerun is None:
        return {"status": "re-run failed", "text": f"the re-run failed: {failed or 'no trace'}"}
    if rerun.get("agrees"):
        return {"status": "confirmed", "text": "agrees. Cause confirmed."}
    f0, f1 = original.get("first_divergence") or {}, rerun.get("first_divergence") or {}
    where = where_text(f1) if f1 else "the data-parallel gradients"
    if f1 and f0 and (f1.get("seq") or 0) > (f0.get("seq") or 0) and f1.get("what") in ("output", "write"):
        return {"status": "partly", "first_divergence": f1,
                "text": f"still diverges, later: at {where}. The cause explains the first divergence; "
                        "another remains."}
    return {"status": "not confirmed", "first_divergence": f1 or None,
            "text": f"still diverges at {where}. Not confirmed."}


def where_text(f: dict) -> str:
    """``\\`c = a @ b\\` (line 8)``, or the op's name where the source is unknown."""
    code = f.get("code")
    line = f.get("line")
    what = f"`{code}`" if code else f"`{f.get('name')}`"
    return what + (f" (line {line})" if line else "")


def explanation_text(f: dict | None, cands: list, tried: dict | None) -> str:
    """One paragraph: where the runs first diverge, the likely cause and its expected
    size, and what the re-run with the cause switched off found."""
    if not cands:
        return ""
    top = tried["cause"] if tried else cands[0]
    head = f"First divergence at {where_text(f)}: " if f else ""
    size = f"; expected relative error ~{top['expected_rel']:.0e}" if top.get("expected_rel") else ""
    if top["cause"] == "loss_reduction":
        size = f"; expected a constant factor of {top['evidence'].get('world_size')} in the gradients"
    observed = ""
    if top["cause"] == "loss_reduction":
        observed = f" (observed {top['evidence']['factor']:.3g})"
    elif f and isinstance((f.get("figures") or {}).get("max_rel"), float) \
            and (f["figures"]["max_rel"] < float("inf")):
        observed = f" (observed {f['figures']['max_rel']:.2g})"
    text = f"{head}{top['text']}{size}{observed}"
    if tried:
        text += f"; re-run with {tried['switch_text']}: {tried['result']['text']}"
    elif not top.get("switch"):
        text += "; no re-run can switch this off, so it is not confirmed."
    others = [c["cause"] for c in cands if c is not top and c["cause"] != top["cause"]]
    if others:
        text += f" Other candidates: {', '.join(others)}."
    return text


# -- the switches, applied in the re-run's child process before the script runs -------------------


def apply_switches(names) -> list:
    """Turn off each named cause in this process (before the script runs) and keep it
    off against the script's own settings; return the names applied. Unknown names
    raise ValueError."""
    done = []
    for n in names:
        if n not in SWITCHES:
            raise ValueError(f"unknown cause {n!r} (causes: {', '.join(SWITCHES)})")
        globals()[f"_off_{n}"]()
        done.append(n)
    return done


def _pin(obj, attr, wrap):
    try:
        orig = getattr(obj, attr)
    except AttributeError:
        return
    try:
        setattr(obj, attr, wrap(orig))
    except Exception:
        pass


def _off_tf32():
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    _pin(torch._C, "_set_cublas_allow_tf32", lambda f: (lambda v: f(False)))
    _pin(torch._C, "_set_float32_matmul_precision", lambda f: (lambda v: f("highest")))
    _pin(torch._C, "_set_fp32_precision_setter",
         lambda f: (lambda backend, op, v: f(backend, op, "ieee" if v == "tf32" else v)))
    _pin_cudnn("allow_tf32", torch._C._set_cudnn_allow_tf32, False)


def _pin_cudnn(name: str, setter, value):
    """Keep ``torch.backends.cudnn.<name>`` at ``value`` whatever the script assigns to it."""
    import torch

    cls = type(torch.backends.cudnn)
    prop = cls.__dict__.get(name)
    if prop is not None and hasattr(prop, "getter"):
        from torch.backends import ContextProp

        setattr(cls, name, ContextProp(prop.getter, lambda v: setter(value)))


def _off_autocast():
    from torch.amp import autocast_mode

    cls = autocast_mode.autocast
    orig = cls.__init__

    def __init__(self, *args, **kwargs):
        if len(args) > 2:  # (device_type, dtype, enabled, ...): the third is enabled
            args = (*args[:2], False, *args[3:])
        else:
            kwargs["enabled"] = False
        orig(self, *args, **kwargs)

    cls.__init__ = __init__


def _off_nondeterministic():
    import os

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    orig = torch.use_deterministic_algorithms
    orig(True, warn_only=True)
    torch.backends.cudnn.deterministic = True

    def use_deterministic_algorithms(mode, *, warn_only=False):
        # pinned on: the script's own call may only make it stricter
        orig(True, warn_only=warn_only if mode else True)

    torch.use_deterministic_algorithms = use_deterministic_algorithms


def _off_cudnn_benchmark():
    import torch

    torch.backends.cudnn.benchmark = False
    _pin_cudnn("benchmark", torch._C._set_cudnn_benchmark, False)


def _off_loss_reduction():
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    orig = default_hooks.allreduce_hook

    def allreduce_sum_hook(process_group, bucket):
        # DDP's hook divides by the world size; multiplying first leaves the sum
        import torch.distributed as dist

        group = process_group if process_group is not None else dist.group.WORLD
        bucket.buffer().mul_(group.size())
        return orig(process_group, bucket)

    default_hooks.allreduce_hook = allreduce_sum_hook
