"""What a new user sees of the test suite: the summary says why each test was skipped."""

import subprocess
import sys

from helpers import TESTS

ROOT = TESTS.parent


def test_the_suite_summary_says_why_a_test_was_skipped(tmp_path):
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n\ndef test_gpu():\n    pytest.skip('needs a CUDA GPU')\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", str(ROOT / "pyproject.toml"),
                           "--rootdir", str(tmp_path), str(tmp_path / "test_skips.py")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "SKIPPED [1] test_skips.py:5: needs a CUDA GPU" in done.stdout, done.stdout
