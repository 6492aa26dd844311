#!/usr/bin/env bash
# benches/l4.sh — TCP mode, before/after: iperf3 throughput through a TCP service port, and proxy
# CPU per new TCP connection (wrk with `Connection: close`, so each request is a new connection
# through the proxy), for each Switchyard binary given and HAProxy (../shared/peers/haproxy.cfg).
# nginx + iperf3 server + load generators on core 0, the proxy on core 1; the binaries take turns
# per round (A B H, then the order rotates). Uses benches/peers/switchyard.toml's ports.
#   usage: ROUNDS=3 DURATION=5 IPERF_TIME=3 bash benches/l4.sh /tmp/sy-before /tmp/sy-after
set -euo pipefail
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} IPERF_TIME=${IPERF_TIME:-3}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
WORK=$(mktemp -d /tmp/switchyard-l4.XXXXXX)
CLK_TCK=$(getconf CLK_TCK)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
for f in haproxy.cfg nginx.conf; do sed "s#/tmp/peers#$WORK#g" "$PEERS_DIR/$f" >"$WORK/$f"; done
mkdir -p "$WORK"/haproxy "$WORK"/nginx/{tmp_body,tmp_proxy,tmp_fcgi,tmp_uwsgi,tmp_scgi}
listening() { local hex; hex=$(printf '%04X' "$1"); awk -v p=":$hex" '$4=="0A" && $2=="0100007F" p {f=1} END {exit !f}' /proc/net/tcp; }
wait_port() { local d=$((SECONDS + 30)); until listening "$1"; do ((SECONDS < d)) || { echo "port $1 not up" >&2; exit 1; }; sleep 0.1; done; }
ticks() { local s f; s=$(<"/proc/$1/stat"); s=${s##*) }; read -r -a f <<<"$s"; echo $((f[11] + f[12])); }
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" & PIDS+=($!)
taskset -c 0 iperf3 -s -B 127.0.0.1 -p 15201 >/dev/null 2>&1 & PIDS+=($!)
wait_port 18080; wait_port 15201
run() { # name pid tcp_port iperf_port
  local t0 out req t1 gbps
  taskset -c 0 wrk -t1 -c50 -d1s -H 'Connection: close' "http://127.0.0.1:$3/" >/dev/null
  t0=$(ticks "$2")
  out=$(taskset -c 0 wrk -t1 -c50 -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:$3/")
  t1=$(ticks "$2")
  req=$(awk '/ requests in / {print $1}' <<<"$out")
  gbps=$(taskset -c 0 iperf3 -c 127.0.0.1 -p "$4" -t "$IPERF_TIME" -J | jq '.end.sum_received.bits_per_second / 1e9 * 100 | round / 100')
  printf '%s\tconn/s %s\tCPU µs per new connection %.1f\tiperf3 Gbit/s %s\n' "$1" \
    "$(awk '/Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")" \
    "$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$req" 'BEGIN { print d / hz / r * 1e6 }')" "$gbps"
}
start_switchyard() { # bin
  (cd "$ROOT" && exec taskset -c 1 "$1" --config benches/peers/switchyard.toml >"$WORK/sy.log" 2>&1) & PIDS+=($!)
  SY=$!; wait_port 18092; wait_port 15212
}
names=("$@" haproxy)
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < ${#names[@]}; i++)); do
    n=${names[$(( (i + r) % ${#names[@]} ))]}
    if [[ $n == haproxy ]]; then
      taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 & PIDS+=($!); H=$!
      wait_port 18082; wait_port 15202
      run "round $r haproxy" "$H" 18082 15202
      kill "$H"; wait "$H" 2>/dev/null || true
    else
      start_switchyard "$n"
      run "round $r $n" "$SY" 18092 15212
      kill "$SY"; wait "$SY" 2>/dev/null || true
    fi
    while listening 18092 || listening 18082; do sleep 0.1; done
  done
done
