#!/usr/bin/env bash
# benches/udp.sh — UDP packets/s through a switchyard UDP VIP (127.66.0.2:15215, declared by a
# `udp,tcp` port so iperf3's control connection passes too) and through a UDP service port
# (127.0.0.1:15216, the same relay) against nginx's stream module, each
# pinned to core 1 with one worker; `iperf3 -u -b 0 -l 64` (unlimited rate, 64-byte datagrams)
# pinned to core 0 against an iperf3 server on core 0. Prints delivered packets/s (sent less
# lost) per round, interleaved. Loopback only; stops what it started, by PID.
# Env: ROUNDS=3 DURATION=3 SWITCHYARD_BIN=target/release/switchyard
set -euo pipefail
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-3}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
WORK=$(mktemp -d /tmp/switchyard-udp.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export PATH=$PATH:/usr/sbin:/sbin
if ! command -v iperf3 >/dev/null || [[ ! -f /usr/lib/nginx/modules/ngx_stream_module.so ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends iperf3 nginx libnginx-mod-stream >&2
fi
[[ -x $SWITCHYARD_BIN ]] || (cd "$ROOT" && cargo build --release >&2)
cat >"$WORK/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
stream { server { listen 127.0.0.1:15214; listen 127.0.0.1:15214 udp; proxy_pass 127.0.0.1:15201; } }
CFG
cat >"$WORK/apps.json" <<JSON
{"apps":[{"id":"/bench/udp","labels":{},
  "portDefinitions":[{"port":0,"protocol":"udp,tcp","labels":{"VIP_0":"127.66.0.2:15215"}}],
  "tasks":[{"id":"t1","appId":"/bench/udp","host":"127.0.0.1","ports":[15201],"state":"TASK_RUNNING"}]},
 {"id":"/bench/udp-port","labels":{},
  "portDefinitions":[{"port":15216,"protocol":"udp,tcp"}],
  "tasks":[{"id":"t2","appId":"/bench/udp-port","host":"127.0.0.1","ports":[15201],"state":"TASK_RUNNING"}]}]}
JSON
printf '[discovery]\nfile = "apps.json"\n[proxy]\ngroup = "*"\nbind = "127.0.0.1"\n[admin]\nlisten = "127.0.0.1:19093"\n[runtime]\nworkers = 1\n[log]\nlevel = "warn"\n' >"$WORK/switchyard.toml"
start() { local core=$1; shift; taskset -c "$core" "$@" >/dev/null 2>&1 & PIDS+=("$!"); }
start 0 iperf3 -s -B 127.0.0.1 -p 15201
start 1 nginx -c "$WORK/nginx.conf"
start 1 "$SWITCHYARD_BIN" --config "$WORK/switchyard.toml"
for _ in $(seq 100); do curl -fs http://127.0.0.1:19093/readyz >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.5
delivered() { # host port -> delivered packets/s
  taskset -c 0 iperf3 -c "$1" -p "$2" -u -b 0 -l 64 -t "$DURATION" -J 2>/dev/null |
    jq '.end.sum | (.packets - .lost_packets) / .seconds | round'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b ? a / b : 0) }'; }
echo "| round | switchyard UDP VIP pkt/s | switchyard UDP service port pkt/s | nginx stream pkt/s | VIP ratio | port ratio |"
echo "|---|---:|---:|---:|---:|---:|"
for ((r = 1; r <= ROUNDS; r++)); do
  s=$(delivered 127.66.0.2 15215); p=$(delivered 127.0.0.1 15216); n=$(delivered 127.0.0.1 15214)
  echo "| $r | $s | $p | $n | $(ratio "$s" "$n") | $(ratio "$p" "$n") |"
done
