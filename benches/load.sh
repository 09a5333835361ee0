#!/usr/bin/env bash
# Load benchmark for token-sidecar: wrk through the sidecar vs direct, nginx and mitmproxy.
#
#   bash benches/load.sh                 # everything (about 10 minutes on 2 cores)
#   MODE=throughput bash benches/load.sh # only the proxy comparison
#   MODE=refresh bash benches/load.sh    # only p99 during back-to-back RSA-4096 refreshes
#   MODE=cache bash benches/load.sh      # only the function-result cache's hit path vs nginx proxy_cache
#   MODE=shared-cache bash benches/load.sh # a hit from the fleet's Redis vs a local hit (issue 16)
#   MODE=https bash benches/load.sh      # only HTTPS: interception vs nginx terminating TLS, mitmproxy
#
# Knobs (environment): DURATION (seconds per wrk run, default 4), ROUNDS (default 5),
# REFRESH_ROUNDS (default 9: p99 is noisier than throughput here),
# CONNS (default "1 16 256"), REFRESH_CONNS (default "1 16"), WRK_THREADS (default 1),
# PEERS (default "direct sidecar nginx floor sidecar-2w mitmproxy"), SKIP_MITM=1, SKIP_BUILD=1
# (reuse target/release/token-sidecar), SCRAPE_METRICS=1 (GET the sidecars' /metrics every
# second during a case, as Prometheus would; see item 7 of the issue #6 profile in BENCHMARKS.md for why it matters),
# BASELINE_BIN (another sidecar build, run as the extra peer `sidecar-base`: name it in PEERS).
# Peer `sidecar-literal` (name it in PEERS): the sidecar sent the same requests with the token
# already written where the placeholders stand, so nothing is substituted: what the request
# path costs without the substitution itself.
# HTTPS (benches/load_https.sh): HTTPS_CASES (default "https-keepalive https-newconn
# https-resume h2"), HTTPS_CONNS (keep-alive connections, "1 16 256"), HTTPS_NEWCONN_CONNS
# (workers opening a connection per request, "1 16"), HTTPS_H2_STREAMS (64), HTTPS_PEERS
# ("direct sidecar nginx floor mitmproxy"), NGINX_TLS13_SUITES (nginx's preferred TLS 1.3 suites,
# by default the sidecar's own order; empty for OpenSSL's).
#
# Everything runs on 127.0.0.1: an nginx upstream answering a small static 200, and in front
# of it, one at a time, in interleaved rounds whose order rotates:
#   direct     wrk -> upstream
#   sidecar    wrk -> token-sidecar (worker_threads = 1, the default) -> upstream
#   sidecar-2w the same with worker_threads = 2 (extra row)
#   nginx      wrk -> nginx (worker_processes 1, proxy_set_header Authorization, keepalive
#              pool of 1024) -> upstream
#   floor      wrk -> benches/floor_proxy (a bare hyper proxy setting the same header, one
#              upstream connection per client connection: the least this stack costs) -> upstream
#   mitmproxy  wrk -> mitmdump with an addon that sets Authorization -> upstream (if
#              `pip install mitmproxy` works within 4 minutes)
# and, for "p99 during back-to-back RSA-4096 refreshes", three sidecars bound to an RSA-4096
# RS256 token: one with ttl 2s / refresh_before 1s (the refresher signs about once a second)
# and two identical ones with ttl 15m (no signing during the run): the second static one is
# an A/A control that shows how far two identical peers' p99 differ in the same run.
# and, for the cache case (MODE=cache), GET lookups answered from a cache:
#   sidecar-cache  token-sidecar with [routes.cache] ttl = "10m" on the route (every request
#                  after the first is a hit: x-token-sidecar-cache: hit)
#   nginx-cache    nginx as above with proxy_cache (keys_zone in shared memory, files under the
#                  work folder, proxy_cache_valid 200 10m; X-Cache-Status: HIT)
#   sidecar        the same GET through the uncached sidecar, and direct, for scale
# with `GET /lookup?id=42` and `Authorization: Bearer {/auth_token}` (CACHE_CONNS, default
# "1 16 256").
# and, for the shared cache (MODE=shared-cache, `[cache] backend = "redis"`), GET lookups that
# rotate over SHARED_KEYS ids (default 1000: /lookup?id=0..999, in order), so the same keys
# are asked of every peer:
#   sidecar-shared token-sidecar with a local tier too small to keep them ([cache] max_bytes
#                  = "4KiB"): nearly every request is a hit read from a redis-server on
#                  loopback (started here; its CPU is counted with the sidecar's), then kept
#                  locally in place of another (the report gives the share of hits that came
#                  from Redis)
#   sidecar-cache  the local store holding every key (hits without Redis)
#   nginx-cache, sidecar (uncached), direct, as above.
# Every request of the other cases is a POST in absolute form (forward-proxy mode, as HTTP_PROXY clients send)
# with `Authorization: Bearer {/auth_token}` and a 48-byte JSON body holding a placeholder;
# direct gets the same request in origin form. Reported per case: requests/s, p50 and p99
# latency, CPU per request of the proxy (utime+stime delta over the run divided by requests),
# idle RSS after start and peak RSS (VmHWM) at the end. Ratios are medians of the per-round
# ratios (each round runs the peers back to back). Results: a table on stdout and
# target/load-bench/results-<timestamp>.json.
#
# Requires root on a fresh Debian machine only for `apt-get install` of wrk, nginx and curl
# when they are missing. Every process started here is killed on exit.

set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${MODE:-all}
DURATION=${DURATION:-4}
ROUNDS=${ROUNDS:-5}
REFRESH_ROUNDS=${REFRESH_ROUNDS:-9}
HTTPS_CASES=${HTTPS_CASES:-"https-keepalive https-newconn https-resume h2"}
HTTPS_CONNS=${HTTPS_CONNS:-"1 16 256"}
HTTPS_NEWCONN_CONNS=${HTTPS_NEWCONN_CONNS:-"1 16"}
HTTPS_H2_STREAMS=${HTTPS_H2_STREAMS:-64}
HTTPS_PEERS=${HTTPS_PEERS:-"direct sidecar nginx floor mitmproxy"}
CONNS=${CONNS:-"1 16 256"}
REFRESH_CONNS=${REFRESH_CONNS:-"1 16"}
CACHE_CONNS=${CACHE_CONNS:-"1 16 256"}
SHARED_KEYS=${SHARED_KEYS:-1000}
PEERS_WANTED=${PEERS:-"direct sidecar nginx floor sidecar-2w mitmproxy"}
export SCRAPE_METRICS=${SCRAPE_METRICS:-0}
WRK_THREADS=${WRK_THREADS:-1}
SKIP_MITM=${SKIP_MITM:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT_DIR=$ROOT/target/load-bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d /tmp/token-sidecar-load.XXXXXX)
# Sidecar configs live in their own folder: the sidecar watches its config folder for
# reloads, so logs written next to the config would wake it on every line.
CONF=$WORK/conf
LOGS=$WORK/logs
RUNS=$LOGS/runs.jsonl
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$OUT_DIR" "$CONF" "$LOGS"
: >"$RUNS"

case $MODE in all | throughput | refresh | cache | shared-cache | https) ;; *)
  echo "MODE must be all, throughput, refresh, cache, shared-cache or https" >&2
  exit 2
  ;;
esac

log() { printf '[load %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a command in the background with its output in $LOGS/NAME.log; sets STARTED_PID.
start() {
  local name=$1
  shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

stop() {
  local pid=$1 p kept=()
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

NEXT_PORT=${BASE_PORT:-18480}
# Sets PORT to a free loopback port.
pick_port() {
  while port_open "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
  PORT=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 1))
}

wait_port() {
  local port=$1 pid=$2 name=$3
  for _ in $(seq 300); do
    port_open "$port" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited before listening on $port:" >&2
      cat "$LOGS/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  echo "$name did not listen on $port within 30 s" >&2
  exit 1
}

# ---------------------------------------------------------------- tools
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3 python3-venv)
if [ "$MODE" = all ] || [ "$MODE" = shared-cache ]; then
  command -v redis-server >/dev/null || need+=(redis-server)
fi
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${need[@]}" >"$LOGS/apt.log" 2>&1; then
    apt-get update -qq >>"$LOGS/apt.log" 2>&1
    apt-get install -y -qq "${need[@]}" >>"$LOGS/apt.log" 2>&1 || {
      cat "$LOGS/apt.log" >&2
      exit 1
    }
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

MITM=""
MITM_NOTE=""
if [ "$MODE" = all ] || [ "$MODE" = throughput ] || [ "$MODE" = https ]; then
  if [ "$SKIP_MITM" = 1 ]; then
    MITM_NOTE="skipped (SKIP_MITM=1)"
  else
    VENV=$OUT_DIR/mitm-venv
    if [ ! -x "$VENV/bin/mitmdump" ]; then
      log "installing mitmproxy into $VENV (bounded to 4 minutes)"
      if ! { python3 -m venv "$VENV" && timeout 240 "$VENV/bin/pip" install --quiet --disable-pip-version-check mitmproxy; } \
        >"$LOGS/pip.log" 2>&1; then
        MITM_NOTE="skipped: pip install mitmproxy failed or took over 4 minutes ($(tail -1 "$LOGS/pip.log"))"
      fi
    fi
    if [ -x "$VENV/bin/mitmdump" ] && [ -z "$MITM_NOTE" ]; then
      MITM=$VENV/bin/mitmdump
      MITM_NOTE=$("$MITM" --version 2>/dev/null | head -1)
    fi
  fi
  log "mitmproxy: ${MITM_NOTE}"
fi

if [ "$SKIP_BUILD" != 1 ]; then
  log "building the release binary (fat LTO: several minutes on a clean tree)"
  cargo build --release --quiet --bin token-sidecar
fi
SIDECAR=$ROOT/target/release/token-sidecar
[ -x "$SIDECAR" ] || {
  echo "missing $SIDECAR" >&2
  exit 1
}

# ---------------------------------------------------------------- upstream
pick_port
UP=$PORT
mkdir -p "$WORK/upstream/logs"
cat >"$WORK/upstream/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $WORK/upstream/body;
  server {
    listen 127.0.0.1:$UP backlog=4096;
    # What the proxy sent, for the sanity check before measuring.
    location = /check { return 200 "auth=\$http_authorization length=\$content_length\n"; }
    location / { return 200 "ok\n"; }
  }
}
EOF
start upstream "$NGINX" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -g "daemon off;"
wait_port "$UP" "$STARTED_PID" upstream
log "upstream nginx on 127.0.0.1:$UP"

# ---------------------------------------------------------------- keys and fixed token
KEYS=$WORK/keys
mkdir -p "$KEYS"
cp examples/keys/demo-rsa.key.pem "$KEYS/"

# A sidecar config: $1 file, $2 proxy port, $3 admin port, $4 worker threads, $5 key file,
# $6 ttl, $7 refresh_before, $8 (optional) tables appended to the route.
sidecar_config() {
  cat >"$1" <<EOF
[proxy]
listen = "127.0.0.1:$2"
worker_threads = $4

[admin]
listen = "127.0.0.1:$3"

[tokens.api_jwt]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "$5"
kid = "bench"
ttl = "$6"
refresh_before = "$7"

[tokens.api_jwt.claims]
iss = "token-sidecar-bench"
sub = "agent-function"
aud = "127.0.0.1"
scope = "read write"

[[routes]]
name = "upstream"
scheme = "http"
host = "127.0.0.1"
port = $UP
tokens = ["api_jwt"]

[routes.placeholders]
auth_token = "api_jwt"

${8:-}
EOF
}

# nginx and mitmproxy set this fixed token: a real one of the same size as the sidecar's.
sidecar_config "$CONF/sign.toml" 1 2 1 "$KEYS/demo-rsa.key.pem" 15m 3m
FIXED_TOKEN=$("$SIDECAR" --config "$CONF/sign.toml" --log error sign api_jwt)
[ "${#FIXED_TOKEN}" -gt 100 ] || {
  echo "could not sign the fixed token" >&2
  exit 1
}

# ---------------------------------------------------------------- wrk scripts
BODY='{"query":"status","token":"{/auth_token}","n":1}'
# $1 file, $2 path (absolute-form URL for proxies, origin-form for direct).
# $3, when given, is written where the placeholder stands (the request already holds a token).
wrk_script() {
  local token=${3:-'{/auth_token}'}
  cat >"$1" <<EOF
local body = '${BODY//\{\/auth_token\}/$token}'
local req = wrk.format("POST", "$2", {
  ["Host"] = "127.0.0.1:$UP",
  ["Authorization"] = "Bearer $token",
  ["Content-Type"] = "application/json",
  ["User-Agent"] = "agent-function/1.0",
  ["Accept"] = "application/json",
}, body)
request = function() return req end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
end
EOF
}
wrk_script "$WORK/proxy.lua" "http://127.0.0.1:$UP/bench"
wrk_script "$WORK/direct.lua" "/bench"
wrk_script "$WORK/literal.lua" "http://127.0.0.1:$UP/bench" "$FIXED_TOKEN"

# The cache case: a GET lookup, the same every time. $1 file, $2 target.
wrk_get_script() {
  cat >"$1" <<EOF
local req = wrk.format("GET", "$2", {
  ["Host"] = "127.0.0.1:$UP",
  ["Authorization"] = "Bearer {/auth_token}",
  ["User-Agent"] = "agent-function/1.0",
  ["Accept"] = "application/json",
})
request = function() return req end
EOF
  sed -n '/^done = function/,$p' "$WORK/proxy.lua" >>"$1"
}
wrk_get_script "$WORK/cache-proxy.lua" "http://127.0.0.1:$UP/lookup?id=42"
wrk_get_script "$WORK/cache-direct.lua" "/lookup?id=42"

# The shared-cache case: GET lookups rotating over SHARED_KEYS ids. $1 file, $2 target prefix.
wrk_rotating_script() {
  cat >"$1" <<EOF
local headers = {
  ["Host"] = "127.0.0.1:$UP",
  ["Authorization"] = "Bearer {/auth_token}",
  ["User-Agent"] = "agent-function/1.0",
  ["Accept"] = "application/json",
}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "$2" .. (n % $SHARED_KEYS), headers)
end
EOF
  sed -n '/^done = function/,$p' "$WORK/proxy.lua" >>"$1"
}
wrk_rotating_script "$WORK/shared-cache-proxy.lua" "http://127.0.0.1:$UP/lookup?id="
wrk_rotating_script "$WORK/shared-cache-direct.lua" "/lookup?id="

# ---------------------------------------------------------------- peers
declare -A PORT_OF PORT2_OF PID_OF SCRAPER_OF BIN_OF CA_OF ADMIN_OF
# BASELINE_BIN: another build of the sidecar, run as peer `sidecar-base` (to measure what a
# change bought, in the same run).
[ -n "${BASELINE_BIN:-}" ] && BIN_OF[sidecar-base]=$BASELINE_BIN

pids_of() { # the process and its children (nginx workers)
  local pid=$1
  echo "$pid" $(pgrep -P "$pid" || true)
}

cpu_ticks() { # $1 pid (with its children), then other pids counted with it (its Redis)
  local total=0 pid f
  for pid in $(pids_of "$1") "${@:2}"; do
    [ -r "/proc/$pid/stat" ] || continue
    read -ra f <<<"$(sed 's/^.*) //' "/proc/$pid/stat")"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

mem_kib() { # $1 pid, $2 VmRSS or VmHWM; summed over the process and its children
  local total=0 pid v
  for pid in $(pids_of "$1"); do
    v=$(awk -v k="$2:" '$1 == k { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

start_sidecar() { # $1 name, $2 worker threads, $3 key, $4 ttl, $5 refresh_before, $6 route tables
  local name=$1 admin
  pick_port
  PORT_OF[$name]=$PORT
  pick_port
  admin=$PORT
  ADMIN_OF[$name]=$admin
  sidecar_config "$CONF/$name.toml" "${PORT_OF[$name]}" "$admin" "$2" "$3" "$4" "$5" "${6:-}"
  start "$name" "${BIN_OF[$name]:-$SIDECAR}" --config "$CONF/$name.toml" --log info run
  PID_OF[$name]=$STARTED_PID
  wait_port "${PORT_OF[$name]}" "$STARTED_PID" "$name"
  if [ "$SCRAPE_METRICS" = 1 ]; then
    # Ends with the sidecar (checked every second), and is killed on exit in any case.
    start "$name-scraper" bash -c 'while kill -0 "$1" 2>/dev/null; do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$2/metrics"; sleep 1; done' _ "$STARTED_PID" "$admin"
    SCRAPER_OF[$name]=$STARTED_PID
  fi
}

start_nginx_proxy() { # $1 name: nginx, or nginx-cache with proxy_cache
  local name=${1:-nginx} dir=$WORK/${1:-nginx}-proxy cache_main="" cache_http="" cache_location=""
  pick_port
  PORT_OF[$name]=$PORT
  mkdir -p "$dir/logs"
  if [ "$name" = nginx-cache ]; then
    # Workers of a root master run as nobody, who cannot write the cache in the work folder.
    [ "$(id -u)" = 0 ] && cache_main="user root;"
    cache_http="proxy_cache_path $dir/cache levels=1:2 keys_zone=lookups:10m max_size=64m inactive=10m use_temp_path=off;"
    cache_location="proxy_cache lookups; proxy_cache_valid 200 10m; add_header X-Cache-Status \$upstream_cache_status;"
  fi
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
$cache_main
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  $cache_http
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  upstream up {
    server 127.0.0.1:$UP;
    keepalive 1024;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:${PORT_OF[$name]} backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host "127.0.0.1:$UP";
      proxy_set_header Authorization "Bearer $FIXED_TOKEN";
      $cache_location
    }
  }
}
EOF
  start "$name" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g "daemon off;"
  PID_OF[$name]=$STARTED_PID
  wait_port "${PORT_OF[$name]}" "$STARTED_PID" "$name"
}

start_mitm() { # extra arguments go to mitmdump
  local name=mitmproxy
  pick_port
  PORT_OF[$name]=$PORT
  cat >"$WORK/mitm_addon.py" <<EOF
class SetAuthorization:
    def request(self, flow):
        flow.request.headers["Authorization"] = "Bearer $FIXED_TOKEN"


addons = [SetAuthorization()]
EOF
  start "$name" "$MITM" --mode regular --listen-host 127.0.0.1 --listen-port "${PORT_OF[$name]}" \
    -s "$WORK/mitm_addon.py" --set flow_detail=0 --set termlog_verbosity=error \
    --set confdir="$WORK/mitm-conf" "$@"
  PID_OF[$name]=$STARTED_PID
  wait_port "${PORT_OF[$name]}" "$STARTED_PID" "$name"
}

# Checks that a peer forwards to the upstream and sets the header (and, for the sidecar,
# substitutes the body).
sanity_check() {
  local name=$1 got
  if [ "$name" = direct ]; then return 0; fi
  got=$(curl -sS --max-time 10 -x "http://127.0.0.1:${PORT_OF[$name]}" -H 'Authorization: Bearer {/auth_token}' \
    -H 'Content-Type: application/json' --data-binary "$BODY" "http://127.0.0.1:$UP/check")
  case $got in
  "auth=Bearer eyJ"*) ;;
  *)
    echo "sanity check failed for $name: upstream saw: $got" >&2
    exit 1
    ;;
  esac
  if [[ $name == sidecar* ]] && [[ $got == *"length=${#BODY}" ]]; then
    echo "sanity check failed for $name: body was not substituted ($got)" >&2
    exit 1
  fi
  if [ "$name" = sidecar-shared ]; then
    got=$(curl -sS --max-time 10 -D - -o /dev/null -x "http://127.0.0.1:${PORT_OF[$name]}" \
      -H 'Authorization: Bearer {/auth_token}' "http://127.0.0.1:$UP/lookup?id=sanity" | tr -d '\r')
    local stored=0
    for _ in $(seq 50); do
      # (wc reads every line: `head` would end redis-cli with SIGPIPE, and pipefail the run)
      stored=$(redis-cli -p "$REDIS_PORT" --scan --pattern 'token-sidecar:cache:*' | wc -l)
      [ "$stored" -gt 0 ] && break
      sleep 0.1
    done
    if [[ $got != *"x-token-sidecar-cache: "* ]] || [ "$stored" -eq 0 ]; then
      echo "sanity check failed for $name: the lookup was not stored in Redis: $got" >&2
      exit 1
    fi
  fi
  if [[ $name == *-cache ]]; then
    # The second lookup must be answered from the cache. (/check is not: its answer echoes
    # the token, which the sidecar never stores.)
    local i
    for i in 1 2; do
      got=$(curl -sS --max-time 10 -D - -o /dev/null -x "http://127.0.0.1:${PORT_OF[$name]}" \
        -H 'Authorization: Bearer {/auth_token}' "http://127.0.0.1:$UP/lookup?id=42" | tr -d '\r')
    done
    case $got in
    *"x-token-sidecar-cache: hit"* | *"X-Cache-Status: HIT"*) ;;
    *)
      echo "sanity check failed for $name: the second lookup was not a cache hit: $got" >&2
      exit 1
      ;;
    esac
  fi
}

# Runs wrk against a peer once and appends one JSON line to $RUNS.
# $1 mode, $2 peer, $3 connections, $4 round, $5 seconds.
run_wrk() {
  local mode=$1 name=$2 conns=$3 round=$4 secs=$5 url script threads before after out json refreshes
  if [ "$name" = direct ]; then
    url="http://127.0.0.1:$UP/bench"
    script=$WORK/direct.lua
  else
    url="http://127.0.0.1:${PORT_OF[$name]}/bench"
    script=$WORK/proxy.lua
  fi
  [ "$name" = sidecar-literal ] && script=$WORK/literal.lua
  if [ "$mode" = cache ] || [ "$mode" = shared-cache ]; then
    script=$WORK/$mode-${script##*/}
  fi
  # The shared cache's Redis works for the sidecar: its CPU is the sidecar's cost.
  local extra=()
  [ "$name" = sidecar-shared ] && extra=("$REDIS_PID")
  threads=$((conns < WRK_THREADS ? conns : WRK_THREADS))
  local pid=${PID_OF[$name]:-}
  before=0
  [ -n "$pid" ] && before=$(cpu_ticks "$pid" "${extra[@]}")
  local log_lines_before=0
  [ -n "$pid" ] && log_lines_before=$(grep -c 'token refreshed' "$LOGS/$name.log" || true)
  out=$(wrk -t "$threads" -c "$conns" -d "${secs}s" --timeout 5s --latency -s "$script" "$url" 2>&1) || {
    echo "wrk failed against $name: $out" >&2
    exit 1
  }
  after=0
  [ -n "$pid" ] && after=$(cpu_ticks "$pid" "${extra[@]}")
  refreshes=0
  [ -n "$pid" ] && refreshes=$(($(grep -c 'token refreshed' "$LOGS/$name.log" || true) - log_lines_before))
  json=$(grep '^WRKJSON ' <<<"$out" | sed 's/^WRKJSON //')
  [ -n "$json" ] || {
    echo "no result from wrk against $name: $out" >&2
    exit 1
  }
  [ "$round" -ge 0 ] || return 0
  printf '{"kind":"run","mode":"%s","peer":"%s","conns":%d,"round":%d,"cpu_ticks":%d,"clk_tck":%d,"refreshes":%d,"wrk":%s}\n' \
    "$mode" "$name" "$conns" "$round" "$((after - before))" "$CLK_TCK" "$refreshes" "$json" >>"$RUNS"
  report_round "$json" "$name" "$conns" "$round" "$((after - before))"
}

# Prints one round's figures. $1 the load client's JSON, $2 peer, $3 conns, $4 round, $5 CPU ticks.
report_round() {
  python3 - "$1" "$2" "$3" "$4" "$5" "$CLK_TCK" <<'EOF' >&2
import json, sys
w = json.loads(sys.argv[1]); name, conns, rnd, ticks, tck = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
rps = w["requests"] / (w["duration_us"] / 1e6)
cpu = ticks / tck * 1e6 / max(w["requests"], 1)
bad = w["socket_errors"] + w["non2xx"]
resumed = f"  resumed {w['resumed']}/{w['handshakes']}" if w.get("handshakes") else ""
print(f"    round {rnd} {name:<12} c={conns:<4} {rps:>9.0f} req/s  p50 {w['p50_us']:>8.0f} us  p99 {w['p99_us']:>8.0f} us"
      f"  cpu {cpu:>6.1f} us/req" + resumed + (f"  ERRORS {bad}" if bad else ""))
EOF
}

record_mem() { # $1 mode, $2 peer, $3 conns, $4 what (idle|peak|end_rss)
  local name=$2 v
  case $4 in
  idle | end_rss) v=$(mem_kib "${PID_OF[$name]}" VmRSS) ;;
  peak) v=$(mem_kib "${PID_OF[$name]}" VmHWM) ;;
  esac
  printf '{"kind":"mem","mode":"%s","peer":"%s","conns":%d,"what":"%s","kib":%d}\n' "$1" "$name" "$3" "$4" "$v" >>"$RUNS"
}

# How many of sidecar-shared's hits came from Redis (the rest from its small local tier).
record_shared_hits() { # $1 mode, $2 conns
  local metrics hits shared
  metrics=$(curl -s --max-time 5 "http://127.0.0.1:${ADMIN_OF[sidecar-shared]}/metrics")
  hits=$(awk '/^cache_requests_total\{/ && /result="hit"/ { s += $2 } END { print s + 0 }' <<<"$metrics")
  shared=$(awk '/^cache_shared_lookups_total\{/ && /result="hit"/ { s += $2 } END { print s + 0 }' <<<"$metrics")
  log "sidecar-shared: $shared of $hits hits came from Redis"
  printf '{"kind":"hits","mode":"%s","peer":"sidecar-shared","conns":%d,"hits":%d,"from_redis":%d}\n' \
    "$1" "$2" "$hits" "$shared" >>"$RUNS"
}

# Builds benches/floor_proxy with the release profile (fat LTO, like the sidecar) once, and
# sets FLOOR to its path.
FLOOR=""
build_floor() {
  [ -n "$FLOOR" ] && return 0
  log "building benches/floor_proxy (release profile)"
  FLOOR=$(cargo bench --no-run --bench floor_proxy --profile release --message-format=json 2>"$LOGS/floor-build.log" |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "floor_proxy" and m.get("executable"):
        print(m["executable"])')
  [ -x "$FLOOR" ] || {
    cat "$LOGS/floor-build.log" >&2
    exit 1
  }
}

# Starts the floor peer in front of upstream $1 (host:port); the rest are floor_proxy options
# (TLS on either side).
start_floor() {
  local name=floor upstream=$1
  shift
  build_floor
  pick_port
  PORT_OF[$name]=$PORT
  start "$name" "$FLOOR" --listen "127.0.0.1:$PORT" --upstream "$upstream" --authorization "Bearer $FIXED_TOKEN" "$@"
  PID_OF[$name]=$STARTED_PID
  wait_port "$PORT" "$STARTED_PID" "$name"
}

start_peer() {
  case $1 in
  floor) start_floor "127.0.0.1:$UP" ;;
  direct) ;;
  sidecar) start_sidecar sidecar 1 "$KEYS/demo-rsa.key.pem" 15m 3m ;;
  sidecar-2w) start_sidecar sidecar-2w 2 "$KEYS/demo-rsa.key.pem" 15m 3m ;;
  sidecar-base) start_sidecar sidecar-base 1 "$KEYS/demo-rsa.key.pem" 15m 3m ;;
  sidecar-literal) start_sidecar sidecar-literal 1 "$KEYS/demo-rsa.key.pem" 15m 3m ;;
  nginx) start_nginx_proxy nginx ;;
  nginx-cache) start_nginx_proxy nginx-cache ;;
  sidecar-cache) start_sidecar sidecar-cache 1 "$KEYS/demo-rsa.key.pem" 15m 3m $'[routes.cache]\nttl = "10m"' ;;
  sidecar-shared)
    start_sidecar sidecar-shared 1 "$KEYS/demo-rsa.key.pem" 15m 3m "$(
      printf '[routes.cache]\nttl = "10m"\nmax_body = "4KiB"\n\n[cache]\nbackend = "redis"\nmax_bytes = "4KiB"\n\n'
      printf '[fleet]\nredis_url = "redis://127.0.0.1:%s"\nencryption_key = { key_file = "%s" }\n' "$REDIS_PORT" "$WORK/fleet.key"
    )"
    ;;
  mitmproxy) start_mitm ;;
  sidecar-4096) start_sidecar sidecar-4096 1 "$KEYS/rsa4096.key.pem" 15m 3m ;;
  sidecar-4096-control) start_sidecar sidecar-4096-control 1 "$KEYS/rsa4096.key.pem" 15m 3m ;;
  sidecar-4096-refresh) start_sidecar sidecar-4096-refresh 1 "$KEYS/rsa4096.key.pem" 2s 1s ;;
  esac
}

# One load run against a peer: $1 1 for the HTTPS load client, 0 for wrk; the rest as run_wrk.
load_once() {
  local https=$1
  shift
  if [ "$https" = 1 ]; then run_tls "$@"; else run_wrk "$@"; fi
}

# One case: fresh peers, idle RSS, a warm-up, then ROUNDS interleaved rounds with rotated
# order, then peak RSS, then the peers are stopped.
run_case() {
  local mode=$1 conns=$2 rounds=$ROUNDS
  [ "$mode" = refresh ] && rounds=$REFRESH_ROUNDS
  shift 2
  local peers=("$@") n=$# r i name https=0
  case $mode in https-* | h2) https=1 ;; esac
  log "$mode: $conns connection(s): ${peers[*]}"
  for name in "${peers[@]}"; do
    if [ $https = 1 ]; then start_https_peer "$name"; else start_peer "$name"; fi
  done
  sleep 1
  for name in "${peers[@]}"; do
    if [ $https = 1 ]; then sanity_https "$mode" "$name"; fi
    [ "$name" = direct ] && continue
    record_mem "$mode" "$name" "$conns" idle
    if [ $https = 0 ]; then sanity_check "$name"; fi
  done
  # Warm-up (long enough for the shared cache's first pass over its keys to store them all).
  local warm=1
  [ "$mode" = shared-cache ] && warm=3
  for name in "${peers[@]}"; do load_once "$https" "$mode" "$name" "$conns" -1 "$warm"; done
  for r in $(seq 0 $((rounds - 1))); do
    for i in $(seq 0 $((n - 1))); do
      name=${peers[$(((i + r) % n))]}
      load_once "$https" "$mode" "$name" "$conns" "$r" "$DURATION"
    done
  done
  if [[ " ${peers[*]} " == *" sidecar-shared "* ]]; then record_shared_hits "$mode" "$conns"; fi
  for name in "${peers[@]}"; do
    [ "$name" = direct ] && continue
    record_mem "$mode" "$name" "$conns" peak
    record_mem "$mode" "$name" "$conns" end_rss
    stop "${PID_OF[$name]}"
    unset "PID_OF[$name]"
    if [ -n "${SCRAPER_OF[$name]:-}" ]; then
      stop "${SCRAPER_OF[$name]}"
      unset "SCRAPER_OF[$name]"
    fi
  done
}

# ---------------------------------------------------------------- run
# shellcheck source=benches/load_https.sh
source benches/load_https.sh
if [ "$MODE" = all ] || [ "$MODE" = https ]; then
  build_tls_load
  make_certs
  start_tls_upstreams
  HTTPS_PEER_LIST=()
  for p in $HTTPS_PEERS; do
    [ "$p" = mitmproxy ] && [ -z "$MITM" ] && continue
    HTTPS_PEER_LIST+=("$p")
  done
fi
if [ "$MODE" = all ] || [ "$MODE" = throughput ]; then
  PEERS=()
  for p in $PEERS_WANTED; do
    [ "$p" = mitmproxy ] && [ -z "$MITM" ] && continue
    PEERS+=("$p")
  done
  for c in $CONNS; do run_case throughput "$c" "${PEERS[@]}"; done
fi
if [ "$MODE" = all ] || [ "$MODE" = cache ]; then
  for c in $CACHE_CONNS; do run_case cache "$c" direct sidecar-cache nginx-cache sidecar; done
fi
if [ "$MODE" = all ] || [ "$MODE" = shared-cache ]; then
  pick_port
  REDIS_PORT=$PORT
  mkdir -p "$WORK/redis"
  head -c 32 /dev/urandom | base64 >"$WORK/fleet.key"
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$WORK/redis" --maxmemory 256mb --maxmemory-policy volatile-ttl
  REDIS_PID=$STARTED_PID
  wait_port "$REDIS_PORT" "$REDIS_PID" redis
  for c in $CACHE_CONNS; do run_case shared-cache "$c" direct sidecar-shared sidecar-cache nginx-cache sidecar; done
fi
if [ "$MODE" = all ] || [ "$MODE" = refresh ]; then
  log "generating an RSA-4096 key"
  "$SIDECAR" keygen --alg RS256 --bits 4096 --out "$KEYS" --name rsa4096 >/dev/null 2>&1
  for c in $REFRESH_CONNS; do run_case refresh "$c" sidecar-4096 sidecar-4096-refresh sidecar-4096-control; done
fi

if [ "$MODE" = all ] || [ "$MODE" = https ]; then
  for case_name in $HTTPS_CASES; do
    case $case_name in
    https-keepalive) for c in $HTTPS_CONNS; do run_case "$case_name" "$c" "${HTTPS_PEER_LIST[@]}"; done ;;
    https-newconn | https-resume)
      # The floor is the keep-alive case's: a handshake costs what rustls costs, measured
      # by the sidecar itself here.
      handshake_peers=()
      for p in "${HTTPS_PEER_LIST[@]}"; do [ "$p" = floor ] || handshake_peers+=("$p"); done
      for c in $HTTPS_NEWCONN_CONNS; do run_case "$case_name" "$c" "${handshake_peers[@]}"; done
      ;;
    h2)
      # mitmproxy is left out of the h2 case (it is there for scale, on HTTP/1.1), and the
      # floor, which speaks HTTP/1.1 only.
      h2_peers=()
      for p in "${HTTPS_PEER_LIST[@]}"; do [ "$p" = mitmproxy ] || [ "$p" = floor ] || h2_peers+=("$p"); done
      run_case h2 1 "${h2_peers[@]}"
      ;;
    *)
      echo "unknown HTTPS case $case_name" >&2
      exit 2
      ;;
    esac
  done
fi

# ---------------------------------------------------------------- report
RESULT=$OUT_DIR/results-$STAMP.json
export REFRESH_ROUNDS
python3 benches/load_report.py "$RUNS" "$RESULT" "$MITM_NOTE" "$DURATION" "$ROUNDS" "$WRK_THREADS" \
  "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
