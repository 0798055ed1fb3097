#!/usr/bin/env bash
# Creates .venv with gradtrace and its dependencies. Idempotent: a second run is quick.
# torch is pinned to 2.13.0 (a CPU wheel on these machines); an unpinned torch would
# pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  "$VPY" -m pip install -q "torch==2.13.0"
fi
"$VPY" -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
"$VPY" -c 'import gradtrace' >/dev/null
if ! command -v dot >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz) >/dev/null 2>&1 || true
  fi
  command -v dot >/dev/null 2>&1 || echo "note: Graphviz's 'dot' is not installed: graph.dot is written, SVG/PNG need 'apt-get install graphviz'."
fi
