"""An op's arguments and results, split into tensors, numpy arrays and short values."""

from __future__ import annotations

from itertools import chain

import numpy as np
import torch

__all__ = ["Opaque", "results", "scan"]

_SCALARS = (int, float, bool, str, type(None), complex, torch.dtype, torch.device,
            slice, type(Ellipsis), torch.memory_format, torch.layout)


class Opaque(str):
    """A non-scalar argument, kept only as the name of its type (a str, so the
    record holding it stays a plain value)."""

    __slots__ = ()


def scan(args, kwargs):
    """Split call arguments into tensors, numpy arrays and short non-tensor values;
    return the first two as ``(position, value)`` lists, the values as one flat tuple
    ``(position, value, position, value, ...)``: an op record holding it is a tuple of
    two levels, which the garbage collector stops tracking before it reaches the
    oldest generation (every full collection would walk each record again)."""
    tensors, arrays, scalars = [], [], []
    Tensor = torch.Tensor
    for i, a in chain(enumerate(args), kwargs.items()) if kwargs else enumerate(args):
        if isinstance(a, Tensor):
            tensors.append((i, a))
        elif isinstance(a, _SCALARS):
            scalars += (i, a)
        elif isinstance(a, (list, tuple)):
            _scan_seq(a, i, tensors, arrays, scalars)
        elif isinstance(a, np.ndarray):
            arrays.append((i, a))
        else:
            scalars += (i, _opaque(a))
    return tensors, arrays, tuple(scalars)


def _scan_seq(seq, pos, tensors, arrays, scalars):
    Tensor = torch.Tensor
    simple = True
    for j, a in enumerate(seq):
        if isinstance(a, Tensor):
            tensors.append((f"{pos}.{j}", a))
            simple = False
        elif isinstance(a, np.ndarray):
            arrays.append((f"{pos}.{j}", a))
            simple = False
        elif isinstance(a, (list, tuple)) and a and not isinstance(a[0], _SCALARS):
            _scan_seq(a, f"{pos}.{j}", tensors, arrays, scalars)
            simple = False
    if simple:
        scalars += (pos, _opaque(seq) if len(seq) > 16 else tuple(seq))
    else:
        scalars += (pos, _opaque(seq))


def _opaque(obj):
    n = len(obj) if isinstance(obj, (list, tuple)) else None
    return Opaque(f"<{type(obj).__name__}" + (f" of {n}>" if n is not None else ">"))


def results(out) -> list:
    """The tensors and numpy arrays an op returned, as ``(position, value)`` pairs
    (one level of nesting named ``"i.j"``)."""
    acc = []
    _results(out, acc)
    return acc


def _results(out, acc, pos=0):
    if isinstance(out, (torch.Tensor, np.ndarray)):
        acc.append((pos, out))
    elif isinstance(out, (list, tuple)):
        for i, o in enumerate(out):
            if isinstance(o, (torch.Tensor, np.ndarray)):
                acc.append((i if pos == 0 else f"{pos}.{i}", o))
            elif isinstance(o, (list, tuple)):
                _results(o, acc, i)
