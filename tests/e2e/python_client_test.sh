#!/usr/bin/env bash
# The Python example client (examples/python) against a real palisaded: stubs generated from
# the protos now, a log file shipped, the decisions it caused received over Events.Watch, and
# the same decisions listed by palisadectl.
set -euo pipefail
daemon_bin=services/server/palisaded
ctl_bin=services/cli/palisadectl
work="${TEST_TMPDIR:-$(mktemp -d)}"
fail() { echo "FAIL: $*" >&2; exit 1; }
python=/usr/bin/python3
"$python" -c 'import grpc, google.protobuf' || fail "python3-grpcio / python3-protobuf missing"

bash examples/python/gen_stubs.sh "$work/stubs"

"$daemon_bin" --rules_dir=rules --grpc_listen=127.0.0.1:0 --metrics_listen=off \
  --port_file="$work/ports" --state_file=:memory: --shutdown_grace=200ms 2>"$work/daemon.log" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1200); do [ -s "$work/ports" ] && break; sleep 0.05; done
[ -s "$work/ports" ] || fail "palisaded did not start: $(cat "$work/daemon.log")"
port=$(sed -n 's/^grpc=//p' "$work/ports")

PYTHONPATH="$work/stubs" "$python" examples/python/palisade_client.py --server="127.0.0.1:$port" \
  --file=tests/testdata/sample_auth.log --format=syslog --now --expect=40 >"$work/client.out" \
  || fail "client: $(cat "$work/client.out")"
cat "$work/client.out"
grep -q 'shipped tests/testdata/sample_auth.log: 3000 lines accepted' "$work/client.out" \
  || fail "ship summary"
created=$(grep -c ' decision created ' "$work/client.out")
[ "$created" -ge 40 ] || fail "only $created decisions seen over Watch"
# Every decision the client saw is one the server lists, and the other way round.
sort -u <(sed -n 's/.* decision created .* id=\([0-9a-f]*\)$/\1/p' "$work/client.out") >"$work/seen"
"$ctl_bin" --server="127.0.0.1:$port" decisions list --json \
  | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p' | sort -u >"$work/listed"
diff "$work/seen" "$work/listed" || fail "Watch and decisions list disagree"
echo "python client: 1 passed, 0 failed ($created decisions)"
