#!/usr/bin/env bash
# benches/tls.sh — full TLS handshakes per second: switchyard's HTTPS vhost listener against
# HAProxy 2.6 (`bind ... ssl crt`), one worker each, pinned to core 1; `openssl s_time -new`
# (a fresh handshake per connection, one GET each; s_time sends no SNI, so both answer with
# their default certificate) pinned to core 0; the same ECDSA P-256
# certificate for both; TLS 1.3. Rounds interleave A B A B; rounds with CPU steal above
# MAX_STEAL are dropped. Loopback only; stops what it started, by PID.
# Env: ROUNDS=3 DURATION=5 MAX_STEAL=2 SWITCHYARD_BIN=target/release/switchyard
set -euo pipefail
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} MAX_STEAL=${MAX_STEAL:-2}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
WORK=$(mktemp -d /tmp/switchyard-tls.XXXXXX)
PIDS=()
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export PATH=$PATH:/usr/sbin:/sbin
for cmd in haproxy nginx openssl; do
  command -v "$cmd" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends haproxy nginx openssl >&2
done
[[ -x $SWITCHYARD_BIN ]] || (cd "$ROOT" && cargo build --release >&2)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.local \
  -addext subjectAltName=DNS:bench.local -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
mkdir -p "$WORK/certs"
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/certs/bench.pem"
cat >"$WORK/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend https
    bind 127.0.0.1:18443 ssl crt $WORK/certs/bench.pem alpn http/1.1
    default_backend nginx
backend nginx
    server n1 127.0.0.1:18480
CFG
cat >"$WORK/nginx.conf" <<CFG
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18480; location / { return 200 "ok\n"; } } }
CFG
cat >"$WORK/apps.json" <<JSON
{"apps":[{"id":"/bench/https","labels":{"HAPROXY_0_VHOST":"bench.local"},"portDefinitions":[],
  "tasks":[{"id":"t1","appId":"/bench/https","host":"127.0.0.1","ports":[18480],"state":"TASK_RUNNING"}]}]}
JSON
cat >"$WORK/switchyard.toml" <<TOML
[discovery]
file = "apps.json"
[proxy]
group = "*"
bind = "127.0.0.1"
[https]
listen = ["127.0.0.1:18444"]
certs = "certs"
[admin]
listen = "127.0.0.1:19092"
[runtime]
workers = 1
[log]
level = "warn"
TOML

start() { local name=$1 core=$2; shift 2; taskset -c "$core" "$@" >"$WORK/$name.log" 2>&1 & PIDS+=("$!"); }
start nginx 0 nginx -c "$WORK/nginx.conf" -p "$WORK"
start haproxy 1 haproxy -db -f "$WORK/haproxy.cfg"
start switchyard 1 "$SWITCHYARD_BIN" --config "$WORK/switchyard.toml"
for port in 18443 18444; do
  for _ in $(seq 100); do
    curl -fsk --resolve "bench.local:$port:127.0.0.1" "https://bench.local:$port/" >/dev/null 2>&1 && break
    sleep 0.2
  done
done

steal() { local _c u n s i w q sq st _r; read -r _c u n s i w q sq st _r </proc/stat; echo "$((u + n + s + i + w + q + sq + st)) $st"; }
run() { # port -> "handshakes/s steal%"
  local a b out
  a=$(steal)
  out=$(taskset -c 0 openssl s_time -connect "127.0.0.1:$1" -new -tls1_3 \
    -time "$DURATION" -www / 2>/dev/null | awk '/connections in .* real seconds/ { print $1 / $4 }' | head -1)
  b=$(steal)
  awk -v a="$a" -v b="$b" -v q="${out:-0}" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1]
    printf "%.0f %.2f\n", q, (d > 0 ? 100 * (y[2] - x[2]) / d : 0) }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
sy=() hp=()
for ((r = 1; r <= ROUNDS; r++)); do
  read -r q s < <(run 18444); log "round $r switchyard: $q handshakes/s, steal $s%"
  awk -v s="$s" -v m="$MAX_STEAL" 'BEGIN { exit !(s <= m) }' && sy+=("$q")
  read -r q s < <(run 18443); log "round $r haproxy: $q handshakes/s, steal $s%"
  awk -v s="$s" -v m="$MAX_STEAL" 'BEGIN { exit !(s <= m) }' && hp+=("$q")
done
s=$(printf '%s\n' "${sy[@]:-0}" | median); h=$(printf '%s\n' "${hp[@]:-0}" | median)
echo "## TLS 1.3 handshakes/s (ECDSA P-256, openssl s_time -new, one GET each): switchyard vs HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit: $(git -C "$ROOT" rev-parse --short HEAD), rounds kept (steal <= $MAX_STEAL%): switchyard ${#sy[@]}/$ROUNDS, haproxy ${#hp[@]}/$ROUNDS"
echo
echo "| server | handshakes/s (median) | ratio to HAProxy |"
echo "|---|---:|---:|"
echo "| switchyard | $s | $(awk -v a="$s" -v b="$h" 'BEGIN { printf "%.2f", (b ? a / b : 0) }') |"
echo "| haproxy | $h | 1.00 |"
