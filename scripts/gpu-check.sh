#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and a CUDA build of torch: replay the examples on CPU against CUDA and
# against data-parallel ranks (one per GPU over NCCL when there are two or more GPUs, else
# sharing one GPU through gloo), replay the CUDA causes the replay must explain (TF32, a
# non-deterministic index_add_), then run `benchmarks/bench.py --device cuda`. Everything
# goes to one log, $OUT/gpu-check.log. Budget: under 8 minutes. Results go into docs/gpu.md.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${OUT:-gradtrace-out/gpu-check}
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
exec > >(tee "$LOG") 2>&1  # one log of everything below
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
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
verdicts=()
causes=()
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
# The CUDA causes the replay explains: each report's "Likely cause" paragraph is kept.
mkdir -p "$OUT/scripts"
cat > "$OUT/scripts/tf32.py" <<'EOF'
import torch

torch.backends.cuda.matmul.allow_tf32 = True
torch.manual_seed(0)
a = torch.randn(256, 1024, device="cuda")
b = torch.randn(1024, 256, device="cuda")
c = a @ b
EOF
cat > "$OUT/scripts/index_add.py" <<'EOF'
import torch

torch.manual_seed(0)
v = torch.randn(1_000_000, device="cuda") * 1000
idx = torch.randint(0, 3, (1_000_000,), device="cuda")
acc = torch.zeros(3, device="cuda").index_add_(0, idx, v)
EOF
cause() {  # name, then replay arguments: the verdict and the "Likely cause" paragraph
  local name=$1; shift
  run "$name" "$@"
  causes+=("$name: $(grep -m1 -A2 '^### Likely cause' "$OUT/$name/report.md" 2>/dev/null | tail -1)")
}
cause tf32-cpu-cuda       --on cpu --on cuda "$OUT/scripts/tf32.py"
cause index-add-cpu-cuda  --on cpu --on cuda "$OUT/scripts/index_add.py"
causes+=("dp-sum-cpu-ddp2: $(grep -m1 -A2 '^### Likely cause' "$OUT/dp-sum-cpu-ddp2/report.md" 2>/dev/null | tail -1)")
if [ "$GPUS" -ge 2 ]; then  # one rank per GPU over NCCL
  run dp-nccl-cpu-ddp2    --on cpu --on ddp:2 --values all examples/data_parallel.py
fi
echo
echo "== verdicts ($(date -u +%Y-%m-%d), $(( $(date +%s) - START ))s so far; reports under $OUT/<name>/report.md)"
for v in "${verdicts[@]}"; do echo "$v"; done
echo "== ddp placement ($GPUS GPU(s)): $(grep -m1 '^ddp:2: ' "$OUT/dp-cpu-ddp2/report.md" 2>/dev/null)"
echo "== expected: the first four agree or diverge only within float32 noise (see each report);"
echo "   dp-cpu-ddp2 agrees, dp-sum names a factor near 2, dp-bn diverges at the batch norm."
echo "== likely causes (expected: tf32 names TF32 and confirms it; index-add names a non-deterministic"
echo "   kernel; dp-sum names the summed loss and confirms it):"
for c in "${causes[@]}"; do echo "$c"; done
echo
echo "== device statistics, value copies and op times on CUDA (tests/record: test_device_stats, test_devicecopy, test_timing)"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/record/test_device_stats.py tests/record/test_devicecopy.py \
  tests/record/test_timing.py -k "cuda" 2>&1 | tail -3
echo
echo "== benchmarks/bench.py --device cuda"
timeout 300 "$PY" benchmarks/bench.py --device cuda --reps 5 --json "$OUT/bench-cuda.json" \
  --markdown "$OUT/bench-cuda.md" 2>&1 | grep -v 'profiler_st'
echo
LEFT=$(( 470 - ($(date +%s) - START) ))
if [ "$LEFT" -gt 60 ]; then
  echo "== CUDA tests of the suite (${LEFT}s left):"
  timeout "$LEFT" "$PY" -m pytest -q -p no:cacheprovider tests/replay/test_replay.py tests/analyze/test_causes.py \
    tests/programs/test_bench_gpu.py \
    -k "cuda" 2>&1 | tail -3
else
  echo "== CUDA tests of the suite: skipped, ${LEFT}s left of the 8-minute budget"
fi
echo "== gpu-check: $(( $(date +%s) - START ))s in all; log $LOG"
