#!/usr/bin/env bash
# The README's quick start: sets up .venv (scripts/setup.sh), traces the course notes'
# autograd lesson, says where the trace went and how to run gradtrace yourself.
# Each step says what it does as it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "quickstart: tracing examples/autograd.py (gradtrace run -o gradtrace-out/autograd examples/autograd.py)"
.venv/bin/gradtrace run -o gradtrace-out/autograd examples/autograd.py
cat <<'MSG'

quickstart: done. The trace is in gradtrace-out/autograd/ (trace.json, graph.dot, graph.svg).
Put gradtrace on your PATH in this shell, then every command in the README works as written:

    source .venv/bin/activate
    gradtrace show gradtrace-out/autograd --backward

A tour of the course notes, lesson by lesson: docs/tour.md
MSG
