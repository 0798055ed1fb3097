#!/usr/bin/env bash
# Sets up (scripts/setup.sh), lints, and runs the test suite; extra arguments go to pytest.
# Each step says what it does as it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The viewer's tests run in a real headless browser: Debian's chromium and its driver.
if ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing chromium and chromium-driver (apt-get) for the viewer's browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || true
  fi
  command -v chromedriver >/dev/null 2>&1 || echo "test: note: chromium-driver is not installed: the browser tests will be skipped"
fi
echo "test: linting (ruff check gradtrace tests examples benchmarks scripts)"
.venv/bin/ruff check gradtrace tests examples benchmarks scripts
echo "test: running the test suite (python -m pytest -q $*)"
.venv/bin/python -m pytest -q "$@"
