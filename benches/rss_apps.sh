#!/usr/bin/env bash
# benches/rss_apps.sh — what an instance holds in memory with many apps: each binary in turn
# loads N apps × 10 tasks (vhosts on one shared listener, no service ports bound) from a file
# source, and its RSS (/proc/PID/status VmRSS) is read once the admin API serves the table,
# and again after one full /v1/routes answer (the largest the admin API gives), 2 s and
# SETTLE s (3) after it. SETTLE also sets the wait after the first table is served (at 50,000
# apps the instance is still busy 3 s after: use SETTLE=12 there).
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
  # one full routes read (the admin API's biggest answer), then RSS again
  curl -s "127.0.0.1:$admin/v1/routes" >/dev/null
  sleep 2
  rss2=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  sleep "${SETTLE:-3}"
  rss3=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  echo "$bin N=$N: RSS after load ${rss} KiB, 2 s after a full /v1/routes ${rss2} KiB, ${SETTLE:-3} s later ${rss3} KiB"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=
done
