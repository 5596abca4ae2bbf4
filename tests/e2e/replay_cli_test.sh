#!/usr/bin/env bash
# palisadectl replay as a user runs it: outside the source tree (the error says where it looked
# for packs), with a real config (its cidr_sets let the cloudflare-audit pack load), with
# --batch_lines (the result does not depend on it), and with stale detections told.
set -euo pipefail
ctl="$PWD/services/cli/palisadectl"
src="$PWD"
work="${TEST_TMPDIR:-$(mktemp -d)}"
fail() { echo "FAIL: $*" >&2; exit 1; }

cd "$work"  # no ./rules here
if out=$("$ctl" replay "$src/tests/testdata/sample_auth.log" 2>&1); then
  fail "replay without packs succeeded: $out"
fi
echo "$out" | grep -q "looked for sshd.textproto in /usr/share/palisade/rules" || fail "$out"
echo "$out" | grep -q -- "--config" || fail "the error does not say what to give: $out"

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
echo "$out" | grep -q "cloudflare-token-misuse" || fail "cloudflare-audit's rule not loaded: $out"
echo "$out" | grep -q "decisions: [1-9]" || fail "$out"

# The decisions a replay makes are fed back to the recidive pack, as the daemon's are (replay
# builds the Sets of the format it reads and of the decisions).
for i in $(seq 10 40); do
  echo "Mar  3 12:00:$i h sshd[$i]: Failed password for root from 203.0.113.9 port 10$i ssh2"
done >"$work/recidive.log"
out=$("$ctl" replay "$work/recidive.log" --time_zone=UTC \
      --rules="$src/rules/sshd.textproto,$src/rules/recidive.textproto")
echo "$out" | grep -Eq "^recidive +[1-9]" || fail "the decisions did not reach recidive: $out"

# A line far older than the one before it: stale, reported, not a decision.
{
  echo "Mar  3 15:00:00 h sshd[1]: Accepted publickey for a from 198.51.100.1 port 1 ssh2"
  for i in 0 1 2 3 4; do
    echo "Mar  3 12:00:0$i h sshd[1]: Failed password for root from 203.0.113.9 port 10$i ssh2"
  done
} >"$work/stale.log"
out=$("$ctl" replay "$work/stale.log" --rules_dir="$src/rules" --time_zone=UTC)
echo "$out" | grep -q "decisions: 0" || fail "$out"
echo "$out" | grep -q "stale: 1 detection" || fail "$out"
echo "$out" | grep -q "203.0.113.9" || fail "$out"
echo PASS
