#!/usr/bin/env bash
# benches/backend_tls.sh — HTTP requests/s through a proxy that speaks TLS to its backend, the
# backend's certificate verified: switchyard (`SWITCHYARD_0_BACKEND_TLS=true`, a CA bundle and an
# SNI name) against HAProxy 2.6 (`server ... ssl verify required ca-file ... sni str(...)`), one
# worker/thread each pinned to core 1, to the same nginx HTTPS backend (TLS 1.3, ECDSA P-256,
# keep-alive) on core 0; plain HTTP/1.1 keep-alive from wrk (core 0) to each proxy. Both reuse
# backend connections (HAProxy's default `http-reuse safe`; switchyard's pool), so this measures
# the TLS record path, not handshakes. Rounds interleave A B A B; rounds with CPU steal above
# MAX_STEAL are dropped. Loopback only; stops what it started, by PID.
# Env: ROUNDS=3 DURATION=5 CONNECTIONS=32 MAX_STEAL=2 SWITCHYARD_BIN=target/release/switchyard
set -euo pipefail
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} CONNECTIONS=${CONNECTIONS:-32} MAX_STEAL=${MAX_STEAL:-2}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
WORK=$(mktemp -d /tmp/switchyard-backend-tls.XXXXXX)
PIDS=()
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export PATH=$PATH:/usr/sbin:/sbin
for cmd in haproxy nginx openssl wrk; do
  command -v "$cmd" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends haproxy nginx openssl wrk >&2
done
[[ -x $SWITCHYARD_BIN ]] || (cd "$ROOT" && cargo build --release --locked >&2)

# A CA, and the backend's certificate from it (name and IP).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench.backend \
  -keyout "$WORK/backend.key" -out "$WORK/backend.csr" 2>/dev/null
printf 'subjectAltName=DNS:bench.backend,IP:127.0.0.1\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/backend.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/san.ext" -out "$WORK/backend.pem" 2>/dev/null

cat >"$WORK/nginx.conf" <<CFG
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18491 ssl;
    ssl_certificate $WORK/backend.pem;
    ssl_certificate_key $WORK/backend.key;
    ssl_protocols TLSv1.3;
    location / { return 200 "ok\n"; }
  }
}
CFG
cat >"$WORK/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend http
    bind 127.0.0.1:18453
    default_backend tls
backend tls
    server n1 127.0.0.1:18491 ssl verify required ca-file $WORK/ca.pem sni str(bench.backend) verifyhost bench.backend
CFG
cat >"$WORK/apps.json" <<JSON
{"apps":[{"id":"/bench/tls","labels":{"HAPROXY_0_MODE":"http","SWITCHYARD_0_BACKEND_TLS":"true",
  "SWITCHYARD_0_BACKEND_TLS_CA":"$WORK/ca.pem","SWITCHYARD_0_BACKEND_TLS_SNI":"bench.backend"},
  "portDefinitions":[{"port":18454,"protocol":"tcp"}],
  "tasks":[{"id":"t1","appId":"/bench/tls","host":"127.0.0.1","ports":[18491],"state":"TASK_RUNNING"}]}]}
JSON
cat >"$WORK/switchyard.toml" <<TOML
[discovery]
file = "apps.json"
[proxy]
group = "*"
bind = "127.0.0.1"
[admin]
listen = "127.0.0.1:19093"
[runtime]
workers = 1
[log]
level = "warn"
TOML

start() { local name=$1 core=$2; shift 2; taskset -c "$core" "$@" >"$WORK/$name.log" 2>&1 & PIDS+=("$!"); }
start nginx 0 nginx -c "$WORK/nginx.conf" -p "$WORK"
start haproxy 1 haproxy -db -f "$WORK/haproxy.cfg"
start switchyard 1 "$SWITCHYARD_BIN" --config "$WORK/switchyard.toml"
for port in 18453 18454; do
  ok=
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.2
  done
  [[ -n $ok ]] || { log "port $port does not answer"; cat "$WORK"/*.log >&2; exit 1; }
done

steal() { local _c u n s i w q sq st _r; read -r _c u n s i w q sq st _r </proc/stat; echo "$((u + n + s + i + w + q + sq + st)) $st"; }
run() { # port -> "requests/s steal%"
  local a b out
  a=$(steal)
  out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$1/" 2>/dev/null |
    awk '/Requests\/sec/ { print $2 }')
  b=$(steal)
  awk -v a="$a" -v b="$b" -v q="${out:-0}" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1]
    printf "%.0f %.2f\n", q, (d > 0 ? 100 * (y[2] - x[2]) / d : 0) }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
sy=() hp=()
for ((r = 1; r <= ROUNDS; r++)); do
  read -r q s < <(run 18454); log "round $r switchyard: $q requests/s, steal $s%"
  awk -v s="$s" -v m="$MAX_STEAL" 'BEGIN { exit !(s <= m) }' && sy+=("$q")
  read -r q s < <(run 18453); log "round $r haproxy: $q requests/s, steal $s%"
  awk -v s="$s" -v m="$MAX_STEAL" 'BEGIN { exit !(s <= m) }' && hp+=("$q")
done
s=$(printf '%s\n' "${sy[@]:-0}" | median); h=$(printf '%s\n' "${hp[@]:-0}" | median)
echo "## TLS to the backend, verified (TLS 1.3, ECDSA P-256; wrk -c$CONNECTIONS plain HTTP/1.1 in): switchyard vs HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }') \`ssl verify required\`"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit: $(git -C "$ROOT" rev-parse --short HEAD), rounds kept (steal <= $MAX_STEAL%): switchyard ${#sy[@]}/$ROUNDS, haproxy ${#hp[@]}/$ROUNDS"
echo
echo "| proxy | requests/s (median) | ratio to HAProxy |"
echo "|---|---:|---:|"
echo "| switchyard | $s | $(awk -v a="$s" -v b="$h" 'BEGIN { printf "%.2f", (b ? a / b : 0) }') |"
echo "| haproxy | $h | 1.00 |"
