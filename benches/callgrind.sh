#!/usr/bin/env bash
# benches/callgrind.sh — user-space instructions per proxied keep-alive HTTP request, counted by
# callgrind (repeatable whatever else the machine is doing, unlike seconds).
#
# Runs each binary under `valgrind --tool=callgrind` twice, behind nginx (the peers' config) with
# benches/peers/switchyard.toml, and sends N1 then N2 keep-alive requests on one connection
# (h2load --h1 -c1 -m1) to the HTTP-mode service port and to the vhost listener. Startup and
# shutdown cost the same in both runs, so (Ir(N2) - Ir(N1)) / (N2 - N1) is what one request
# costs. Every port (nginx's, switchyard's service ports, vhost listener and admin API) is taken
# free at start (benches/support/ports.sh; PORT_BASE=P takes P, P+1, ...), and each server is
# checked to be the one listening on it, so runs of other sessions neither collide with this one
# nor get counted; every port of the configurations (18080, 18091, 18092, 18093, 19090 and the
# unused iperf3 app's and VIP's) is moved.
#
#   benches/callgrind.sh [BINARY ...]     default: target/release/switchyard
#   N1=2000 N2=12000                      request counts
#   LABELS='"SWITCHYARD_0_RATE_LIMIT":"1000000000/s",'  labels added to the HTTP app (the cost of
#                                         a limit configured but not reached, benches/limits.sh)
#   ENTRIES="service port:18091"          which entries to count (default: both; with NEW_CONN=1
#                                         the TCP-mode port too); the port named is the
#                                         configuration's (18091 HTTP-mode, 18092 TCP-mode, 18093
#                                         vhost), moved like the others
#   NEW_CONN=1                            a new connection per request instead (one request each,
#                                         sequential, `Connection: close`; a small python3 client),
#                                         to the TCP-mode port, the HTTP-mode port and the
#                                         vhost listener: what accepting, connecting and closing cost
#   CG_OPTS="--cache-sim=yes"             more valgrind options; with a simulated cache, each event's
#                                         count per request is printed after the table
#   TASKS=2                               the HTTP app with a second task (nginx listening on
#                                         127.0.0.2 too): with another backend to replay on, a
#                                         request without a body keeps what a replay takes
#   H2=1                                  HTTP/2 with prior knowledge (h2c) to the vhost listener
#                                         instead: h2load -c$H2_CLIENTS (10) -m$H2_STREAMS (10), each
#                                         stream one request to the HTTP/1.1 backend
# Traffic goes to 127.0.0.1 only; every process it starts is stopped on exit (by PID).
set -euo pipefail
N1=${N1:-2000} N2=${N2:-12000} NEW_CONN=${NEW_CONN:-0} LABELS=${LABELS:-} H2=${H2:-0} TASKS=${TASKS:-1}
H2_CLIENTS=${H2_CLIENTS:-10} H2_STREAMS=${H2_STREAMS:-10}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
WORK=$(mktemp -d /tmp/switchyard-callgrind.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [[ -n ${KEEP_OUT:-} ]] && cp "$WORK/cg.out" "$KEEP_OUT"; rm -rf "$WORK"; }
trap cleanup EXIT
for tool in valgrind h2load nginx; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind nghttp2-client nginx)" >&2; exit 1; }
done
[ $# -gt 0 ] || set -- "$ROOT/target/release/switchyard"

# shellcheck source=support/ports.sh
source "$HERE/support/ports.sh"
declare -A MOVED
read -r -a FREE <<<"$(free_ports 7)"
i=0
for p in 18080 18091 18092 18093 19090 15212 15213; do MOVED[$p]=${FREE[$i]}; i=$((i + 1)); done
port_map=""
for p in "${!MOVED[@]}"; do port_map+="s#:$p\b#:${MOVED[$p]}#g; s#\"port\":$p,#\"port\":${MOVED[$p]},#g; s#\"ports\":\[$p\]#\"ports\":[${MOVED[$p]}]#g; "; done
mkdir -p "$WORK"/nginx/{tmp_body,tmp_proxy,tmp_fcgi,tmp_uwsgi,tmp_scgi}
sed "s#/tmp/peers#$WORK#g; $port_map" "$PEERS_DIR/nginx.conf" >"$WORK/nginx.conf"
[[ $TASKS != 2 ]] || sed -i "s#^\( *\)listen 127.0.0.1:${MOVED[18080]};#&\n\1listen 127.0.0.2:${MOVED[18080]};#" "$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" >/dev/null 2>&1 &
PIDS+=($!)
sed "$port_map" "$HERE/peers/switchyard.toml" >"$WORK/switchyard.toml"
sed "$port_map" "$HERE/peers/apps.json" >"$WORK/apps.json"
[[ $TASKS != 2 ]] || sed -i 's#\({"id":"bench_http.t1","appId":"/bench/http","host":"127.0.0.1","ports":\[[0-9]*\],"state":"TASK_RUNNING"}\)#\1,{"id":"bench_http.t2","appId":"/bench/http","host":"127.0.0.2","ports":['"${MOVED[18080]}"'],"state":"TASK_RUNNING"}#' "$WORK/apps.json"
[[ $H2 != 1 ]] || sed -i 's|^\[http\]$|[http]\nh2c = true|' "$WORK/switchyard.toml"
sed -i "s|\"labels\":{\"HAPROXY_GROUP\":\"external\",\"HAPROXY_0_MODE\":\"http\"|\"labels\":{$LABELS\"HAPROXY_GROUP\":\"external\",\"HAPROXY_0_MODE\":\"http\"|" "$WORK/apps.json"
wait_listener "${PIDS[-1]}" "${MOVED[18080]}"

# shellcheck source=support/events.sh
source "$HERE/support/events.sh"

# instructions BINARY PORT N: total Ir of a run that serves N requests on PORT.
instructions() {
  local bin=$1 port=$2 n=$3 out="$WORK/cg.out"
  rm -f "$out"
  valgrind --tool=callgrind ${CG_OPTS:-} --callgrind-out-file="$out" "$bin" --config "$WORK/switchyard.toml" \
    >/dev/null 2>"$WORK/vg.log" &
  local pid=$!
  wait_listener "$pid" "$port" 60
  wait_listener "$pid" "${MOVED[19090]}" 60
  # The route is live once the admin API lists the service.
  for _ in $(seq 600); do
    curl -s "127.0.0.1:${MOVED[19090]}/v1/routes" 2>/dev/null | grep -q '"/bench/http"' && break
    sleep 0.1
  done
  if [[ $NEW_CONN == 1 ]]; then
    python3 - "$port" "$n" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:64]
    s.close()
PY
  else
    local how=(--h1 -c 1 -m 1)
    [[ $H2 != 1 ]] || how=(-c "$H2_CLIENTS" -m "$H2_STREAMS")
    h2load "${how[@]}" -n "$n" "http://127.0.0.1:$port/" >"$WORK/h2load.log"
    grep -q " 0 failed" "$WORK/h2load.log" || { grep "requests:" "$WORK/h2load.log" >&2; kill -TERM "$pid"; wait "$pid" || true; exit 1; }
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  grep -m1 '^summary:' "$out" | awk '{print $2}'
  [[ -z ${CG_OPTS:-} ]] || cg_events "$out" >>"$WORK/events.$n"
}

printf '| binary | entry | instructions per request |\n|---|---|---:|\n'
for bin in "$@"; do
  if [[ -n ${ENTRIES:-} ]]; then
    IFS=, read -r -a entries <<<"$ENTRIES"
  elif [[ $H2 == 1 ]]; then
    entries=("vhost, h2c -c$H2_CLIENTS -m$H2_STREAMS:18093")
  elif [[ $NEW_CONN == 1 ]]; then
    entries=("tcp port, new connection:18092" "service port, new connection:18091" "vhost, new connection:18093")
  else
    entries=("service port:18091" "vhost:18093")
  fi
  for entry in "${entries[@]}"; do
    port=${MOVED[${entry##*:}]:-${entry##*:}}
    a=$(instructions "$bin" "$port" "$N1")
    b=$(instructions "$bin" "$port" "$N2")
    printf '| %s | %s | %d |\n' "$bin" "${entry%%:*}" $(( (b - a) / (N2 - N1) ))
    [[ -z ${CG_OPTS:-} ]] || per_event "$WORK/events.$N1" "$WORK/events.$N2" "$((N2 - N1))" >>"$WORK/events.txt"
    rm -f "$WORK/events.$N1" "$WORK/events.$N2"
  done
done
[[ ! -s $WORK/events.txt ]] || { echo; cat "$WORK/events.txt"; }
