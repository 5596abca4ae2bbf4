#!/usr/bin/env bash
# Sets up (Debian packages), builds and runs every test: `bazel test //...`.
# Ends with the plain summary line "N passed, N failed" and bazel's exit code.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit 1

log=$(mktemp)
bazel test //... "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log" || true)
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE)' "$log" || true)
rm -f "$log"
echo "tests: ${passed} passed, ${failed} failed"
exit "$rc"
