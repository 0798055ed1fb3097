"""Data-parallel recording: hooks into torch.distributed / DDP while a trace runs."""


def install(recorder) -> list:
    """Install what records collectives for ``recorder``; return ``(obj, name, original)``
    patches for the trace to restore on exit."""
    return []
