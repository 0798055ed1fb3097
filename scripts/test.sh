#!/usr/bin/env bash
# Sets up (scripts/setup.sh), lints, and runs the test suite; extra arguments go to pytest.
# Each step says what it does as it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: linting (ruff check gradtrace tests examples benchmarks scripts)"
.venv/bin/ruff check gradtrace tests examples benchmarks scripts
echo "test: running the test suite (python -m pytest -q $*)"
.venv/bin/python -m pytest -q "$@"
