# The HTTPS cases of benches/load.sh (MODE=https), sourced by it: the path most agent
# traffic takes, HTTPS_PROXY through an intercepting sidecar, against its peers.
#
# Everything on 127.0.0.1, TLS 1.3 everywhere (nginx before 1.23.4 must be told), all
# certificates ECDSA P-256 (the key type of the sidecar's own leaves) from one bench CA:
#   TLS upstreams  nginx `return 200 "ok\n"` on TLS1 (HTTP/1.1 only) and TLS2 (h2 and
#                  HTTP/1.1 over ALPN)
#   direct         the load client -> the TLS upstream
#   sidecar        the load client -> CONNECT -> token-sidecar, intercepting with a leaf from
#                  its own CA -> TLS to the upstream (verified against the bench CA)
#   nginx          the load client -> nginx terminating TLS as a reverse proxy (`listen ssl`,
#                  `http2` for the h2 case) -> TLS to the same upstream (proxy_ssl_verify on,
#                  keepalive 1024), setting the same Authorization header; it prefers the same
#                  TLS 1.3 suites as the sidecar's interception (NGINX_TLS13_SUITES, AES-128-GCM
#                  first), so both do the same crypto work (set it empty for OpenSSL's order)
#   floor          the load client -> benches/floor_proxy terminating TLS (rustls, nginx's
#                  certificate, the sidecar's suite order) -> TLS to the HTTP/1.1 upstream, one
#                  upstream connection per client connection, the same fixed header: what the
#                  stack costs on this path (https-keepalive only)
#   mitmproxy      the load client -> CONNECT -> mitmdump intercepting with its CA -> upstream
# Cases (the load client is benches/tls_load, one thread like wrk -t1; requests as in the
# plain case, POST /bench with the placeholder header and JSON body):
#   https-keepalive  HTTPS_CONNS keep-alive connections, requests back to back
#   https-newconn    HTTPS_NEWCONN_CONNS workers, a new connection (CONNECT, full TLS
#                    handshake) per request, as Python requests without a Session
#   https-resume     the same, the workers sharing a TLS session store: resumed handshakes
#   h2               one h2 connection with HTTPS_H2_STREAMS requests in flight (h2 to the
#                    upstream for the sidecar; nginx can only speak HTTP/1.1 upstream)

TLS_LOAD=""
CERTS=$WORK/certs
NGINX_TLS13_SUITES=${NGINX_TLS13_SUITES-TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384}

# Builds benches/tls_load (bench profile) and sets TLS_LOAD to its path.
build_tls_load() {
  log "building the HTTPS load client (cargo bench --no-run --bench tls_load)"
  TLS_LOAD=$(cargo bench --no-run --bench tls_load --message-format=json 2>"$LOGS/tls_load-build.log" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "tls_load" and m.get("executable"):
        print(m["executable"])')
  [ -x "$TLS_LOAD" ] || {
    cat "$LOGS/tls_load-build.log" >&2
    echo "could not build benches/tls_load" >&2
    exit 1
  }
}

# $1 name, $2 subject alt names: a P-256 key and a certificate from the bench CA.
p256_leaf() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$CERTS/$1.key" 2>/dev/null
  openssl req -new -key "$CERTS/$1.key" -subj "/CN=localhost" -out "$CERTS/$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' "$2" \
    >"$CERTS/$1.ext"
  openssl x509 -req -in "$CERTS/$1.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" -CAcreateserial -days 7 \
    -extfile "$CERTS/$1.ext" -out "$CERTS/$1.pem" 2>/dev/null
}

make_certs() {
  mkdir -p "$CERTS"
  openssl ecparam -name prime256v1 -genkey -noout -out "$CERTS/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$CERTS/ca.key" -subj "/CN=token-sidecar bench CA" -days 7 -out "$CERTS/ca.pem" 2>/dev/null
  p256_leaf upstream "DNS:localhost,IP:127.0.0.1"
  p256_leaf nginx "DNS:localhost,IP:127.0.0.1"
}

start_tls_upstreams() {
  local dir=$WORK/tls-upstream
  pick_port
  UP_TLS1=$PORT
  pick_port
  UP_TLS2=$PORT
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $dir/body;
  # nginx before 1.23.4 leaves TLS 1.3 off unless asked.
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate $CERTS/upstream.pem;
  ssl_certificate_key $CERTS/upstream.key;
  server {
    listen 127.0.0.1:$UP_TLS1 ssl backlog=4096;
    location = /check { return 200 "auth=\$http_authorization length=\$content_length\n"; }
    location / { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:$UP_TLS2 ssl http2 backlog=4096;
    location = /check { return 200 "auth=\$http_authorization length=\$content_length\n"; }
    location / { return 200 "ok\n"; }
  }
}
EOF
  start tls-upstream "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g "daemon off;"
  wait_port "$UP_TLS1" "$STARTED_PID" tls-upstream
  wait_port "$UP_TLS2" "$STARTED_PID" tls-upstream
  log "TLS upstreams (nginx): HTTP/1.1 on 127.0.0.1:$UP_TLS1, h2 on 127.0.0.1:$UP_TLS2"
}

# The sidecar intercepting both TLS upstreams (routes localhost:UP_TLS1 and :UP_TLS2).
start_sidecar_https() {
  local name=sidecar admin
  pick_port
  PORT_OF[$name]=$PORT
  pick_port
  admin=$PORT
  mkdir -p "$CONF/$name-ca"
  cat >"$CONF/$name-https.toml" <<EOF
[proxy]
listen = "127.0.0.1:${PORT_OF[$name]}"
extra_ca_file = "$CERTS/ca.pem"

[admin]
listen = "127.0.0.1:$admin"

[tls]
ca_cert = "$CONF/$name-ca/ca.pem"
ca_key = "$CONF/$name-ca/ca.key"
generate_if_missing = true

[tokens.api_jwt]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "$KEYS/demo-rsa.key.pem"
kid = "bench"
ttl = "15m"
refresh_before = "3m"

[tokens.api_jwt.claims]
iss = "token-sidecar-bench"
sub = "agent-function"
aud = "localhost"
scope = "read write"

[[routes]]
name = "upstream-http1"
host = "localhost"
port = $UP_TLS1
tokens = ["api_jwt"]

[routes.placeholders]
auth_token = "api_jwt"

[[routes]]
name = "upstream-h2"
host = "localhost"
port = $UP_TLS2
tokens = ["api_jwt"]

[routes.placeholders]
auth_token = "api_jwt"
EOF
  start "$name" "${BIN_OF[$name]:-$SIDECAR}" --config "$CONF/$name-https.toml" --log info run
  PID_OF[$name]=$STARTED_PID
  wait_port "${PORT_OF[$name]}" "$STARTED_PID" "$name"
  CA_OF[$name]=$CONF/$name-ca/ca.pem
}

# nginx terminating TLS (TLS1: HTTP/1.1; TLS2: h2) and proxying to the TLS upstreams.
start_nginx_tls() {
  local name=nginx dir=$WORK/nginx-tls suites=""
  if [ -n "$NGINX_TLS13_SUITES" ]; then
    suites="ssl_prefer_server_ciphers on; ssl_conf_command Ciphersuites $NGINX_TLS13_SUITES;"
  fi
  pick_port
  PORT_OF[$name]=$PORT
  pick_port
  PORT2_OF[$name]=$PORT
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate $CERTS/nginx.pem;
  ssl_certificate_key $CERTS/nginx.key;
  $suites
  proxy_ssl_protocols TLSv1.2 TLSv1.3;
  upstream tls1 { server 127.0.0.1:$UP_TLS1; keepalive 1024; keepalive_requests 10000000; keepalive_timeout 120s; }
  upstream tls2 { server 127.0.0.1:$UP_TLS2; keepalive 1024; keepalive_requests 10000000; keepalive_timeout 120s; }
  proxy_http_version 1.1;
  proxy_ssl_verify on;
  proxy_ssl_trusted_certificate $CERTS/ca.pem;
  proxy_ssl_name localhost;
  proxy_ssl_server_name on;
  proxy_ssl_session_reuse on;
  server {
    listen 127.0.0.1:${PORT_OF[$name]} ssl backlog=4096;
    # (proxy_set_header is inherited only by levels that set none: all of them here.)
    location / {
      proxy_pass https://tls1;
      proxy_set_header Host "localhost:$UP_TLS1";
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $FIXED_TOKEN";
    }
  }
  server {
    listen 127.0.0.1:${PORT2_OF[$name]} ssl http2 backlog=4096;
    location / {
      proxy_pass https://tls2;
      proxy_set_header Host "localhost:$UP_TLS2";
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $FIXED_TOKEN";
    }
  }
}
EOF
  start "$name" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g "daemon off;"
  PID_OF[$name]=$STARTED_PID
  wait_port "${PORT_OF[$name]}" "$STARTED_PID" "$name"
  CA_OF[$name]=$CERTS/ca.pem
}

# The floor of the HTTPS keep-alive case: benches/floor_proxy terminating TLS (rustls, the
# same certificate as nginx) and speaking TLS to the HTTP/1.1 upstream.
start_floor_tls() {
  start_floor "127.0.0.1:$UP_TLS1" --tls-cert "$CERTS/nginx.pem" --tls-key "$CERTS/nginx.key" \
    --upstream-ca "$CERTS/ca.pem" --upstream-name localhost
  CA_OF[floor]=$CERTS/ca.pem
}

start_mitm_https() {
  start_mitm --set ssl_verify_upstream_trusted_ca="$CERTS/ca.pem"
  local i
  for i in $(seq 100); do [ -s "$WORK/mitm-conf/mitmproxy-ca-cert.pem" ] && break; sleep 0.1; done
  CA_OF[mitmproxy]=$WORK/mitm-conf/mitmproxy-ca-cert.pem
}

start_https_peer() {
  case $1 in
  direct) CA_OF[direct]=$CERTS/ca.pem ;;
  sidecar) start_sidecar_https ;;
  nginx) start_nginx_tls ;;
  floor) start_floor_tls ;;
  mitmproxy) start_mitm_https ;;
  esac
}

# The tls_load arguments that reach the upstream of `mode` through peer $2.
tls_target_args() {
  local mode=$1 name=$2 up=$UP_TLS1 port
  [ "$mode" = h2 ] && up=$UP_TLS2
  case $name in
  direct) echo "--target localhost:$up --connect 127.0.0.1:$up" ;;
  nginx)
    port=${PORT_OF[nginx]}
    [ "$mode" = h2 ] && port=${PORT2_OF[nginx]}
    echo "--target localhost:$port --connect 127.0.0.1:$port"
    ;;
  floor) echo "--target localhost:${PORT_OF[floor]} --connect 127.0.0.1:${PORT_OF[floor]}" ;;
  *) echo "--proxy 127.0.0.1:${PORT_OF[$name]} --target localhost:$up" ;;
  esac
}

tls_mode_args() {
  case $1 in
  https-keepalive) echo "--mode keepalive" ;;
  https-newconn) echo "--mode new-conn" ;;
  https-resume) echo "--mode new-conn --resume" ;;
  h2) echo "--mode h2 --streams $HTTPS_H2_STREAMS" ;;
  esac
}

# What the upstream saw through peer $2: the token in the header, the body substituted (sidecar).
sanity_https() {
  local mode=$1 name=$2 got
  [ "$name" = direct ] && return 0
  # shellcheck disable=SC2046
  got=$("$TLS_LOAD" $(tls_target_args "$mode" "$name") --ca "${CA_OF[$name]}" $(tls_mode_args "$mode") --check \
    --path /check -H 'Authorization: Bearer {/auth_token}' -H 'Content-Type: application/json' --body "$BODY" 2>&1) || true
  case $got in
  "CHECK "*" 200 auth=Bearer eyJ"*) ;;
  *)
    echo "sanity check failed for $name ($mode): $got" >&2
    exit 1
    ;;
  esac
  # The suite the peer negotiated with the load client, for the report.
  printf '{"kind":"suite","mode":"%s","peer":"%s","suite":"%s"}\n' "$mode" "$name" "$(cut -d' ' -f2 <<<"$got")" >>"$RUNS"
  if [ "$name" = sidecar ] && [[ $got == *"length=${#BODY}" ]]; then
    echo "sanity check failed for $name ($mode): body was not substituted ($got)" >&2
    exit 1
  fi
}

# Runs the load client against a peer once and appends one JSON line to $RUNS.
# $1 mode, $2 peer, $3 connections (or workers), $4 round, $5 seconds.
run_tls() {
  local mode=$1 name=$2 conns=$3 round=$4 secs=$5 before after out json pid=${PID_OF[$2]:-}
  before=0
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  # shellcheck disable=SC2046
  out=$("$TLS_LOAD" $(tls_target_args "$mode" "$name") --ca "${CA_OF[$name]}" $(tls_mode_args "$mode") \
    --conns "$conns" --duration "$secs" -H 'Authorization: Bearer {/auth_token}' \
    -H 'Content-Type: application/json' -H 'User-Agent: agent-function/1.0' -H 'Accept: application/json' \
    --body "$BODY" 2>&1) || {
    echo "tls_load failed against $name ($mode): $out" >&2
    exit 1
  }
  after=0
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  json=$(grep '^TLSLOAD ' <<<"$out" | sed 's/^TLSLOAD //')
  [ -n "$json" ] || {
    echo "no result from tls_load against $name: $out" >&2
    exit 1
  }
  [ "$round" -ge 0 ] || return 0
  printf '{"kind":"run","mode":"%s","peer":"%s","conns":%d,"round":%d,"cpu_ticks":%d,"clk_tck":%d,"refreshes":0,"wrk":%s}\n' \
    "$mode" "$name" "$conns" "$round" "$((after - before))" "$CLK_TCK" "$json" >>"$RUNS"
  report_round "$json" "$name" "$conns" "$round" "$((after - before))"
}
