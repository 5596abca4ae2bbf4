#!/usr/bin/env bash
# promtool check rules + promtool test rules on the shipped alerting and recording rules.
set -euo pipefail
command -v promtool >/dev/null || { echo "FAIL: promtool not found (tools/setup.sh installs prometheus)" >&2; exit 1; }
cd deploy/prometheus
promtool check rules palisade.rules.yml
promtool test rules palisade.rules.test.yml
