#!/usr/bin/env bash
# Sets up (Debian packages), builds and runs every test:
#   1. bazel test //...                      (gcc, the build everyone uses)
#   2. bazel test --config=asan //...        (AddressSanitizer + UBSan, own output base)
#   3. tools/fuzz.sh 10                       (libFuzzer targets, clang, 10 s each)
# and, after the first, tools/fuzz_accounting_test.sh (this script's fuzz accounting, stubbed).
# PALISADE_QUICK=1 runs only the first. Ends with "N passed, N failed" and a non-zero exit
# when anything failed; just before that line, each failed test's name and the end of its log
# (CI shows only the end of the output).
set -uo pipefail
cd "$(dirname "$0")/.."
export HOME="${HOME:-/root}"  # CI may start without it; Bazel needs it
bash tools/setup.sh || exit 1

# Convenience symlinks left by a build in another output base would look like packages.
for link in bazel-*; do [ -L "$link" ] && rm -f "$link"; done

passed=0
failed=0
# Bazel's per-target result lines.
passed_line='^//[^ ]+ +(\(cached\) )?PASSED'
failed_line='^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE)'
count() {  # counts the result lines in $1
  passed=$((passed + $(grep -cE "$passed_line" "$1" || true)))
  failed=$((failed + $(grep -cE "$failed_line" "$1" || true)))
}
report=""
# Appends to $report each failed test in log $1 (run $3) and the end of its log (testlogs $2).
keep_failures() {
  local label path
  for label in $(grep -E "$failed_line" "$1" | awk '{print $1}'); do
    path=${label#//}
    path=${path/://}
    report+="== failed: ${label} ($3), the end of $2/${path}/test.log"$'\n'
    report+="$(tail -n 40 "$2/${path}/test.log" 2>&1)"$'\n'
  done
}
# Adds tools/fuzz.sh's own counts in log $1 (its `fuzz: N passed, M failed` line) and appends to
# $report each failed target with what fuzz.sh printed of it; with no such line (setup or the
# build failed) one failure and the end of the log.
count_fuzz() {
  local summary t start
  summary=$(grep -E '^fuzz: [0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1)
  if [ -z "$summary" ]; then
    failed=$((failed + 1))
    report+="== failed: tools/fuzz.sh ended without its summary, the end of its output"$'\n'
    report+="$(tail -n 40 "$1")"$'\n'
    return
  fi
  passed=$((passed + $(awk '{print $2}' <<<"$summary")))
  failed=$((failed + $(awk '{print $4}' <<<"$summary")))
  for t in $(sed -n 's/^fuzz: \([A-Za-z0-9_]*\) FAILED; reproducer and log:$/\1/p' "$1"); do
    start="fuzz: $t FAILED; reproducer and log:"
    report+="== failed: fuzz target $t (fuzz), what tools/fuzz.sh printed of it"$'\n'
    report+="$(awk -v start="$start" '$0 == start { on = 1; next } on && /^fuzz: / { exit } on' \
      "$1" | tail -n 40)"$'\n'
  done
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0

echo "== bazel test //..."
bazel test //... "$@" 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
count "$log"
keep_failures "$log" "$(bazel info bazel-testlogs 2>/dev/null)" "gcc"

# This script's own fuzz accounting, against tools/fuzz.sh with bazel stubbed (no build).
echo "== tools/fuzz_accounting_test.sh"
if bash tools/fuzz_accounting_test.sh >"$log" 2>&1; then
  cat "$log"
  passed=$((passed + 1))
else
  cat "$log"
  failed=$((failed + 1))
  rc=1
  report+="== failed: tools/fuzz_accounting_test.sh"$'\n'"$(tail -n 40 "$log")"$'\n'
fi

if [ "${PALISADE_QUICK:-0}" != 1 ]; then
  # Separate output bases, keyed by this checkout, so the three builds never evict each other.
  key=$(pwd | md5sum | cut -c1-10)
  # Not //...: from another output base, the main build's bazel-* symlinks look like packages.
  packages=(//deploy/... //proto/... //rules/... //services/... //tests/... //third_party/...)
  # --build_tests_only: the first run already built every binary and benchmark; under ASan only
  # the tests (and what they run) are built, which keeps CI within its limit.
  echo "== bazel test --config=asan ${packages[*]}"
  bazel --output_base="$HOME/.cache/palisade-asan-$key" test --config=asan --symlink_prefix=/ \
    --build_tests_only \
    "${packages[@]}" "$@" 2>&1 |
    tee "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  count "$log"
  keep_failures "$log" "$(bazel --output_base="$HOME/.cache/palisade-asan-$key" info --config=asan \
    bazel-testlogs 2>/dev/null)" "asan"

  echo "== fuzz"
  PALISADE_FUZZ_OUTPUT_BASE="$HOME/.cache/palisade-fuzz-$key" bash tools/fuzz.sh 10 2>&1 |
    tee "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  count_fuzz "$log"
fi

printf '%s' "$report"
echo "tests: ${passed} passed, ${failed} failed"
exit "$rc"
