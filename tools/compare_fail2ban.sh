#!/usr/bin/env bash
# Side by side with fail2ban: generates the sshd corpus (with its ground truth), runs
# fail2ban-regex with fail2ban's own sshd filter and `palisadectl replay` on the same file, and
# prints both times, the ratio, and how well each one's flagged addresses match the ground truth.
# Installs Debian's fail2ban when it is missing. Not part of CI (it only measures).
#   bash tools/compare_fail2ban.sh [LINES] [sshd|all|table]      # default 200000 sshd
# Mode `all` (issue 13 §4, breadth): palisadectl replay with EVERY pack under rules/ loaded (the
# CIDR sets as rules/pack_test.cc defines them), against fail2ban-regex run with each of the
# fail2ban filters for the same services (F2B_ALL below), one pass per filter as a fail2ban jail
# per filter reads the log, on the same file; fail2ban's time is the sum of its passes.
# Mode `table` (issue 18): the sshd and nginx corpora (LINES each), printed as
# one ratio table: fail2ban-regex with the filters equivalent to the pack, one pass per filter as
# a jail per filter reads the log, fail2ban's time the sum of its passes (sshd: `sshd` in
# mode=aggressive, its normal and ddos failures together, which the sshd pack covers; the combined
# access log: `nginx-botsearch` and `nginx-bad-request`, the access-log filters for what the nginx
# pack counts); the "vs f2b" column divides that sum by each time, "vs 1 filter" divides the
# first filter's run alone (sshd: `sshd` in its default mode, normal; nginx: `nginx-botsearch`),
# the yardstick of the tables before 2026-12-05; `LC_ALL=C grep -cE` with the pack's patterns
# rewritten as one POSIX ERE
# file (named groups and lazy quantifiers dropped, `^` removed since grep sees the whole line
# and not the message: a ceiling for one DFA pass, not the same matches); palisadectl replay
# with the one pack on 1 thread, and with every pack on 1 and 2 threads (start-up included).
# Each replay runs REPLAY_RUNS times (default 3) and its row gives the median, its fastest run
# beside it: a sub-second run on this VM moves by 10-30 % with what the host does (the first
# touch of each new page of memory is the host's too), where fail2ban-regex's one run of 15-30 s
# averages such moments out. The machine's other load moves every wall time: the script prints
# the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
lines="${1:-200000}"
mode="${2:-sshd}"
if [ "$mode" = table ]; then
  bash tools/setup.sh
  if ! command -v fail2ban-regex >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fail2ban >/dev/null
  fi
  bazel build -c opt //services/cli:palisadectl //tests/corpus:gen_corpus >&2
  bin=$(bazel info -c opt bazel-bin 2>/dev/null)
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  {
    for p in rules/*.textproto; do echo "rule_files: \"$PWD/$p\""; done
    echo 'cidr_sets { key: "cloudflare_token_ips" value { cidrs: "192.0.2.0/24" cidrs: "2001:db8:c0::/48" } }'
  } >"$work/all.textproto"
  # Milliseconds: a 0.3 s replay rounded to 10 ms moved its ratio by up to 3 %.
  secs() { python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.3f}')" "$@"; }
  now() { date +%s%N; }
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $lines lines per corpus"
  printf '%-6s %-64s %9s %12s %10s %9s %11s\n' corpus tool seconds lines/s "matched" "vs f2b" \
    "vs 1 filter"
  for kind in sshd nginx; do
    # The first filter in its default mode (the one-filter yardstick), then the equivalent ones.
    if [ $kind = sshd ]; then
      fmt=syslog; one=sshd; equivalent=("sshd[mode=aggressive]")
    else
      fmt=combined; one=nginx-botsearch; equivalent=(nginx-botsearch nginx-bad-request)
    fi
    "$bin"/tests/corpus/gen_corpus --kind=$kind --lines="$lines" --seed=1 --out="$work/$kind.log" \
      2>/dev/null
    # Written back before any tool reads it: a replay of the file just written paid ~0.15 s of
    # system time for its dirty pages (0.90 s against 0.72 s, sshd pack), fail2ban-regex's 26 s
    # being shorter than the kernel's 30 s before it writes them back.
    sync "$work/$kind.log"
    # The pack's patterns as POSIX EREs, one per line.
    python3 - "rules/$kind.textproto" >"$work/$kind.ere" <<'PY'
import re, sys
for m in re.finditer(r'^\s*patterns: "((?:[^"\\]|\\.)*)"', open(sys.argv[1]).read(), re.M):
    p = m.group(1).encode().decode("unicode_escape")
    p = re.sub(r"\(\?P<\w+>", "(", p).replace("(?:", "(").replace("*?", "*").replace("+?", "+")
    p = p.replace(r"\d", "[0-9]").replace(r"\S", "[^[:space:]]").replace(r"\s", "[[:space:]]")
    p = p.replace(r"\w", "[[:alnum:]_]").replace(r"[^\]]", "[^]]").lstrip("^")
    if "(?" not in p:
        print(p)
PY
    f2b_run() {  # filter[options] -> "seconds matched"
      local t0 t1 m
      t0=$(now)
      m=$(fail2ban-regex "$work/$kind.log" "/etc/fail2ban/filter.d/${1%%\[*}.conf${1#"${1%%\[*}"}" \
        2>/dev/null | sed -n 's/^Lines: .* \([0-9]*\) matched.*/\1/p' | head -1)
      t1=$(now)
      echo "$(secs "$t0" "$t1") ${m:-?}"
    }
    # Each distinct run once: the one-filter yardstick is also the first equivalent for nginx.
    declare -A ran=()
    for f in "$one" "${equivalent[@]}"; do
      [ -n "${ran[$f]:-}" ] || ran[$f]=$(f2b_run "$f")
    done
    f2b_one=${ran[$one]%% *}
    f2b=$(for f in "${equivalent[@]}"; do echo "${ran[$f]%% *}"; done |
      python3 -c "import sys; print(f'{sum(float(x) for x in sys.stdin):.3f}')")
    row() {  # tool seconds matched
      python3 - "$1" "$2" "$3" "$lines" "$f2b" "$kind" "$f2b_one" <<'PY'
import sys
tool, t, matched, lines, f2b, kind, one = sys.argv[1:]
t, f2b, one = float(t), float(f2b), float(one)
print(f"{kind:<6} {tool:<64} {t:9.3f} {int(lines) / t:12,.0f} {matched:>10} "
      f"{f2b / t:8.1f}x {one / t:10.1f}x")
PY
    }
    for f in $(printf '%s\n' "$one" "${equivalent[@]}" | awk '!seen[$0]++'); do
      row "fail2ban-regex ($f filter)" "${ran[$f]%% *}" "${ran[$f]#* }"
    done
    row "fail2ban-regex, the pack's equivalent filters (sum of runs)" "$f2b" "-"
    t0=$(now); g=$(LC_ALL=C grep -cE -f "$work/$kind.ere" "$work/$kind.log" || true); t1=$(now)
    row "LC_ALL=C grep -cE ($(wc -l <"$work/$kind.ere") patterns)" "$(secs "$t0" "$t1")" "$g"
    for run in "$kind pack, 1 thread|--rules=rules/$kind.textproto --threads=1" \
               "every pack, 1 thread|--config=$work/all.textproto --threads=1" \
               "every pack, 2 threads|--config=$work/all.textproto --threads=2"; do
      label=${run%%|*}; args=${run#*|}
      times=()
      for _ in $(seq "${REPLAY_RUNS:-3}"); do
        t0=$(now)
        # shellcheck disable=SC2086
        m=$("$bin"/services/cli/palisadectl replay "$work/$kind.log" --format=$fmt $args |
          sed -n 's/.* \([0-9]*\) matched.*/\1/p')
        t1=$(now)
        times+=("$(secs "$t0" "$t1")")
      done
      read -r median fastest < <(printf '%s\n' "${times[@]}" | sort -n |
        python3 -c "import sys; t=[float(x) for x in sys.stdin]; print(t[len(t)//2], t[0])")
      row "palisadectl replay, $label (fastest ${fastest} s)" "$median" "$m"
    done
  done
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi
# fail2ban's filters for the services the shipped packs cover (sshd and its PAM/dropbear kin,
# mail, FTP, databases, DNS, panels, VoIP, web servers, recidive).
F2B_ALL="sshd dropbear pam-generic xinetd-fail screensharingd softethervpn znc-adminlog slapd
  named-refused nsd dovecot exim exim-spam courier-auth courier-smtp cyrus-imap solid-pop3d
  uwimap-auth perdition qmail sendmail-auth sendmail-reject postfix mysqld-auth proftpd pure-ftpd
  vsftpd webmin-auth froxlor-auth monit recidive asterisk freeswitch roundcube-auth horde
  sogo-auth squirrelmail nginx-http-auth nginx-limit-req nginx-botsearch nginx-bad-request
  apache-auth apache-badbots apache-botsearch apache-noscript apache-overflows apache-shellshock"
bash tools/setup.sh
if ! command -v fail2ban-regex >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fail2ban >/dev/null
fi
bazel build -c opt //services/cli:palisadectl //tests/corpus:gen_corpus >&2
# The -c opt outputs by path, not bazel-bin: another build may have pointed it elsewhere.
bin=$(bazel info -c opt bazel-bin 2>/dev/null)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin"/tests/corpus/gen_corpus --kind=sshd --lines="$lines" --seed=1 \
  --out="$work/auth.log" --truth="$work/truth.txt" 2>/dev/null

filters=sshd
replay_rules=(--rules=rules/sshd.textproto)
if [ "$mode" = all ]; then
  filters=""
  for f in $F2B_ALL; do
    [ -f "/etc/fail2ban/filter.d/$f.conf" ] && filters="$filters $f"
  done
  {
    for p in rules/*.textproto; do echo "rule_files: \"$PWD/$p\""; done
    echo 'cidr_sets { key: "cloudflare_token_ips" value { cidrs: "192.0.2.0/24" cidrs: "2001:db8:c0::/48" } }'
  } >"$work/all.textproto"
  replay_rules=(--config="$work/all.textproto")
fi

: >"$work/f2b.out"
start=$(date +%s%N)
for f in $filters; do
  fail2ban-regex --print-all-matched "$work/auth.log" "/etc/fail2ban/filter.d/$f.conf" \
    >>"$work/f2b.out" 2>&1
done
f2b=$(( $(date +%s%N) - start ))

start=$(date +%s%N)
"$bin"/services/cli/palisadectl replay "$work/auth.log" --format=syslog --json \
  "${replay_rules[@]}" >"$work/palisade.json"
pal=$(( $(date +%s%N) - start ))

python3 - "$work" "$lines" "$f2b" "$pal" "$mode" "$(echo $filters | wc -w)" "$(ls rules/*.textproto | wc -l)" <<'PY'
import collections, datetime, json, re, sys
work, lines = sys.argv[1], int(sys.argv[2])
f2b, pal = int(sys.argv[3]) / 1e9, int(sys.argv[4]) / 1e9
mode, nfilters, npacks = sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
truth = set(open(f"{work}/truth.txt").read().split())
# What fail2ban's sshd jail would ban: maxretry (5) matches inside findtime (10 min), per
# address, from the lines fail2ban-regex says its filter matched.
ip = re.compile(r"from (\S+) port|user \S+ (\S+) port|from (\S+)$")
times = collections.defaultdict(list)
for line in open(f"{work}/f2b.out", errors="replace"):
    if not line.startswith("|  "):
        continue
    text = line[3:].strip()
    m = ip.search(text)
    if not m or not re.match(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ", text):
        continue
    when = datetime.datetime.strptime("2026 " + text[:15], "%Y %b %d %H:%M:%S")
    times[next(g for g in m.groups() if g)].append(when)
f2b_flagged = set()
for addr, ts in times.items():
    ts.sort()
    for i in range(4, len(ts)):
        if ts[i] - ts[i - 4] <= datetime.timedelta(minutes=10):
            f2b_flagged.add(addr)
            break
pal_flagged = {json.loads(l)["target"]["value"] for l in open(f"{work}/palisade.json")}
def agree(flagged):
    tp = len(flagged & truth)
    return f"{tp}/{len(truth)} attackers found, {len(flagged - truth)} innocent flagged"
print(f"corpus: {lines} sshd lines, {len(truth)} attackers (ground truth); mode {mode}")
print(f"fail2ban-regex ({nfilters} filter(s), one pass each): {f2b:.2f} s = {lines / f2b:,.0f} lines/s; {agree(f2b_flagged)}")
print(f"palisade replay ({'every pack: ' + str(npacks) if mode == 'all' else 'the sshd pack'}): {pal:.2f} s = {lines / pal:,.0f} lines/s (full pipeline, incl. start-up); {agree(pal_flagged)}")
print(f"ratio: palisade is {f2b / pal:.1f}x faster")
PY
