#!/usr/bin/env bash
# Issue 18's gRPC-ingest figure: palisaded with the shipped packs and a state file (SQLite) on
# loopback, load_client shipping 2 streams of generated lines (2 batches of 1,000 in flight per
# stream: the batch `palisadectl ship` sends, ShipOptions::batch_lines, with a narrower window
# than its 8 so that the ack latency stays well inside issue 18's 25 ms). Per round, a fresh
# daemon and state file; prints the client's lines/s and batch-ack p50/p99, palisaded's CPU
# seconds for the load alone (utime + stime from /proc/PID/stat, read once the port is up and
# again after the client is done: start-up excluded), the client's CPU seconds (its corpus
# generation, before its clock, included) and the load average before and after. The load
# client shares the machine's cores with the daemon; so does anything else that runs: look at
# the load average before trusting a round. Not part of CI (it only measures).
#   bash tools/bench_ingest.sh [ROUNDS] [sshd|nginx]          # default 3 sshd
# Environment (optional):
#   LINES=200000   lines per stream.
#   STREAMS=2 IN_FLIGHT=2 BATCH=1000  the client's window (issue 18's figure: the defaults; a
#                  wider window raises throughput and the ack latency with it, Little's law; a
#                  smaller batch pays the daemon's per-batch cost, ~140 us of CPU, more often:
#                  docs/PERFORMANCE.md, "Twenty-fourth pass").
#   BIN=DIR        take palisaded and load_client from DIR/services/server and DIR/tests/bench
#                  instead of building (e.g. a copy of bazel-bin, to compare two trees).
#   WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p"   run palisaded under it
#                  (the profile of the docs: LINES=50000 WRAP=... bash tools/bench_ingest.sh 1).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
kind="${2:-sshd}"
lines="${LINES:-200000}"
streams="${STREAMS:-2}"
in_flight="${IN_FLIGHT:-2}"
batch="${BATCH:-1000}"
case "$kind" in sshd | nginx) ;; *) echo "kind: sshd or nginx, not $kind" >&2; exit 2 ;; esac

if [ -z "${BIN:-}" ]; then
  bazel build -c opt //services/server:palisaded //tests/bench:load_client >&2
  BIN=$(bazel info -c opt bazel-bin 2>/dev/null)
fi
daemon="$BIN/services/server/palisaded"
client="$BIN/tests/bench/load_client"

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

tick=$(getconf CLK_TCK)
# utime + stime of a process in seconds (fields 14 and 15 of /proc/PID/stat; the command name,
# field 2, is cut first since it may hold spaces).
cpu_secs() {
  sed 's/^.*) //' "/proc/$1/stat" | awk -v t="$tick" '{ printf "%.2f", ($12 + $13) / t }'
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "$(nproc) cores; $kind, $streams streams x $lines lines, batch $batch," \
  "$in_flight in flight per stream"
printf '%-5s %10s %9s %9s %13s %13s %-16s %-16s\n' round lines/s p50_ms p99_ms daemon_cpu_s \
  client_cpu_s load_before load_after
for ((r = 1; r <= rounds; r++)); do
  rm -rf "$work/state" && mkdir -p "$work/state"
  # shellcheck disable=SC2086  # WRAP is a command line, split on purpose.
  ${WRAP:-} "$daemon" --rules_dir=rules --state_file="$work/state/state.db" \
    --grpc_listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --port_file="$work/state/port" \
    >"$work/daemon.log" 2>&1 &
  pid=$!
  # Start-up (loading every rule) takes a second; under valgrind, minutes.
  for ((i = 0; i < 6000; i++)); do
    [ -s "$work/state/port" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "palisaded exited during start-up:" >&2
      cat "$work/daemon.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  port=$(sed -n 's/^grpc=//p' "$work/state/port")
  [ -n "$port" ] || { echo "palisaded wrote no port in 10 minutes" >&2; exit 1; }
  load_before=$(load)
  cpu0=$(cpu_secs "$pid")
  TIMEFORMAT='%U %S'
  { time "$client" --server="127.0.0.1:$port" --streams="$streams" --in_flight="$in_flight" \
    --batch="$batch" --lines="$lines" --kind="$kind" >"$work/client.out" 2>"$work/client.err"; } \
    2>"$work/client.time"
  cpu1=$(cpu_secs "$pid")
  load_after=$(load)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  out=$(cat "$work/client.out")
  # "2 streams, 400000 lines in 1.90 s: 210526 lines/s; batch ack p50 9.10 ms, p99 20.20 ms"
  lps=$(sed -n 's/.*: \([0-9]*\) lines\/s.*/\1/p' <<<"$out")
  p50=$(sed -n 's/.*p50 \([0-9.]*\) ms.*/\1/p' <<<"$out")
  p99=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$out")
  if [ -z "$lps" ]; then
    echo "load_client failed: $out $(cat "$work/client.err")" >&2
    exit 1
  fi
  daemon_cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }')
  client_cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$work/client.time")
  printf '%-5s %10s %9s %9s %13s %13s %-16s %-16s\n' "$r" "$lps" "$p50" "$p99" "$daemon_cpu" \
    "$client_cpu" "$load_before" "$load_after"
done
