import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _nothing_left_on_the_mode_stack():
    """Every test leaves torch's function-mode stack as it found it (empty). An ended
    recorder that torch itself pushed back (its _pop_mode_temporarily generator closed
    after a signal) only passes calls through; it is swept, as the next trace would."""
    yield
    from gradtrace.record.session import sweep_ended

    sweep_ended()
    depth = torch._C._len_torch_function_stack()
    assert depth == 0, f"{depth} torch function mode(s) left active"
