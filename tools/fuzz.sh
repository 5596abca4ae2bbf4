#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (--config=fuzz, in a separate Bazel output base so the
# gcc build's cache is untouched) and runs each for N seconds (default 10) on a fresh corpus
# seeded from the repository's own data. Each crash is printed with its reproducer and log; the
# last line is always `fuzz: N passed, M failed` (tools/test.sh counts it), non-zero if M > 0.
set -euo pipefail
cd "$(dirname "$0")/.."
export HOME="${HOME:-/root}"  # CI may start without it; Bazel needs it
seconds="${1:-10}"
bash tools/setup.sh
base="${PALISADE_FUZZ_OUTPUT_BASE:-$HOME/.cache/palisade-fuzz}"
targets=(line_parser_fuzz json_parser_fuzz rule_pack_fuzz cloudflare_response_fuzz feed_parser_fuzz
  logpush_body_fuzz set_dfa_fuzz)
bazel --output_base="$base" build --config=fuzz --symlink_prefix=/ \
  $(printf '//tests/fuzz:%s ' "${targets[@]}") >&2
bin=$(bazel --output_base="$base" info --config=fuzz bazel-bin 2>/dev/null)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/line_parser_fuzz" "$work/rule_pack_fuzz" "$work/cloudflare_response_fuzz" \
  "$work/feed_parser_fuzz" "$work/json_parser_fuzz" "$work/logpush_body_fuzz" "$work/set_dfa_fuzz"
# JSON records: the pack and test-log lines of the JSON formats.
grep -h '^{' rules/testlogs/cloudflare-edge.log | split -l 1 - "$work/json_parser_fuzz/rec"
cp services/feeds/testdata/* "$work/feed_parser_fuzz/"
# Logpush bodies: a byte choosing the read sizes, then a gzipped upload / the check upload.
{ printf '\007'; grep -h '^{' rules/testlogs/cloudflare-edge.log | gzip -c; } \
  >"$work/logpush_body_fuzz/upload"
{ printf '\001'; printf '{"content":"test","filename":"test.txt"}' | gzip -c; } \
  >"$work/logpush_body_fuzz/check"
head -200 tests/testdata/sample_auth.log | split -l 1 - "$work/line_parser_fuzz/auth"
head -200 tests/testdata/sample_access.log | split -l 1 - "$work/line_parser_fuzz/access"
# The packs' test logs: every format's lines, raw services' own stamps among them.
grep -hv '^#' rules/testlogs/*.log | split -a 4 -l 1 - "$work/line_parser_fuzz/pack"
printf '2015-10-07  8:25:38 0 [Warning] Access denied\n@400000004c91b044077a9e94 x\n1386543323.000 x\n' \
  | split -l 1 - "$work/line_parser_fuzz/stamp"
cp rules/*.textproto tests/e2e/testdata/*.textproto "$work/rule_pack_fuzz/"
# SetDfa against RE2::Set: an anchoring byte, patterns, and a line for them to read.
printf '\001Failed password for (?:invalid user )?\\S+ from (?P<ip>[0-9.]+) port \\d+ ssh2$\n(?i)^invalid user .* from [0-9.]+\nFailed password for root from 192.0.2.7 port 22 ssh2' \
  >"$work/set_dfa_fuzz/sshd"
printf '\000(?:a|b)*c{2,4}$\n[^x]+y?\n\\pL\\d\nab1cc' >"$work/set_dfa_fuzz/small"
printf '\000{"success":true,"errors":[],"messages":[],"result":[{"id":"a","configuration":{"target":"ip","value":"1.2.3.4"}}],"result_info":{"page":1,"total_pages":1}}' \
  >"$work/cloudflare_response_fuzz/ok"
printf '\006{"success":false,"errors":[{"code":971,"message":"wait"}],"result":null}' \
  >"$work/cloudflare_response_fuzz/throttled"
status=0
failures=0
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${seconds}s" >&2
  if ! "$bin/tests/fuzz/$t" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$work/$t-" "$work/$t" 2>"$work/$t.log"; then
    echo "fuzz: $t FAILED; reproducer and log:" >&2
    ls "$work/$t-"* >&2 || true
    tail -40 "$work/$t.log" >&2
    status=1
    failures=$((failures + 1))
  fi
  # A crash may leave no final stats: that must not end the run before the summary.
  { grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$work/$t.log" || true; } |
    sed "s/^/  $t: /" >&2
done
echo "fuzz: $((${#targets[@]} - failures)) passed, ${failures} failed"
exit "$status"
