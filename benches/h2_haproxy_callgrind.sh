#!/usr/bin/env bash
# benches/h2_haproxy_callgrind.sh — HAProxy 2.6's user-space instructions per HTTP/2 request,
# counted by callgrind, to set beside `H2=1 benches/callgrind.sh` (the same load: h2c prior
# knowledge, h2load -c$H2_CLIENTS -m$H2_STREAMS, each stream one request to an HTTP/1.1 nginx
# answering "ok"). HAProxy runs under valgrind twice, N1 then N2 requests;
# (Ir(N2) - Ir(N1)) / (N2 - N1) is what one request costs.
#   N1=1000 N2=6000 H2_CLIENTS=10 H2_STREAMS=10
#   CG_OPTS="--cache-sim=yes"  more valgrind options; with a simulated cache, each event's count
#                              per request is printed after the figure
# Loopback only; stops what it started, by PID.
set -euo pipefail
# shellcheck source=support/events.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/support/events.sh"
N1=${N1:-1000} N2=${N2:-6000} H2_CLIENTS=${H2_CLIENTS:-10} H2_STREAMS=${H2_STREAMS:-10}
WORK=$(mktemp -d /tmp/switchyard-h2cg.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
export PATH=$PATH:/usr/sbin:/sbin
for tool in valgrind h2load nginx haproxy; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
cat >"$WORK/nginx.conf" <<CFG
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18580; location / { default_type text/plain; return 200 "ok\n"; } } }
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
frontend h2c
    bind 127.0.0.1:18583 proto h2
    default_backend nginx
backend nginx
    http-reuse safe
    server n1 127.0.0.1:18580
CFG
nginx -c "$WORK/nginx.conf" -p "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_port 18580
instructions() { # N -> total Ir of a run that serves N requests
  rm -f "$WORK/cg.out"
  valgrind --tool=callgrind ${CG_OPTS:-} --callgrind-out-file="$WORK/cg.out" haproxy -db -f "$WORK/haproxy.cfg" \
    >/dev/null 2>"$WORK/vg.log" &
  local pid=$!
  wait_port 18583
  h2load -c "$H2_CLIENTS" -m "$H2_STREAMS" -n "$1" http://127.0.0.1:18583/ >"$WORK/h2load.log"
  grep -q " 0 failed" "$WORK/h2load.log" || { grep "requests:" "$WORK/h2load.log" >&2; kill "$pid"; exit 1; }
  kill -TERM "$pid"
  wait "$pid" || true
  grep -m1 '^summary:' "$WORK/cg.out" | awk '{print $2}'
  [[ -z ${CG_OPTS:-} ]] || cg_events "$WORK/cg.out" >"$WORK/events.$1"
}
a=$(instructions "$N1")
b=$(instructions "$N2")
printf '| haproxy %s | h2c -c%s -m%s | %d |\n' "$(haproxy -v | awk 'NR == 1 { print $3 }')" \
  "$H2_CLIENTS" "$H2_STREAMS" $(((b - a) / (N2 - N1)))
[[ -z ${CG_OPTS:-} ]] || per_event "$WORK/events.$N1" "$WORK/events.$N2" "$((N2 - N1))"
