#!/usr/bin/env bash
# Creates .venv with gradtrace and its dependencies. Idempotent: a second run is quick.
# torch is pinned to 2.13.0 (a CPU wheel on these machines); an unpinned torch would
# pull a multi-GB CUDA build. Each step says what it does as it starts ("setup: ...").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
VPY=.venv/bin/python
TORCH=2.13.0

say() { echo "setup: $*"; }

# Every pip call goes through here: the machine's pip configuration names find-links
# and index folders that may not exist, and pip warns "Location ... is ignored" for each
# one on every call. Those lines are dropped; pip's own status is kept (pipefail).
pip_install() {
  "$VPY" -m pip install -q "$@" 2>&1 | { grep -v '^WARNING: Location .* is ignored' || true; }
}

if [ ! -x "$VPY" ]; then
  say "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
else
  say "using the existing .venv"
fi
if "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH') else 1)" 2>/dev/null; then
  say "torch $TORCH is installed"
else
  say "installing torch $TORCH (CPU; the largest step, a minute or two the first time)"
  pip_install "torch==$TORCH"
fi
say "installing gradtrace (editable, with its test tools: pytest, ruff)"
pip_install -e ".[test]"
"$VPY" -c 'import gradtrace' >/dev/null
if ! command -v dot >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Graphviz (apt-get) to render SVG/PNG"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz) >/dev/null 2>&1 || true
  fi
  command -v dot >/dev/null 2>&1 || echo "note: Graphviz's 'dot' is not installed: graph.dot is written, SVG/PNG need 'apt-get install graphviz'."
fi
say "done: .venv/bin/gradtrace $("$VPY" -c 'import gradtrace; print(gradtrace.__version__)' 2>/dev/null || true)"
