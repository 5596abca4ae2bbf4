#!/usr/bin/env bash
# palisadectl replay as a user runs it: outside the source tree (the error says where it looked
# for packs), with a real config (its cidr_sets let the cloudflare-audit pack load), with
# --batch_lines (the result does not depend on it), and with stale detections told.
set -euo pipefail
ctl="$PWD/services/cli/palisadectl"
src="$PWD"
work="${TEST_TMPDIR:-$(mktemp -d)}"
fail() { echo "FAIL: $*" >&2; exit 1; }
# Output is searched with here-strings, not `echo "$out" | grep -q`: bash's echo writes a line
# at a time, grep -q exits at its match, and under pipefail the SIGPIPE of a line still to
# come failed the check (1 run in many on a busy machine).

cd "$work"  # no ./rules here
if out=$("$ctl" replay "$src/tests/testdata/sample_auth.log" 2>&1); then
  fail "replay without packs succeeded: $out"
fi
grep -q "looked for sshd.textproto in /usr/share/palisade/rules" <<<"$out" || fail "$out"
grep -q -- "--config" <<<"$out" || fail "the error does not say what to give: $out"

# --rules_dir, and the result for several batch sizes.
ref=""
for b in 1 7 1000; do
  got=$("$ctl" replay "$src/tests/testdata/sample_auth.log" --rules_dir="$src/rules" \
        --batch_lines="$b" --json | python3 -c '
import json, sys
print(sorted((d.get("rule_id", d.get("ruleId")), d["target"]["value"], d["start"], d["expiry"])
             for d in map(json.loads, sys.stdin)))')
  [ "$got" != "[]" ] || fail "no decisions with --batch_lines=$b"
  [ -z "$ref" ] || [ "$got" = "$ref" ] || fail "--batch_lines=$b changed the decisions"
  ref="$got"
done

# --config: the deploy config's packs, including cloudflare-audit and its CIDR set.
"$ctl" replay "$src/tests/testdata/sample_auth.log" --rules="$src/rules/cloudflare-audit.textproto" \
  >"$work/audit.out" 2>&1 && fail "cloudflare-audit loaded without its CIDR set"
grep -q "cloudflare_token_ips" "$work/audit.out" || fail "$(cat "$work/audit.out")"
out=$("$ctl" replay "$src/tests/testdata/sample_auth.log" --config="$src/deploy/palisade.textproto")
grep -q "cloudflare-token-misuse" <<<"$out" || fail "cloudflare-audit's rule not loaded: $out"
grep -q "decisions: [1-9]" <<<"$out" || fail "$out"

# The decisions a replay makes are fed back to the recidive pack, as the daemon's are (replay
# builds the Sets of the format it reads and of the decisions).
for i in $(seq 10 40); do
  echo "Mar  3 12:00:$i h sshd[$i]: Failed password for root from 203.0.113.9 port 10$i ssh2"
done >"$work/recidive.log"
out=$("$ctl" replay "$work/recidive.log" --time_zone=UTC \
      --rules="$src/rules/sshd.textproto,$src/rules/recidive.textproto")
grep -Eq "^recidive +[1-9]" <<<"$out" || fail "the decisions did not reach recidive: $out"

# A yearless log from a leap year, replayed later: --reference_time gives its year (Feb 29
# parses), and a bad value is refused by name. Without it, no year puts Feb 29 near now.
{
  echo "Feb 28 23:59:00 h sshd[1]: Accepted publickey for a from 198.51.100.1 port 1 ssh2"
  for i in 0 1 2 3 4; do
    echo "Feb 29 00:00:0$i h sshd[1]: Failed password for root from 203.0.113.9 port 10$i ssh2"
  done
} >"$work/leap.log"
out=$("$ctl" replay "$work/leap.log" --rules="$src/rules/sshd.textproto" --time_zone=UTC \
      --reference_time=2024-03-31T00:00:00Z 2>&1)
grep -q "replayed 6 lines (0 malformed" <<<"$out" || fail "$out"
grep -q "decisions: [1-9]" <<<"$out" || fail "$out"
out=$("$ctl" replay "$work/leap.log" --rules="$src/rules/sshd.textproto" --time_zone=UTC \
      --reference_time=yesterday 2>&1) && fail "a bad --reference_time was taken: $out"
grep -q 'reference_time "yesterday" is not an RFC 3339 time' <<<"$out" || fail "$out"

# A line far older than the one before it: stale, reported, not a decision.
{
  echo "Mar  3 15:00:00 h sshd[1]: Accepted publickey for a from 198.51.100.1 port 1 ssh2"
  for i in 0 1 2 3 4; do
    echo "Mar  3 12:00:0$i h sshd[1]: Failed password for root from 203.0.113.9 port 10$i ssh2"
  done
} >"$work/stale.log"
out=$("$ctl" replay "$work/stale.log" --rules_dir="$src/rules" --time_zone=UTC)
grep -q "decisions: 0" <<<"$out" || fail "$out"
grep -q "stale: 1 detection" <<<"$out" || fail "$out"
grep -q "203.0.113.9" <<<"$out" || fail "$out"

# --config: its engine section applies as in palisaded (here session_ttl): two connections whose
# address-less disconnect comes 5 minutes after their "Connection from" make a decision with the
# default ttl (10 minutes), none when sessions live 60 s.
{
  echo "Mar  3 12:00:00 h sshd[100]: Connection from 203.0.113.7 port 1000"
  echo "Mar  3 12:05:00 h sshd[100]: Disconnecting: Too many authentication failures [preauth]"
  echo "Mar  3 12:10:00 h sshd[101]: Connection from 203.0.113.7 port 1001"
  echo "Mar  3 12:15:00 h sshd[101]: Disconnecting: Too many authentication failures [preauth]"
} >"$work/session.log"
echo "rule_files: \"$src/rules/sshd.textproto\" time_zone: \"UTC\"" >"$work/default.textproto"
{ cat "$work/default.textproto"; echo 'engine { session_ttl { seconds: 60 } }'; } \
  >"$work/ttl.textproto"
out=$("$ctl" replay "$work/session.log" --config="$work/default.textproto")
grep -q "decisions: 1," <<<"$out" || fail "default session_ttl: $out"
out=$("$ctl" replay "$work/session.log" --config="$work/ttl.textproto")
grep -q "decisions: 0," <<<"$out" || fail "the config's session_ttl did not apply: $out"

# Malformed lines are told with --json too (on stderr: stdout holds the decisions), and a
# replay where no line parsed fails, in both modes.
{
  echo "this is not syslog"
  echo "Mar  3 12:00:00 h sshd[1]: Failed password for root from 203.0.113.9 port 1 ssh2"
} >"$work/some_bad.log"
"$ctl" replay "$work/some_bad.log" --rules_dir="$src/rules" --time_zone=UTC --json \
  >"$work/out" 2>"$work/err" || fail "a replay with one good line failed: $(cat "$work/err")"
grep -q "replayed 2 lines (1 malformed, 0 cut, 1 matched)" "$work/err" \
  || fail "--json summary: $(cat "$work/err")"
[ ! -s "$work/out" ] || fail "--json printed more than the decisions: $(cat "$work/out")"
# Lines with no time the format reads are told: they replay at the clock, as one instant.
printf 'order 1 refused\n2026-03-03T12:00:00Z order 2 refused\n' >"$work/untimed.log"
"$ctl" replay "$work/untimed.log" --rules_dir="$src/rules" --format=raw >"$work/out" \
  2>"$work/err" || fail "replay of a raw log failed: $(cat "$work/err")"
grep -q "replay: 1 of 2 lines had no time of their own in format raw" "$work/err" \
  || fail "untimed lines were not told: $(cat "$work/err")"
"$ctl" replay "$work/untimed.log" --rules_dir="$src/rules" --format=raw --json >"$work/out" \
  2>"$work/err" || fail "replay --json of a raw log failed: $(cat "$work/err")"
grep -q "replay: 1 of 2 lines had no time of their own in format raw" "$work/err" \
  || fail "--json: untimed lines were not told: $(cat "$work/err")"
[ ! -s "$work/out" ] || fail "--json printed more than the decisions: $(cat "$work/out")"
"$ctl" replay "$work/some_bad.log" --rules_dir="$src/rules" --time_zone=UTC >"$work/out" \
  2>"$work/err" || fail "$(cat "$work/err")"
grep -q "had no time of their own" "$work/err" && fail "timed lines were told as untimed: $(cat "$work/err")"
printf 'not syslog\nnor this\n' >"$work/all_bad.log"
for mode in --json --nojson; do
  "$ctl" replay "$work/all_bad.log" --rules_dir="$src/rules" "$mode" >"$work/out" 2>"$work/err" \
    && fail "replay $mode of lines none of which parsed exited 0: $(cat "$work/out" "$work/err")"
  grep -q "none of the 2 lines parsed as syslog" "$work/err" || fail "$mode: $(cat "$work/err")"
done
echo PASS
