#!/usr/bin/env bash
# Two palisadectl binaries side by side on the replays of docs/PERFORMANCE.md: each round runs
# BASE then HEAD over six configurations (the sshd and nginx packs on one thread, every pack on
# one and two threads, on the sshd and nginx corpora), under /usr/bin/time. It prints each run,
# then per configuration and binary the wall seconds of every round and the medians of wall,
# user and system seconds and peak RSS. Alternating the binaries puts them through the same
# states of a noisy machine. It only measures and is not part of CI.
#   bash tools/replay_ab.sh BASE HEAD [ROUNDS] [DIR]
# BASE, HEAD: palisadectl binaries (copies of bazel-bin/services/cli/palisadectl from two trees).
# ROUNDS: default 3. DIR (default /tmp/palisade-ab) holds the corpora, generated on first use
# (`gen_corpus --lines=1000000 --seed=1`, as tools/compare_fail2ban.sh makes them), and all.textproto,
# which loads every rules/*.textproto with the CIDR set that rules/pack_test.cc gives the
# token rules.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bash tools/replay_ab.sh BASE HEAD [ROUNDS] [DIR]" >&2; exit 2; }
base=$(realpath "$1")
head=$(realpath "$2")
rounds="${3:-3}"
dir="${4:-/tmp/palisade-ab}"
mkdir -p "$dir"
for kind in sshd nginx; do
  if [ ! -s "$dir/$kind.log" ]; then
    bazel build -c opt //tests/corpus:gen_corpus >&2
    "$(bazel info -c opt bazel-bin 2>/dev/null)/tests/corpus/gen_corpus" --kind=$kind \
      --lines=1000000 --seed=1 --out="$dir/$kind.log" >/dev/null
    sync "$dir/$kind.log"  # written back before it is timed (see tools/compare_fail2ban.sh)
  fi
done
{
  for f in rules/*.textproto; do echo "rule_files: \"$PWD/$f\""; done
  echo 'cidr_sets { key: "cloudflare_token_ips" value { cidrs: "192.0.2.0/24"' \
    'cidrs: "2001:db8:c0::/48" } }'
} >"$dir/all.textproto"

configs=(
  "sshd-pack-1t|syslog|--rules=$PWD/rules/sshd.textproto --threads=1|sshd"
  "nginx-pack-1t|combined|--rules=$PWD/rules/nginx.textproto --threads=1|nginx"
  "sshd-every-1t|syslog|--config=$dir/all.textproto --threads=1|sshd"
  "nginx-every-1t|combined|--config=$dir/all.textproto --threads=1|nginx"
  "sshd-every-2t|syslog|--config=$dir/all.textproto --threads=2|sshd"
  "nginx-every-2t|combined|--config=$dir/all.textproto --threads=2|nginx"
)
runs="$dir/runs.txt"
: >"$runs"
for ((r = 1; r <= rounds; r++)); do
  for which in base head; do
    bin=$base
    [ "$which" = head ] && bin=$head
    for cfg in "${configs[@]}"; do
      IFS='|' read -r name format args corpus <<<"$cfg"
      # shellcheck disable=SC2086  # args holds several flags on purpose.
      /usr/bin/time -f "$name $which %e %U %S %M" "$bin" replay --format="$format" $args \
        "$dir/$corpus.log" 2>&1 >/dev/null | tail -1 | tee -a "$runs"
    done
  done
done
python3 - "$runs" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 6:
        runs[(f[0], f[1])].append((float(f[2]), float(f[3]), float(f[4]), int(f[5]) // 1024))
print(f"{'configuration':15s} {'binary':6s} {'wall s, each round':28s} {'wall':>5s} {'user':>5s} "
      f"{'sys':>5s} {'MiB':>5s}")
for (name, which), rs in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1] != "base")):
    med = lambda i: statistics.median(r[i] for r in rs)
    walls = ", ".join(f"{r[0]:.2f}" for r in rs)
    print(f"{name:15s} {which:6s} {walls:28s} {med(0):5.2f} {med(1):5.2f} {med(2):5.2f} "
          f"{med(3):5.0f}")
EOF
