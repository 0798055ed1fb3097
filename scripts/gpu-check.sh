#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and a CUDA build of torch: replay the examples on CPU against CUDA and
# against two data-parallel ranks that share one GPU through gloo, and print a short
# verdict per replay. Budget: under 8 minutes. Results go into docs/gpu.md.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
# The GPU machine has torch (with CUDA), networkx, click, rich, numpy and safetensors,
# and no network: gradtrace runs from this checkout; pydot, when missing, comes from
# wheels carried in .whl/ (see the device notes) or from a package index if one answers.
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu-check: $PY sees no CUDA GPU (torch.cuda.is_available() is False)"; exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import pydot" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/gradtrace-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/gradtrace-site"
  else
    "$PY" -m pip install -q pydot || echo "gpu-check: pydot is missing; DOT output will fail"
  fi
fi
"$PY" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
PY
OUT=${OUT:-gradtrace-out/gpu-check}
mkdir -p "$OUT"
verdicts=()
run() {  # name, then replay arguments
  local name=$1; shift
  local t0=$(date +%s)
  timeout 150 "$PY" -m gradtrace replay -o "$OUT/$name" --timeout 120 "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local v="agrees"; [ $rc -eq 1 ] && v="DIVERGES"; [ $rc -eq 2 ] && v="USAGE ERROR"; [ $rc -ge 3 ] && v="FAILED (rc $rc)"
  local first=$(grep -m1 -A2 '^### First divergence' "$OUT/$name/report.md" 2>/dev/null | tail -1)
  verdicts+=("$(printf '%-28s %-12s %4ss  %s' "$name" "$v" "$(( $(date +%s) - t0 ))" "$first")")
}
run mlp-cpu-cuda      --on cpu --on cuda --values all examples/train_mlp.py --steps 3
run tensors-cpu-cuda  --on cpu --on cuda examples/tensors.py
run autograd-cpu-cuda --on cpu --on cuda examples/autograd.py
run mlp-cpu-cpu64-cuda --on cpu --on cpu64 --on cuda --values all examples/train_mlp.py --steps 2
run dp-cpu-ddp2       --on cpu --on ddp:2 --values all examples/data_parallel.py
run dp-sum-cpu-ddp2   --on cpu --on ddp:2 examples/data_parallel.py --reduction sum
run dp-bn-cpu-ddp2    --on cpu --on ddp:2 --values all examples/data_parallel.py --batchnorm
echo
echo "== verdicts ($(date -u +%Y-%m-%d), $(( $(date +%s) - START ))s in all; reports under $OUT/<name>/report.md)"
for v in "${verdicts[@]}"; do echo "$v"; done
echo "== expected: the first four agree or diverge only within float32 noise (see each report);"
echo "   dp-cpu-ddp2 agrees, dp-sum names a factor near 2, dp-bn diverges at the batch norm."
echo "== CUDA tests of the suite:"
timeout 200 "$PY" -m pytest -q tests/test_replay.py -k "cuda" 2>&1 | tail -3
