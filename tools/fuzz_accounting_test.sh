#!/usr/bin/env bash
# tools/test.sh's fuzz step against the real tools/fuzz.sh, with bazel, tools/setup.sh and the
# seven fuzz targets stubbed: the step counts what fuzz.sh counted and names each failed target
# (with what fuzz.sh printed of it) in the report. No Bazel, no fuzzing: run it directly,
#   bash tools/fuzz_accounting_test.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# A tree where tools/fuzz.sh runs: the real script and data, stub setup, bazel and targets.
mkdir -p "$tmp/tree/tools" "$tmp/path" "$tmp/bin/tests/fuzz"
cp "$root/tools/fuzz.sh" "$tmp/tree/tools/"
echo 'exit 0' >"$tmp/tree/tools/setup.sh"
for d in rules services tests; do ln -s "$root/$d" "$tmp/tree/$d"; done
cat >"$tmp/path/bazel" <<EOF
#!/usr/bin/env bash
case " \$* " in
  *" build "*) exit "\${FAKE_BUILD_RC:-0}" ;;
  *" info "*) echo "$tmp/bin" ;;
esac
EOF
chmod +x "$tmp/path/bazel"
# A target named in FAKE_CRASH crashes before libFuzzer's final stats; the others pass.
for t in line_parser_fuzz json_parser_fuzz rule_pack_fuzz cloudflare_response_fuzz \
    feed_parser_fuzz logpush_body_fuzz set_dfa_fuzz; do
  cat >"$tmp/bin/tests/fuzz/$t" <<EOF
#!/usr/bin/env bash
prefix=\$(sed -n 's/^-artifact_prefix=//p' <<<"\$(printf '%s\n' "\$@")")
if [[ " \${FAKE_CRASH:-} " == *" $t "* ]]; then
  echo "==1== ERROR: libFuzzer: deadly signal in $t" >&2
  : >"\${prefix}crash-0"
  exit 1
fi
printf 'stat::number_of_executed_units: 1000\nstat::peak_rss_mb: 40\n' >&2
EOF
  chmod +x "$tmp/bin/tests/fuzz/$t"
done

# test.sh's own fuzz step (the lines from `echo "== fuzz"` to its closing `fi`), and the
# function it calls, run as test.sh runs them.
step=$(sed -n '/^  echo "== fuzz"$/,/^fi$/p' "$root/tools/test.sh" | sed '$d')
[ -n "$step" ] || fail "no fuzz step found in tools/test.sh"
funcs=$(sed -n '/^count_fuzz() {$/,/^}$/p' "$root/tools/test.sh")
run_step() {  # runs the step with the environment in "$@"; sets passed, failed, rc, report
  # shellcheck disable=SC2034  # key and log: the step's
  passed=0 failed=0 rc=0 report="" key=test log="$tmp/log"
  eval "$funcs"
  (
    cd "$tmp/tree"
    export PATH="$tmp/path:$PATH" HOME="$tmp"
    for kv in "$@"; do export "${kv?}"; done
    eval "$step" >"$tmp/out" 2>&1
    printf 'passed=%q failed=%q rc=%q report=%q\n' "$passed" "$failed" "$rc" "$report" \
      >"$tmp/vars"
  ) || fail "the fuzz step exited: $(cat "$tmp/out")"
  # shellcheck disable=SC1091
  source "$tmp/vars"
}

run_step FAKE_CRASH=
[ "$passed/$failed/$rc" = "7/0/0" ] || fail "all pass: passed/failed/rc $passed/$failed/$rc"
[ -z "$report" ] || fail "all pass: report: $report"
grep -qx 'fuzz: 7 passed, 0 failed' "$tmp/log" \
  || fail "all pass: fuzz.sh's summary: $(tail "$tmp/log")"

run_step FAKE_CRASH="json_parser_fuzz set_dfa_fuzz"
[ "$passed/$failed/$rc" = "5/2/1" ] || fail "two crash: passed/failed/rc $passed/$failed/$rc"
grep -qx 'fuzz: 5 passed, 2 failed' "$tmp/log" \
  || fail "two crash: fuzz.sh's summary: $(tail "$tmp/log")"
for t in json_parser_fuzz set_dfa_fuzz; do
  grep -q "^== failed: fuzz target $t " <<<"$report" || fail "two crash: $t not reported: $report"
  grep -q "deadly signal in $t" <<<"$report" || fail "two crash: no log tail of $t: $report"
done
if grep -q 'line_parser_fuzz' <<<"$report"; then fail "two crash: a passing target reported"; fi

run_step FAKE_BUILD_RC=1
[ "$passed/$failed/$rc" = "0/1/1" ] || fail "build fails: passed/failed/rc $passed/$failed/$rc"
grep -q 'tools/fuzz.sh ended without its summary' <<<"$report" || fail "build fails: $report"

echo "fuzz accounting: 1 passed, 0 failed"
