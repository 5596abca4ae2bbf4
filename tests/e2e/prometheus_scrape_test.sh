#!/usr/bin/env bash
# A real Prometheus (Debian `prometheus`) on loopback scrapes a running palisaded: Palisade's
# series must be queryable through Prometheus' HTTP API, the shipped rules must load in it, and
# `promtool check metrics` must accept the exposition.
set -euo pipefail
daemon_bin=services/server/palisaded
work="${TEST_TMPDIR:-$(mktemp -d)}"
fail() { echo "FAIL: $*" >&2; exit 1; }
for tool in prometheus promtool curl; do
  command -v "$tool" >/dev/null || fail "$tool not found (tools/setup.sh installs it)"
done

"$daemon_bin" --rules_dir=rules --grpc_listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --port_file="$work/ports" --state_file=:memory: --shutdown_grace=200ms 2>"$work/daemon.log" &
daemon=$!
prom=""
cleanup() {
  kill "$daemon" ${prom:+"$prom"} 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1200); do [ -s "$work/ports" ] && break; sleep 0.05; done
[ -s "$work/ports" ] || fail "palisaded did not start: $(cat "$work/daemon.log")"
metrics_port=$(sed -n 's/^metrics=//p' "$work/ports")

# The exposition passes promtool's lint.
curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt"
promtool check metrics <"$work/metrics.txt" || fail "promtool check metrics"

cp deploy/prometheus/palisade.rules.yml "$work/"
cat >"$work/prometheus.yml" <<EOF2
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [palisade.rules.yml]
scrape_configs:
  - job_name: palisade
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF2
# Prometheus wants a fixed port: try a few random high ones.
for _ in 1 2 3 4 5; do
  prom_port=$((20000 + RANDOM % 20000))
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
  prom=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break
    kill -0 "$prom" 2>/dev/null || break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break
  kill "$prom" 2>/dev/null || true
  wait "$prom" 2>/dev/null || true
  prom=""
done
[ -n "$prom" ] || fail "prometheus did not start: $(tail -5 "$work/prometheus.log")"

query() { curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1"; }
ok=""
for _ in $(seq 300); do
  out=$(query 'up{job="palisade"}' || true)
  if grep -q '"value":\[[0-9.]*,"1"\]' <<<"$out"; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || fail "the scrape never came up: $out"
for series in palisade_build_info palisade_rules_loaded palisade_decisions_active \
              palisade_events_subscribers palisade_engine_windows; do
  out=$(query "$series")
  grep -q "\"__name__\":\"$series\"" <<<"$out" || fail "$series not in Prometheus: $out"
done
# The shipped rules loaded into the server.
rules=$(curl -sf "http://127.0.0.1:$prom_port/api/v1/rules")
grep -q '"name":"PalisadeOutboxGrowing"' <<<"$rules" || fail "rules not loaded: $rules"
grep -q '"health":"err"' <<<"$rules" && fail "a rule fails to evaluate: $rules"
# Every query of the Grafana dashboard is valid PromQL that this Prometheus accepts.
/usr/bin/python3 - deploy/grafana/palisade.json >"$work/exprs" <<'EOF2'
import json, sys
for panel in json.load(open(sys.argv[1]))["panels"]:
    for target in panel.get("targets", []):
        print(target["expr"].replace("$instance", ".*"))
EOF2
[ "$(wc -l <"$work/exprs")" -ge 15 ] || fail "dashboard queries: $(cat "$work/exprs")"
while IFS= read -r expr; do
  out=$(query "$expr") || fail "dashboard query refused: $expr"
  grep -q '"status":"success"' <<<"$out" || fail "dashboard query failed: $expr: $out"
done <"$work/exprs"
echo "prometheus scrape: 1 passed, 0 failed"
