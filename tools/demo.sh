#!/usr/bin/env bash
# The main job on embedded defaults: builds palisaded and palisadectl, starts the daemon on
# loopback with the shipped sshd and nginx packs, ships the bundled sample attack logs over gRPC
# (re-timed so they happened just now), and prints what was decided and the metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

bazel build //services/server:palisaded //services/cli:palisadectl
bin=bazel-bin/services
work=$(mktemp -d)
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$work"' EXIT

"$bin/server/palisaded" --rules_dir=rules --grpc_listen=127.0.0.1:0 \
  --metrics_listen=127.0.0.1:0 --port_file="$work/ports" &
daemon=$!
for _ in $(seq 100); do [ -s "$work/ports" ] && break; sleep 0.1; done
grpc_port=$(sed -n 's/^grpc=//p' "$work/ports")
metrics_port=$(sed -n 's/^metrics=//p' "$work/ports")
ctl() { "$bin/cli/palisadectl" --server="127.0.0.1:$grpc_port" "$@"; }

echo
echo "== shipping the sample logs over gRPC"
ctl ship tests/testdata/sample_auth.log --format=syslog --source=auth.log --retime
ctl ship tests/testdata/sample_access.log --format=combined --source=access.log --retime

echo
echo "== what palisaded decided"
ctl decisions list --active
echo
ctl status
echo
echo "== metrics (http://127.0.0.1:$metrics_port/metrics, excerpt)"
curl -s "http://127.0.0.1:$metrics_port/metrics" |
  grep -E '^palisade_(ingest_lines|decisions_active|engine_detections_total|rules_loaded)' | sort
