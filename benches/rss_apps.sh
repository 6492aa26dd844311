#!/usr/bin/env bash
# benches/rss_apps.sh — what an instance holds in memory with many apps: each binary in turn
# loads N apps × 10 tasks (vhosts on one shared listener, no service ports bound) from a file
# source, and its RSS (/proc/PID/status VmRSS) is read SETTLE s (3) after the admin API serves
# the table (at 50,000 apps the instance is still busy 3 s after: use SETTLE=12 there). Then
# the admin API's two largest answers, the whole /v1/routes and /metrics, each read once: their
# size, the instance's CPU for it, its RSS just after and its peak so far (VmHWM).
#   N=10000 bash benches/rss_apps.sh BIN [BIN ...]
# Loopback only; each process it starts is stopped on exit (by PID).
set -euo pipefail
N=${N:-10000}
W=$(mktemp -d /tmp/switchyard-rss.XXXXXX)
pid=
cleanup() { [[ -z $pid ]] || kill "$pid" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
python3 - "$N" > "$W/apps.json" <<'PY'
import json, sys
n = int(sys.argv[1])
apps = []
for i in range(n):
    aid = f"/scale/app{i}"
    apps.append({"id": aid, "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": f"app{i}.example.com"},
                 "portDefinitions": [{"port": 0, "protocol": "tcp"}],
                 "tasks": [{"id": f"app{i}.t{t}", "appId": aid, "host": f"10.{(i>>8)&255}.{i&255}.{t}", "ports": [31000 + t], "state": "TASK_RUNNING"} for t in range(10)]})
print(json.dumps({"apps": apps}))
PY
for bin in "$@"; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$W/sy.toml" <<TOML
[discovery]
file = "apps.json"
[proxy]
group = "external"
bind = "127.0.0.1"
[http]
listen = ["127.0.0.1:$port"]
[admin]
listen = "127.0.0.1:$admin"
[runtime]
workers = 1
[log]
level = "warn"
TOML
  (cd "$W" && exec "$bin" --config sy.toml >"$W/log" 2>&1) &
  pid=$!
  for _ in $(seq 600); do
    curl -s "127.0.0.1:$admin/v1/routes?limit=1" 2>/dev/null | grep -q '"generation"' && break
    sleep 0.1
  done
  sleep "${SETTLE:-3}"
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  echo "$bin N=$N: RSS after load ${rss} KiB"
  # The admin API's two biggest answers, one after the other: their size, the CPU the instance
  # spent on each, its RSS just after and its peak so far (VmHWM), then SETTLE s to settle.
  for path in /v1/routes /metrics; do
    cpu0=$(awk '{print $14 + $15}' /proc/$pid/stat)
    size=$(curl -sf "127.0.0.1:$admin$path" -o /dev/null -w '%{size_download}') || size="FAILED (curl $?) after $size"
    cpu1=$(awk '{print $14 + $15}' /proc/$pid/stat)
    echo "$bin N=$N: $path $size bytes, $(( (cpu1 - cpu0) * 1000 / $(getconf CLK_TCK) )) ms CPU," \
      "RSS $(awk '/VmRSS/ {print $2}' /proc/$pid/status) KiB after, peak $(awk '/VmHWM/ {print $2}' /proc/$pid/status) KiB"
    sleep "${SETTLE:-3}"
  done
  echo "$bin N=$N: RSS ${SETTLE:-3} s later $(awk '/VmRSS/ {print $2}' /proc/$pid/status) KiB"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=
done
