#!/usr/bin/env bash
# Sets up, lints, and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check gradtrace tests examples benchmarks
.venv/bin/python -m pytest -q "$@"
