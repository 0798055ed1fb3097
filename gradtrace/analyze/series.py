"""A run's backward calls as a whole: runs of alike calls, and their loss and gradient
norm over the run as terminal sparklines.

A training loop calls ``loss.backward()`` once a step: a summary that lists each call
on its own line is a wall of near-identical lines. Here calls that differ only in their
tensors (the same API, root names and shapes, kind of weighting vector, number of
gradients, no error) form one run, and the values the summary keeps per call (the
root's value when it has one element, the norm of the leaves' ``.grad`` after the call)
are drawn over the whole run, so that a loss that climbs or turns NaN shows at once.
"""

from __future__ import annotations

import math
import re

__all__ = ["backward_runs", "base_label", "row_series_lines", "run_roots", "series_lines", "sparkline",
           "update_series_lines"]

_BARS = "▁▂▃▄▅▆▇█"
_NONFINITE = "!"
_WIDTH = 60  # characters of a sparkline; a longer series is drawn a bucket per character
_LOG_SPAN = 1e3  # positive values spanning more than this are drawn on a log scale
_NUMBERED = re.compile(r"#\d+$")


def base_label(label):
    """``label`` without the ``#k`` that tells apart tensors bound to the same name
    (``loss#12`` -> ``loss``); None stays None."""
    return _NUMBERED.sub("", label) if label else label


def _weights_kind(w: str) -> str:
    # a weighting vector's text is "name [shape] (norm ..., mean ...)": its values
    # differ every call; its name and shape say whether the calls are alike
    return w.split(" (", 1)[0]


def _alike(b: dict):
    """What calls of one run share; a call that raised is alike to none."""
    if b.get("error"):
        return ("error", b["id"])
    return (b["api"], b["grads"],
            tuple((base_label(r["label"]), str(r["shape"]), _weights_kind(r["w"])) for r in b["roots"]))


def backward_runs(entries: list) -> list:
    """Return the backward entries of a summary (call order) as a list of runs, each a
    list of consecutive alike calls (see the module text); one call is a run of one."""
    runs, key = [], object()
    for b in entries:
        k = _alike(b)
        if runs and k == key:
            runs[-1].append(b)
        else:
            runs.append([b])
            key = k
    return runs


def run_roots(run: list) -> list:
    """``[(name, shape, weights)]`` of the roots of a run of alike calls: each root's
    name without its ``#k`` (its node id when it has none) and its weighting vector's
    name and shape, not its values."""
    return [(base_label(r["label"]) or r["root"], r["shape"], _weights_kind(r["w"])) for r in run[0]["roots"]]


def _number(v):
    """A summary number as a float (a trace's head writes NaN and Inf as words), or None."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _buckets(values: list, width: int) -> list:
    """``values`` cut into at most ``width`` consecutive buckets; a bucket with a NaN or
    Inf is NaN, else the mean of its values."""
    n = len(values)
    size = max(1, math.ceil(n / width))
    out = []
    for i in range(0, n, size):
        part = values[i:i + size]
        out.append(math.nan if not all(map(math.isfinite, part)) else math.fsum(part) / len(part))
    return out


def sparkline(values: list, width: int = _WIDTH) -> tuple[str, bool]:
    """Return ``(line, log)``: ``values`` (finite or not) drawn as block characters, at
    most ``width`` of them, NaN and Inf as ``!``; ``log`` says the scale is
    logarithmic (positive values spanning more than three orders of magnitude)."""
    cells = _buckets(values, width)
    finite = [v for v in cells if math.isfinite(v)]
    if not finite:
        return _NONFINITE * len(cells), False
    lo, hi = min(finite), max(finite)
    log = lo > 0 and hi / lo > _LOG_SPAN
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    span = hi - lo
    chars = []
    for v in cells:
        if not math.isfinite(v):
            chars.append(_NONFINITE)
            continue
        x = math.log10(v) if log else v
        chars.append(_BARS[round((x - lo) / span * (len(_BARS) - 1)) if span > 0 else 0])
    return "".join(chars), log


def _series_line(name: str, ids: list, values: list, over: str = "backward calls") -> str:
    line, log = sparkline(values)
    finite = [v for v in values if math.isfinite(v)]
    text = f"{name} over {len(values)} {over}: {line}  {values[0]:.4g} → {values[-1]:.4g}"
    if finite:
        text += f" (min {min(finite):.4g}, max {max(finite):.4g}{', log scale' if log else ''})"
    first_bad = next((i for i, v in zip(ids, values) if not math.isfinite(v)), None)
    if first_bad is not None:
        text += f"; first NaN/Inf at {first_bad}"
    return text


def series_lines(entries: list, min_calls: int = 3) -> list:
    """Return the text lines drawing, over the backward calls of a summary, the value of
    each call's first root (when it has one element: the loss) and the norm of the
    leaves' ``.grad`` after it; none for fewer than ``min_calls`` calls with a value."""
    lines = []
    roots = [(b["id"], b["roots"][0]) for b in entries if b["roots"]]
    losses = [(i, _number(r.get("value")), base_label(r["label"])) for i, r in roots]
    losses = [(i, v, name) for i, v, name in losses if v is not None]
    if len(losses) >= min_calls:
        names = {name for _, _, name in losses}
        name = names.pop() if len(names) == 1 and None not in names else "root value"
        lines.append(_series_line(name, [i for i, _, _ in losses], [v for _, v, _ in losses]))
    norms = [(b["id"], _number(b.get("grad_norm"))) for b in entries]
    norms = [(i, v) for i, v in norms if v is not None]
    if len(norms) >= min_calls:
        lines.append(_series_line("gradient norm", [i for i, _ in norms], [v for _, v in norms]))
    return lines


def row_series_lines(rows: list, min_steps: int = 3) -> list:
    """Return the text lines drawing, over step rows (:mod:`gradtrace.analyze.step_rows`:
    a run whose early steps left only their rows), each step's last loss and its
    gradient norm; none for fewer than ``min_steps`` steps with a value."""
    return _row_lines(rows, (("loss", lambda r: r["losses"][-1] if r.get("losses") else None),
                             ("gradient norm", lambda r: r.get("grad_norm"))), min_steps)


def update_series_lines(rows: list, min_steps: int = 3) -> list:
    """Return the text line drawing each step's largest update-to-weight ratio over step
    rows; none for fewer than ``min_steps`` steps with one."""
    return _row_lines(rows, (("largest update/weight", lambda r: (r.get("max_update") or {}).get("ratio")),),
                      min_steps)


def _row_lines(rows: list, series, min_steps: int) -> list:
    lines = []
    for name, value in series:
        points = [(f"step {r['step']}", _number(value(r))) for r in rows]
        points = [(i, v) for i, v in points if v is not None]
        if len(points) >= min_steps:
            lines.append(_series_line(name, [i for i, _ in points], [v for _, v in points], "steps"))
    return lines
