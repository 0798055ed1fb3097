#!/usr/bin/env bash
# Runs the test suite against one torch release, in its own venv.
#
#   bash scripts/test-torch.sh VERSION [PYTEST ARGS...]
#   bash scripts/test-torch.sh 2.4.1              # whole suite on torch 2.4.1 (our floor)
#   bash scripts/test-torch.sh 2.14.1 -x tests/test_recorder_facts.py
#
# Creates (idempotently) .venv-torch-VERSION with torch==VERSION and gradtrace installed
# editable with its test extras, then runs `python -m pytest -q ARGS` in it (without the -q
# when ARGS set the verbosity). A second run only checks the venv (a few seconds). Exits
# with pytest's status.
#
# torch 2.13.0 is a local CPU wheel; other releases come as CUDA builds (2.14.1 from
# local disk, the rest from PyPI with their nvidia-* packages: about 5 GB per venv and
# two minutes the first time). A CUDA build runs the suite on CPU where there is no GPU.
# numpy: torch releases before 2.3 were built against numpy 1.x, so a venv for those
# pins numpy<2. torch 2.4-2.8 run with numpy 2.x, except that numpy>=2.3 breaks
# torch.tensor(np.bool_(True)) there; TORCH_NUMPY_SPEC='numpy<2.3' (or any spec) sets
# the pin for any version.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [[ ! "$1" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]]; then
  echo "usage: bash scripts/test-torch.sh VERSION [PYTEST ARGS...]   (e.g. 2.4.1)" >&2
  exit 2
fi
VERSION=$1
shift
VENV=.venv-torch-$VERSION
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
VPY=$VENV/bin/python

# numpy<2 for torch<2.3 (built against numpy 1.x); anything newer takes numpy>=1.24 from
# pyproject as usual.
NUMPY_SPEC=${TORCH_NUMPY_SPEC-$("$PY" - "$VERSION" <<'PY'
import sys
major, minor = (int(p) for p in sys.argv[1].split(".")[:2])
print("numpy<2" if (major, minor) < (2, 3) else "")
PY
)}

# pip with its "WARNING: Location ..." lines (from the local find-links) filtered out;
# the status is pip's.
pip_install() {
  "$VPY" -m pip install -q "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
}

venv_ok() {
  "$VPY" - "$VERSION" "$NUMPY_SPEC" <<'PY' 2>/dev/null
import sys
import torch, numpy, pytest, gradtrace  # noqa: F401
want, numpy_spec = sys.argv[1], sys.argv[2]
ok = torch.__version__.split("+")[0] == want
if numpy_spec:
    from pip._vendor.packaging.requirements import Requirement
    ok = ok and Requirement(numpy_spec).specifier.contains(numpy.__version__, prereleases=True)
# the editable install points at this checkout, not another one
ok = ok and gradtrace.__file__.startswith(__import__("os").path.abspath("gradtrace"))
sys.exit(0 if ok else 1)
PY
}

# transformers 5 (the real-program corpus's hf_*.py) needs torch>=2.6; older torch
# releases get transformers 4.
TRANSFORMERS_SPEC=$("$PY" - "$VERSION" <<'PY'
import sys
major, minor = (int(p) for p in sys.argv[1].split(".")[:2])
print("transformers<5" if (major, minor) < (2, 6) else "")
PY
)

# The venv is set up again (a quick pip run when little changed) when pyproject.toml or
# the numpy pin changed since the last set-up, so a new dependency reaches it.
STAMP=$VENV/.gradtrace-setup
want_stamp="$VERSION ${NUMPY_SPEC:-numpy} ${TRANSFORMERS_SPEC:-transformers} $(sha256sum pyproject.toml | cut -c1-16)"

if [ "$(cat "$STAMP" 2>/dev/null)" != "$want_stamp" ] || ! venv_ok; then
  start=$(date +%s)
  echo "test-torch: setting up $VENV (torch==$VERSION${NUMPY_SPEC:+, $NUMPY_SPEC})"
  [ -x "$VPY" ] || "$PY" -m venv "$VENV"
  # One resolve for torch, the project and its test extras, so nothing moves torch.
  pip_install "torch==$VERSION" ${NUMPY_SPEC:+"$NUMPY_SPEC"} ${TRANSFORMERS_SPEC:+"$TRANSFORMERS_SPEC"} -e ".[test]"
  if ! venv_ok; then
    echo "test-torch: $VENV is not usable after install:" >&2
    "$VPY" -c 'import torch, numpy, gradtrace; print("torch", torch.__version__, "numpy", numpy.__version__)' >&2 || true
    exit 1
  fi
  echo "$want_stamp" > "$STAMP"
  echo "test-torch: $VENV ready in $(( $(date +%s) - start ))s ($(du -sh "$VENV" | cut -f1))"
fi

"$VPY" -c 'import sys, torch, numpy; print("test-torch: python", sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__)'
# -q unless the caller set the verbosity (-q twice would hide pytest's closing summary line).
quiet=(-q)
for a in "$@"; do
  case $a in
    -q | -v | --quiet | --verbose | -qq | -vv | --verbosity=*) quiet=() ;;
  esac
done
exec "$VPY" -m pytest "${quiet[@]}" "$@"
