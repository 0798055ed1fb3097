"""The tolerances a diff judges by: ``torch.testing.assert_close``'s per-dtype
defaults, and the order of floating dtypes from least to most precise that picks
the looser of two."""

from __future__ import annotations

__all__ = ["DEFAULT_TOLERANCES", "FLOATING_DTYPES", "PRECISION_ORDER", "tolerance"]

# assert_close's own defaults, so two runs are judged the way PyTorch's tests judge them
DEFAULT_TOLERANCES = {
    "float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7), "complex32": (1e-3, 1e-5), "complex64": (1.3e-6, 1e-5),
    "complex128": (1e-7, 1e-7),
}
PRECISION_ORDER = ["bfloat16", "float16", "complex32", "float32", "complex64", "float64", "complex128"]
FLOATING_DTYPES = frozenset(PRECISION_ORDER)


def tolerance(dtype_a, dtype_b=None, rtol=None, atol=None):
    """Return ``(rtol, atol)`` for comparing two dtypes: the looser default of the two
    (``assert_close``'s), unless given."""
    cands = [d for d in (dtype_a, dtype_b) if d in DEFAULT_TOLERANCES]
    if cands:
        low = min(cands, key=lambda d: PRECISION_ORDER.index(d))
        r, a = DEFAULT_TOLERANCES[low]
    else:
        r, a = 0.0, 0.0
    return (r if rtol is None else rtol), (a if atol is None else atol)
