#!/usr/bin/env bash
# The main job on embedded defaults: builds palisaded, palisadectl and the local Cloudflare API
# emulator; starts the emulator and palisaded on loopback (shipped sshd, nginx and
# cloudflare-tokens packs; decisions driven to the emulator); ships the bundled sample attack
# logs over gRPC (re-timed so they happened just now); and prints the decisions, the bans that
# appeared at the (emulated) edge, and the metrics. Nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

bazel build //services/server:palisaded //services/cli:palisadectl \
  //tests/cloudflare_fake:cloudflare_emulator
bin=bazel-bin
work=$(mktemp -d)
daemon=""
emulator=""
cleanup() {
  for p in $daemon $emulator; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_file() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done; return 1; }

"$bin/tests/cloudflare_fake/cloudflare_emulator" --port_file="$work/cf.port" \
  --token_file="$work/cf.token" 2>"$work/emulator.log" &
emulator=$!
wait_file "$work/cf.port"
cf_port=$(cat "$work/cf.port")

# The log exists before palisaded starts, as auth.log does on a host: the daemon follows that file
# from its first line, so a rotation right after the first write loses nothing (a file made and
# renamed away between two looks, 50 ms, would be as unseen as it is by tail -F).
: >"$work/auth.log"
cat >"$work/palisade.textproto" <<CONFIG
rule_files: "$PWD/rules/sshd.textproto"
rule_files: "$PWD/rules/nginx.textproto"
rule_files: "$PWD/rules/cloudflare-tokens.textproto"
state_file: "$work/palisade.db"
feeds { name: "drop" format: FEED_FORMAT_SPAMHAUS to_edge: true }
inputs { files { name: "auth" paths: "$work/auth.log" format: "syslog" time_zone: "UTC" } }
cloudflare {
  enabled: true
  api_base: "http://127.0.0.1:$cf_port/client/v4"
  account_id: "0123456789abcdef0123456789abcdef"
  zone_id: "fedcba9876543210fedcba9876543210"
  token_file: "$work/cf.token"
  flush_interval { nanos: 200000000 }
}
CONFIG

"$bin/services/server/palisaded" --config="$work/palisade.textproto" \
  --grpc_listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --port_file="$work/ports" \
  --shutdown_grace=1s &
daemon=$!
wait_file "$work/ports"
grpc_port=$(sed -n 's/^grpc=//p' "$work/ports")
metrics_port=$(sed -n 's/^metrics=//p' "$work/ports")
ctl() { "$bin/services/cli/palisadectl" --server="127.0.0.1:$grpc_port" "$@"; }

# Follow the event stream while the logs go in (one decision's story is shown below).
ctl watch >"$work/watch.out" 2>"$work/watch.err" &
watcher=$!
sleep 0.5

echo
echo "== shipping the sample logs over gRPC"
ctl ship tests/testdata/sample_auth.log --format=syslog --source=auth.log --retime
ctl ship tests/testdata/sample_access.log --format=combined --source=access.log --retime

sleep 2
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
echo
echo "== the event stream (palisadectl watch): $(wc -l <"$work/watch.out") events; one decision's"
echo "   story, joined by its correlation id (line -> detection -> decision -> API call):"
# The correlation id of the first decision (watch's columns: #seq time kind rule id summary).
id=$(awk '$3 == "decision" { print $5; exit }' "$work/watch.out")
if [ -z "$id" ] || [ "$id" = "-" ]; then
  echo "demo: no decision with a correlation id in the event stream:" >&2
  cat "$work/watch.err" "$work/watch.out" >&2
  exit 1
fi
# Its first detection, the decision's creation, and what the edge did with it (the renewals
# and the other rules' detections of the same line would fill the screen).
grep -F -- " $id " "$work/watch.out" |
  awk '$3 == "detection" { if (!d++) print; next }
       $3 == "decision" { if (!c++) print; next }
       { if (o++ < 4) print }'

echo
echo "== a log file palisaded follows itself (inputs { files { ... } }): appended to, then rotated"
fail_lines() {  # IP COUNT: failed passwords stamped now, as sshd writes them
  for i in $(seq "$2"); do
    echo "$(date -u '+%b %e %H:%M:%S') demo sshd[$((4000 + i))]: Failed password for root from $1 port 22 ssh2"
  done
}
fail_lines 203.0.113.201 3 >>"$work/auth.log"
mv "$work/auth.log" "$work/auth.log.1"  # logrotate: rename, then the daemon writes a new file
fail_lines 203.0.113.201 2 >>"$work/auth.log"
for _ in $(seq 100); do
  ctl decisions list --target=203.0.113.201 | grep -q 203.0.113.201 && break
  sleep 0.1
done
ctl decisions list --target=203.0.113.201 | grep 203.0.113.201
curl -s "http://127.0.0.1:$metrics_port/metrics" | grep -E '^palisade_input_(lines|rotations)_total'

echo
echo "== a threat feed (Spamhaus DROP sample), pushed; its ranges go to the IP list"
ctl feeds push drop services/feeds/testdata/drop.txt || true
ctl feeds list

echo
echo "== what palisaded decided"
ctl decisions list --active | tail -8
echo
ctl status

# The blast-radius guard (60 new bans a minute by default) holds the rest of this burst until an
# operator lets it go: do that, as an operator would after reading the status above.
sleep 1
echo
echo "== releasing what the guard held"
ctl actions release

# Let the dispatcher drain its queue to the emulator (list operations take a poll or two).
for _ in $(seq 150); do
  ctl status | grep -q 'actions:   0 pending, 0 held' && break
  sleep 0.2
done

echo
echo "== the edge (Cloudflare API emulator on 127.0.0.1:$cf_port)"
curl -s "http://127.0.0.1:$cf_port/__emulator/state" >"$work/state.json"
python3 - "$work/state.json" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))["result"]
rules = state["access_rules"]
print("IP access rules: %d" % len(rules))
for r in rules[:5]:
    print("  %-18s %-40s %s" % (r["mode"], r["configuration"]["value"], r["notes"]))
if len(rules) > 5:
    print("  ... and %d more" % (len(rules) - 5))
for name, items in state["lists"].items():
    print("IP list %s: %d items, e.g. %s" % (name, len(items), ", ".join(i["ip"] for i in items[:3])))
custom = state["rulesets"]["http_request_firewall_custom"]
if custom:
    for r in custom["rules"]:
        print("custom rule: %s -> %s" % (r["expression"], r["action"]))
print("API calls served: %d, audit log entries: %d" % (state["calls"], state["audit_log_entries"]))
PY

echo
echo "== metrics (http://127.0.0.1:$metrics_port/metrics, excerpt)"
curl -s "http://127.0.0.1:$metrics_port/metrics" |
  grep -E '^palisade_(ingest_lines_received|decisions_active|rules_loaded|actions_total|cloudflare_requests_total|cloudflare_budget_remaining)' |
  sort
