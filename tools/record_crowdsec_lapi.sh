#!/usr/bin/env bash
# Records the reference replies of CrowdSec's Local API (the bouncer side: /v1/decisions and
# /v1/decisions/stream) from Debian's crowdsec package, for palisaded's bouncer API to match.
#
# Runs `crowdsec -no-cs` (the LAPI alone, no log acquisition) on a free loopback port with a
# throwaway config dir and sqlite database under a temp dir (nothing under /etc or /var is used,
# no Central API client, nothing reaches the network), registers bouncers with `cscli bouncers
# add`, adds Ip and Range decisions (ban and captcha) with `cscli decisions add`, deletes one, and
# writes per request: NAME.txt (request, status line, the headers that matter, raw body) and
# NAME.body, plus index.json listing every case (request, key used, status, content type).
# Secrets: the bouncer key is written as "<valid key>", never its value.
#
#   bash tools/record_crowdsec_lapi.sh [OUT_DIR]     # default tests/e2e/testdata/crowdsec
#
# This is a recording tool, not a test: it sleeps 1.1 s between a stream pull and the changes
# the next pull must see, because crowdsec 1.4.6 keeps a bouncer's position as a timestamp.
set -euo pipefail

OUT=${1:-tests/e2e/testdata/crowdsec}
for bin in crowdsec cscli curl python3; do
  command -v "$bin" >/dev/null || { echo "record: $bin missing (bash tools/setup.sh)" >&2; exit 1; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/crowdsec-lapi.XXXXXX)
LAPI_PID=""
cleanup() {
  if [ -n "$LAPI_PID" ]; then kill "$LAPI_PID" 2>/dev/null || true; wait "$LAPI_PID" 2>/dev/null || true; fi
  [ -n "${KEEP_WORK:-}" ] && echo "record: kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
mkdir -p "$WORK"/{etc,data,hub,logs}
touch "$WORK/etc/local_api_credentials.yaml"
printf 'simulation: off\n' > "$WORK/etc/simulation.yaml"
cp /etc/crowdsec/profiles.yaml "$WORK/etc/profiles.yaml"
echo '{}' > "$WORK/hub/.index.json"
cat > "$WORK/etc/config.yaml" <<EOF
common:
  daemonize: false
  log_media: file
  log_level: info
  log_dir: $WORK/logs/
  working_dir: .
config_paths:
  config_dir: $WORK/etc/
  data_dir: $WORK/data/
  simulation_path: $WORK/etc/simulation.yaml
  hub_dir: $WORK/hub/
  index_path: $WORK/hub/.index.json
  notification_dir: $WORK/etc/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
cscli:
  output: human
  color: "no"
db_config:
  log_level: info
  type: sqlite
  db_path: $WORK/data/crowdsec.db
  use_wal: false
api:
  client:
    insecure_skip_verify: false
    credentials_path: $WORK/etc/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: 127.0.0.1:$PORT
    profiles_path: $WORK/etc/profiles.yaml
    trusted_ips:
      - 127.0.0.1
prometheus:
  enabled: false
EOF
CS=(-c "$WORK/etc/config.yaml")

# A machine for cscli's own LAPI calls (decisions add/delete go through the API as a machine).
cscli "${CS[@]}" --error machines add recorder --password "$(head -c 24 /dev/urandom | base64 | tr -dc a-zA-Z0-9)" \
  -f "$WORK/etc/local_api_credentials.yaml" --url "$URL/" --force >/dev/null

crowdsec "${CS[@]}" -no-cs >"$WORK/logs/stdout" 2>&1 &
LAPI_PID=$!
for _ in $(seq 1 600); do
  if curl -s -o /dev/null "$URL/v1/decisions"; then break; fi
  kill -0 "$LAPI_PID" 2>/dev/null || { cat "$WORK/logs/"* >&2; echo "record: crowdsec exited" >&2; exit 1; }
  sleep 0.1
done

KEY_A=$(cscli "${CS[@]}" --error -oraw bouncers add bouncer-a)
KEY_B=$(cscli "${CS[@]}" --error -oraw bouncers add bouncer-b)
KEY_C=$(cscli "${CS[@]}" --error -oraw bouncers add bouncer-c)
WRONG_KEY=0123456789abcdef0123456789abcdef

CASES="$WORK/cases.tsv"
: > "$CASES"
rm -f "$OUT"/*.txt "$OUT"/*.body "$OUT"/index.json

# rec NAME KEYNAME KEY METHOD PATH_AND_QUERY [NOTE]
rec() {
  local name=$1 keyname=$2 key=$3 method=$4 path=$5 note=${6:-}
  # python3's http.client rather than curl (whose config lines are limited in length). It writes the raw status line and headers, the body, and prints the status.
  # The path goes through a file (printf is a builtin): 2 MiB is over the exec size limits.
  printf '%s' "$path" > "$WORK/path"
  local status
  status=$(KEY="$key" python3 - "$PORT" "$method" "$WORK/$name.headers" "$OUT/$name.body" "$WORK/path" <<'PY'
import http.client, os, sys
port, method, hfile, bfile, pfile = sys.argv[1:6]
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
headers = {"User-Agent": "palisade-recorder"}
if os.environ["KEY"]:
    headers["X-Api-Key"] = os.environ["KEY"]
try:
    conn.request(method, open(pfile).read(), headers=headers)
    r = conn.getresponse()
    body = r.read()
    with open(hfile, "w") as h:
        h.write("HTTP/1.1 %d %s\n" % (r.status, r.reason))
        for k, v in r.getheaders():
            h.write("%s: %s\n" % (k, v))
    open(bfile, "wb").write(body)
    print(r.status)
except (ConnectionError, http.client.HTTPException) as e:
    open(hfile, "w").write("")
    open(bfile, "w").write("")
    print(0)
PY
)
  local ctype
  ctype=$(grep -i '^content-type:' "$WORK/$name.headers" | head -1 | cut -d' ' -f2- | tr -d '\r' || true)
  {
    local shown=$path
    [ ${#shown} -gt 300 ] && shown="${shown:0:200}...(${#path} bytes)"
    echo "$method $shown"
    echo "X-Api-Key: $keyname"
    [ -n "$note" ] && echo "# $note"
    echo
    # The headers that matter: status, type, length, encoding (Date/Server are dropped).
    grep -iE '^(HTTP/|content-type|content-length|transfer-encoding|connection|www-authenticate)' \
      "$WORK/$name.headers" | tr -d '\r'
    echo
    cat "$OUT/$name.body"
    echo
  } > "$OUT/$name.txt"
  local shown_path=$path
  [ ${#shown_path} -gt 300 ] && shown_path="${shown_path:0:200}...(${#path} bytes)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$method" "$shown_path" "$keyname" "$status" "$ctype" "$note" >> "$CASES"
  echo "record: $name -> $status" >&2
}

add() { cscli "${CS[@]}" --error decisions add "$@" >/dev/null; }

# --- Stream: startup with nothing active (bouncer C).
rec stream_startup_empty "<valid key>" "$KEY_C" GET "/v1/decisions/stream?startup=true" \
  "startup pull, no decision exists"

# --- Decisions: Ip and Range, ban and captcha, IPv4 and IPv6.
add --ip 192.0.2.10 --duration 4h --type ban --reason "palisade/ssh-bf"
add --ip 192.0.2.11 --duration 1h --type captcha --reason "palisade/http-probing"
add --range 198.51.100.0/24 --duration 24h --type ban --reason "palisade/feed-drop"
add --range 203.0.113.0/28 --duration 30m --type captcha --reason "palisade/http-probing"
add --ip 2001:db8::7 --duration 2h --type ban --reason "palisade/ssh-bf"
add --scope username --value mallory --duration 1h --type ban --reason "palisade/user-scope"

rec stream_startup "<valid key>" "$KEY_A" GET "/v1/decisions/stream?startup=true" \
  "bouncer A's first pull: everything active"
rec stream_nochange "<valid key>" "$KEY_A" GET "/v1/decisions/stream?startup=false" \
  "bouncer A again at once: nothing changed"
rec stream_no_startup_param "<valid key>" "$KEY_A" GET "/v1/decisions/stream" \
  "no startup parameter at all"
sleep 1.1
add --ip 192.0.2.12 --duration 3h --type ban --reason "palisade/ssh-bf"
cscli "${CS[@]}" --error decisions delete --ip 192.0.2.11 >/dev/null
sleep 1.1
rec stream_update "<valid key>" "$KEY_A" GET "/v1/decisions/stream?startup=false" \
  "bouncer A after one add (192.0.2.12) and one delete (192.0.2.11 captcha)"
rec stream_update_again "<valid key>" "$KEY_A" GET "/v1/decisions/stream?startup=false" \
  "bouncer A at once again: the delete is not repeated"
rec stream_startup_after_delete "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true" \
  "bouncer B's first pull after the delete"

# --- Stream filters (startup=true so each shows the whole filtered set).
rec stream_scopes_ip "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=ip"
rec stream_scopes_range "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=range"
rec stream_scopes_ip_range "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=ip,range"
rec stream_scopes_Ip_Range "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=Ip,Range"
rec stream_scopes_username "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=username"
rec stream_origins_cscli "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=ip,range&origins=cscli"
rec stream_origins_crowdsec "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=ip,range&origins=crowdsec"
rec stream_scenarios_containing "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=ip,range&scenarios_containing=ssh"
rec stream_scenarios_not_containing "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=ip,range&scenarios_not_containing=ssh"
rec stream_scenarios_containing_two "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=ip,range&scenarios_containing=ssh,feed"

# --- Live mode.
rec live_all "<valid key>" "$KEY_A" GET "/v1/decisions" "no filter"
rec live_ip_match "<valid key>" "$KEY_A" GET "/v1/decisions?ip=192.0.2.10"
rec live_ip_in_range "<valid key>" "$KEY_A" GET "/v1/decisions?ip=198.51.100.5" "an address inside a Range decision"
rec live_ip_nomatch "<valid key>" "$KEY_A" GET "/v1/decisions?ip=192.0.2.99"
rec live_ip_deleted "<valid key>" "$KEY_A" GET "/v1/decisions?ip=192.0.2.11" "the deleted decision's address"
rec live_ipv6_match "<valid key>" "$KEY_A" GET "/v1/decisions?ip=2001:db8::7"
rec live_range_match "<valid key>" "$KEY_A" GET "/v1/decisions?range=198.51.100.0/24"
rec live_range_nomatch "<valid key>" "$KEY_A" GET "/v1/decisions?range=10.0.0.0/8"
rec live_scope_value_ip "<valid key>" "$KEY_A" GET "/v1/decisions?scope=ip&value=192.0.2.10"
rec live_scope_value_range "<valid key>" "$KEY_A" GET "/v1/decisions?scope=range&value=198.51.100.0/24"
rec live_type_captcha "<valid key>" "$KEY_A" GET "/v1/decisions?type=captcha"
rec live_type_ban_ip "<valid key>" "$KEY_A" GET "/v1/decisions?type=ban&ip=192.0.2.10"
rec live_type_captcha_ip "<valid key>" "$KEY_A" GET "/v1/decisions?type=captcha&ip=192.0.2.10" "filters AND: no match"

# --- Authentication.
rec auth_wrong_key_stream "<wrong key>" "$WRONG_KEY" GET "/v1/decisions/stream?startup=true"
rec auth_no_key_stream "<none>" "" GET "/v1/decisions/stream?startup=true"
rec auth_wrong_key_live "<wrong key>" "$WRONG_KEY" GET "/v1/decisions?ip=192.0.2.10"
rec auth_no_key_live "<none>" "" GET "/v1/decisions?ip=192.0.2.10"

# --- Bad filter values and requests.
rec bad_startup_value "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=maybe"
rec bad_scopes_value "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&scopes=bogus"
rec bad_ip_value "<valid key>" "$KEY_A" GET "/v1/decisions?ip=not-an-ip"
rec bad_ip_octets "<valid key>" "$KEY_A" GET "/v1/decisions?ip=999.1.1.1"
rec bad_range_value "<valid key>" "$KEY_A" GET "/v1/decisions?range=198.51.100.0/99"
rec bad_type_value "<valid key>" "$KEY_A" GET "/v1/decisions?type=bogus"
rec bad_scope_value "<valid key>" "$KEY_A" GET "/v1/decisions?scope=bogus&value=x"
rec bad_unknown_param_live "<valid key>" "$KEY_A" GET "/v1/decisions?colour=red"
rec bad_unknown_param_stream "<valid key>" "$KEY_B" GET "/v1/decisions/stream?startup=true&colour=red"
rec bad_unknown_path "<valid key>" "$KEY_A" GET "/v1/decisions/nope"
rec bad_method_stream "<valid key>" "$KEY_A" POST "/v1/decisions/stream?startup=true"

# --- What a real bouncer asks: crowdsec-custom-bouncer pulls this LAPI (1 s interval) until it
# has pulled twice; its requests (line and User-Agent, from the LAPI's access log) are kept.
if command -v crowdsec-custom-bouncer >/dev/null; then
  KEY_D=$(cscli "${CS[@]}" --error -oraw bouncers add bouncer-custom)
  cat > "$WORK/custom.yaml" <<EOF
bin_path: /usr/bin/true
feed_via_stdin: false
piddir: $WORK/
update_frequency: 1s
cache_retention_duration: 10s
daemonize: false
log_mode: file
log_dir: $WORK/logs/
log_level: info
api_url: $URL/
api_key: $KEY_D
prometheus:
  enabled: false
EOF
  before=$(grep -c 'crowdsec-custom-bouncer' "$WORK/logs/crowdsec_api.log" || true)
  crowdsec-custom-bouncer -c "$WORK/custom.yaml" >"$WORK/logs/custom.stdout" 2>&1 &
  BOUNCER_PID=$!
  for _ in $(seq 1 600); do
    [ "$(grep -c 'crowdsec-custom-bouncer' "$WORK/logs/crowdsec_api.log" || true)" -ge $((before + 2)) ] && break
    sleep 0.1
  done
  kill "$BOUNCER_PID" 2>/dev/null || true
  wait "$BOUNCER_PID" 2>/dev/null || true
  {
    echo "# Requests crowdsec-custom-bouncer $(dpkg-query -W -f='${Version}' crowdsec-custom-bouncer) sent"
    echo "# (from crowdsec's access log: method, path and query, status, User-Agent)"
    grep 'crowdsec-custom-bouncer' "$WORK/logs/crowdsec_api.log" | head -2 | \
      sed -E 's/.*\] \\"([A-Z]+ [^ ]+) HTTP\/1\.1 ([0-9]+) [^ ]+ \\"([^\\]*)\\".*/\1 -> \2  User-Agent: \3/'
  } > "$OUT/bouncer_requests.txt"
fi

# --- Huge query strings last: after the 2 MiB one crowdsec 1.4.6 stops writing its access log
# ("bufio.Scanner: token too long"), which the bouncer capture above reads.
rec bad_huge_query_64k "<valid key>" "$KEY_A" GET "/v1/decisions?ip=192.0.2.10&pad=$(head -c 65536 /dev/zero | tr '\0' a)" \
  "a 64 KiB query string"
rec bad_huge_query_2m "<valid key>" "$KEY_A" GET "/v1/decisions?ip=192.0.2.10&pad=$(head -c 2097152 /dev/zero | tr '\0' a)" \
  "a 2 MiB query string (over Go's 1 MiB header limit)"

# --- index.json and the versions.
python3 - "$CASES" "$OUT" <<'PY'
import json, sys
cases, out = sys.argv[1], sys.argv[2]
rows = []
for line in open(cases):
    name, method, path, key, status, ctype, note = line.rstrip("\n").split("\t")
    rows.append({"name": name, "method": method, "path": path, "key": key,
                 "status": int(status), "content_type": ctype, "note": note,
                 "body_file": name + ".body"})
json.dump(rows, open(out + "/index.json", "w"), indent=1)
PY
{
  for p in crowdsec crowdsec-custom-bouncer crowdsec-firewall-bouncer; do
    echo "$p: $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo missing)"
  done
  crowdsec -version 2>&1 | sed -n "s/.*version: /crowdsec -version: /p" | head -1
  echo "recorded: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$OUT/VERSIONS"
echo "record: wrote $(wc -l < "$CASES") cases to $OUT" >&2
