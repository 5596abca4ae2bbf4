#!/usr/bin/env bash
# The bouncer API's figure (issue 16): one startup=true pull of N active decisions from a real
# palisaded (default 100,000: a pushed feed of N public addresses, every other one so nothing
# merges into a range), its bytes and time as curl sees them, and palisaded's VmRSS before,
# at its peak while serving (sampled every 5 ms) and after. Run by hand, not a test:
#   bazel build -c opt //services/server:palisaded //services/cli:palisadectl
#   tests/bench/bouncer_startup_bench.sh [N]
# (BIN=dir overrides where the binaries are; default bazel-out/k8-opt/bin.)
set -euo pipefail
root=${BIN:-bazel-out/k8-opt/bin}
daemon_bin=$root/services/server/palisaded
ctl_bin=$root/services/cli/palisadectl
n=${1:-100000}
work=$(mktemp -d)
python3 - "$n" >"$work/feed.txt" <<'PY'
import sys
n=int(sys.argv[1])
for i in range(n):
    k=2*i  # every other address: nothing merges into a range
    print(f"20.{(k>>16)&255}.{(k>>8)&255}.{k&255}")
PY
cat >"$work/p.textproto" <<CONF
rule_files: "$PWD/rules/sshd.textproto"
feed_edge_max_entries: 1000000
feeds { name: "bench" format: FEED_FORMAT_PLAIN to_edge: true }
bouncer_api { listen: "127.0.0.1:0" }
CONF
"$daemon_bin" --config="$work/p.textproto" --grpc_listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --port_file="$work/ports" --state_file="$work/state.db" 2>"$work/daemon.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1200); do [ -s "$work/ports" ] && break; sleep 0.05; done
port=$(sed -n 's/^grpc=//p' "$work/ports"); bport=$(sed -n 's/^bouncer=//p' "$work/ports")
ctl() { "$ctl_bin" --server="127.0.0.1:$port" "$@"; }
ctl feeds push bench "$work/feed.txt" --format=plain >/dev/null
for _ in $(seq 1200); do
  a=$(ctl status | sed -n 's/^decisions: \([0-9]*\) active/\1/p'); [ "$a" -ge "$n" ] && break; sleep 0.5
done
echo "active decisions: $a"
key=$(ctl bouncers add bench 2>/dev/null)
rss() { awk '/^VmRSS/{print $2}' /proc/$pid/status; }
before=$(rss)
peak=$before
( while :; do r=$(rss); echo "$r"; sleep 0.005; done ) >"$work/rss" &
sampler=$!
curl -s -o "$work/body" -w 'status %{http_code}, %{size_download} bytes, %{time_total} s total, first byte %{time_starttransfer} s\n' \
  -H "X-Api-Key: $key" "http://127.0.0.1:$bport/v1/decisions/stream?startup=true"
kill $sampler; wait $sampler 2>/dev/null || true
peak=$(sort -n "$work/rss" | tail -1)
after=$(rss)
echo "palisaded VmRSS: before ${before} kB, peak while serving ${peak} kB, after ${after} kB"
python3 -c "import json,sys; d=json.load(open('$work/body')); print('new:', len(d['new'] or []), 'deleted:', len(d['deleted'] or []))"
# A second pull (stream, nothing changed) for comparison.
curl -s -o /dev/null -w 'next pull: %{size_download} bytes, %{time_total} s\n' -H "X-Api-Key: $key" "http://127.0.0.1:$bport/v1/decisions/stream"
