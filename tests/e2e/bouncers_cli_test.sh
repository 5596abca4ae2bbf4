#!/usr/bin/env bash
# palisadectl bouncers against a real palisaded with bouncer_api on (issue 16): add prints a key
# once, the key pulls the stream (a manual ban appears, its deletion follows), list shows the
# pull's address and version, delete makes the key useless; the key is never in the daemon's
# log, and the state file holds only its hash. Without bouncer_api the commands say how to turn
# it on.
set -euo pipefail
daemon_bin=services/server/palisaded
ctl_bin=services/cli/palisadectl
work="${TEST_TMPDIR:-$(mktemp -d)}"
fail() { echo "FAIL: $*" >&2; exit 1; }

cat >"$work/palisade.textproto" <<CONF
rule_files: "$PWD/rules/sshd.textproto"
bouncer_api { listen: "127.0.0.1:0" }
CONF

daemon=
start() {  # start CONFIG
  rm -f "$work/ports"
  "$daemon_bin" --config="$1" --grpc_listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
    --port_file="$work/ports" --state_file="$work/state.db" --shutdown_grace=200ms \
    2>>"$work/daemon.log" &
  daemon=$!
  for _ in $(seq 1200); do [ -s "$work/ports" ] && break; sleep 0.05; done
  [ -s "$work/ports" ] || fail "palisaded did not start: $(cat "$work/daemon.log")"
  port=$(sed -n 's/^grpc=//p' "$work/ports")
  bport=$(sed -n 's/^bouncer=//p' "$work/ports")
}
stop() { kill "$daemon"; wait "$daemon" || true; daemon=; }
trap '[ -z "$daemon" ] || { kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; } || true' EXIT
ctl() { "$ctl_bin" --server="127.0.0.1:$port" "$@"; }
pull() {  # pull KEY QUERY: status code, then the body
  curl -s -o "$work/body" -w '%{http_code}' -H "X-Api-Key: $1" -A 'crowdsec-custom-bouncer/v0.0.15' \
    "http://127.0.0.1:$bport/v1/decisions/stream?$2"
  echo " $(cat "$work/body")"
}

start "$work/palisade.textproto"
[ -n "$bport" ] || fail "no bouncer= line in the port file: $(cat "$work/ports")"

key=$(ctl bouncers add fw 2>"$work/add.err")
[[ "$key" =~ ^[0-9a-f]{64}$ ]] || fail "add printed '$key'"
grep -q 'shown this once' "$work/add.err" || fail "add's advice: $(cat "$work/add.err")"
if ctl bouncers add fw 2>"$work/err"; then fail "a second 'fw' was added"; fi
grep -q 'exists' "$work/err" || fail "duplicate: $(cat "$work/err")"
if ctl bouncers add 'bad name' 2>"$work/err"; then fail "a bad name was added"; fi

got=$(pull "$key" startup=true)
[ "$got" = '200 {"deleted":null,"new":null}' ] || fail "empty startup pull: $got"
[ "$(pull wrong startup=true)" = '403 {"message":"access forbidden"}' ] || fail "wrong key served"

added=$(ctl decisions add 203.0.113.77 --duration=1h --reason=cli-test)
id=$(echo "$added" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
got=$(pull "$key" startup=false)
grep -qE '^200 \{"deleted":null,"new":\[\{"duration":"(59m5[0-9](\.[0-9]+)?s|1h0m0s)","id":[0-9]+,"origin":"cscli","scenario":"cli-test","scope":"Ip","type":"ban","value":"203.0.113.77"\}\]\}$' <<<"$got" \
  || fail "pull after a ban: $got"
ctl decisions delete "$id" >/dev/null
got=$(pull "$key" startup=false)
grep -qE '^200 \{"deleted":\[\{"duration":"-?[0-9][^"]*s","id":[0-9]+,"origin":"cscli".*"value":"203.0.113.77"\}\],"new":null\}$' <<<"$got" \
  || fail "pull after the delete: $got"

list=$(ctl bouncers list)
echo "$list"
grep -qE '^fw +20[0-9-]+T[0-9:]+(Z|\+00:00) +127\.0\.0\.1 +crowdsec-custom-bouncer/v0\.0\.15$' <<<"$list" \
  || fail "list: $list"
ctl bouncers list --json | grep -q '"name":"fw"' || fail "list --json"
grep -q 'bouncers:  1 registered, 0 stale' <<<"$(ctl status)" || fail "status: $(ctl status)"

# Across a restart the key still works and nothing is served twice.
stop
start "$work/palisade.textproto"
got=$(pull "$key" startup=false)
[ "$got" = '200 {"deleted":null,"new":null}' ] || fail "after the restart: $got"

grep -q 'deleted: its key is refused' <<<"$(ctl bouncers delete fw)" || fail "delete"
[ "$(pull "$key" startup=true)" = '403 {"message":"access forbidden"}' ] || fail "deleted key served"
if ctl bouncers delete fw 2>"$work/err"; then fail "deleted twice"; fi
grep -q 'no bouncer "fw"' "$work/err" || fail "delete unknown: $(cat "$work/err")"
stop

grep -q "$key" "$work/daemon.log" && fail "the key is in the daemon's log"
grep -qa "$key" "$work/state.db"* && fail "the key is in the state file"

# Another address than loopback without TLS refuses the start, naming the field.
cat >"$work/open.textproto" <<CONF
rule_files: "$PWD/rules/sshd.textproto"
bouncer_api { listen: "0.0.0.0:0" }
CONF
if "$daemon_bin" --config="$work/open.textproto" --grpc_listen=127.0.0.1:0 --metrics_listen=off \
    --state_file="$work/open.db" 2>"$work/open.log"; then
  fail "palisaded served bouncers in clear on 0.0.0.0"
fi
grep -q 'refusing to start: bouncer_api.listen 0.0.0.0:0 is not a loopback address' "$work/open.log" \
  || fail "open listener: $(cat "$work/open.log")"

# Without bouncer_api: the commands say how to turn it on.
echo "rule_files: \"$PWD/rules/sshd.textproto\"" >"$work/off.textproto"
start "$work/off.textproto"
[ -z "$bport" ] || fail "a bouncer port without bouncer_api"
if ctl bouncers add fw 2>"$work/err"; then fail "added with the API off"; fi
grep -q 'bouncer_api' "$work/err" || fail "off: $(cat "$work/err")"
stop
echo PASS
