#!/usr/bin/env bash
# Sets up, then traces the bundled autograd example and says where the trace went.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/gradtrace run -o gradtrace-out/autograd examples/autograd.py
