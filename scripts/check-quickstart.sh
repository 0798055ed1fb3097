#!/usr/bin/env bash
# Tries the README's quick start as a new user would, in a fresh copy of this checkout
# (its tracked files and untracked, not ignored ones: no .venv, no gradtrace-out), and
# fails unless
#   1. every step is announced as it starts (setup.sh's and quickstart.sh's lines),
#   2. no pip "WARNING: Location ... is ignored" line reaches the user,
#   3. the README's first command after set-up (the line after `source .venv/bin/activate`
#      in the README) works as written, in a shell where that line was run.
# About two minutes, most of it installing torch into the new .venv. KEEP=1 keeps the copy.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gradtrace-quickstart.XXXXXX")
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
failures=0
fail() { echo "check-quickstart: FAIL: $*"; failures=$((failures + 1)); }

echo "check-quickstart: copying the checkout to $WORK/clone"
mkdir "$WORK/clone"
(cd "$ROOT" && git ls-files -z -co --exclude-standard | tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$WORK/clone"
cd "$WORK/clone"

# pip warns "Location ... is ignored" for each find-links folder of its configuration that
# does not exist, on every install. Some machines have such a folder and some do not, so
# one is added (after the configured ones, which still serve the wheels): every machine
# then shows whether the quick start keeps that noise from the user.
configured=$(python3 -m pip config get global.find-links 2>/dev/null || true)
export PIP_FIND_LINKS="${configured:+$configured }$WORK/no-such-wheel-folder"

start=$(date +%s)
echo "check-quickstart: running bash scripts/quickstart.sh"
bash scripts/quickstart.sh > "$WORK/quickstart.log" 2>&1
rc=$?
echo "check-quickstart: quickstart exit $rc in $(( $(date +%s) - start ))s"
[ "$rc" -eq 0 ] || { fail "scripts/quickstart.sh exited $rc"; tail -20 "$WORK/quickstart.log"; }

for step in "setup: creating .venv" "setup: installing torch 2.13.0" "setup: installing gradtrace" \
            "quickstart: tracing examples/autograd.py"; do
  grep -qF "$step" "$WORK/quickstart.log" || fail "step not announced: '$step'"
done
if grep -n "WARNING: Location\|is ignored: it is neither" "$WORK/quickstart.log"; then
  fail "pip's location warnings reached the user (lines above)"
fi

# The README's quick start says `source .venv/bin/activate`, then its first command.
first=$(awk '/^source \.venv\/bin\/activate/ { want = 1; next }
             want && /^[a-z]/ { sub(/[ \t]+#.*/, ""); print; exit }' "$ROOT/README.md")
if [ -z "$first" ]; then
  fail "README.md has no command after 'source .venv/bin/activate'"
else
  echo "check-quickstart: README's first command after set-up: $first"
  if ! out=$(bash -c "source .venv/bin/activate && $first" 2>&1); then
    fail "'$first' failed:"; echo "$out" | tail -10
  elif [ -z "$out" ]; then
    fail "'$first' printed nothing"
  fi
fi

if [ "$failures" -eq 0 ]; then
  echo "check-quickstart: ok (every step announced, no pip location warnings, '$first' works)"
fi
[ "$failures" -eq 0 ]
