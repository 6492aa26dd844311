#!/bin/bash
# How many real switchyard processes this machine takes: one relay (file source, 500 apps x 3
# tasks, [relay] on 127.0.0.1:18181) and K followers of it, each the release binary with one
# worker and no service listeners (group "none"), admin on a free loopback port (the relay's on 127.0.0.1:18182: its stream count is printed). After SETTLE
# seconds, prints how many followers are alive and their resident memory, then stops every
# process it started (by PID). Loopback only.
#
#   K=1000 SETTLE=60 bash benches/herd_procs.sh
set -u
K=${K:-100}
SETTLE=${SETTLE:-20}
BIN=${BIN:-$(dirname "$0")/../target/release/switchyard}
DIR=$(mktemp -d)
trap 'for p in $(cat "$DIR/pids" 2>/dev/null); do kill "$p" 2>/dev/null; done; wait; rm -rf "$DIR"' EXIT
python3 - "$DIR" <<'PY'
import json, sys
d = sys.argv[1]
apps = []
for i in range(500):
    app_id = f"/svc/app-{i}"
    apps.append({"id": app_id,
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": f"app-{i}.example.com"},
        "portDefinitions": [{"port": 10000 + i, "protocol": "tcp", "name": "main"}],
        "tasks": [{"id": f"app-{i}.{t}", "appId": app_id, "host": "127.0.0.1", "ports": [20000 + t],
                   "state": "TASK_RUNNING", "startedAt": "2026-11-22T00:00:00.000Z"} for t in range(3)],
        "version": "2026-11-22T00:00:00.000Z"})
json.dump({"apps": apps}, open(f"{d}/apps.json", "w"))
common = '[runtime]\nworkers = 1\n[proxy]\ngroup = "none"\nbind = "127.0.0.1"\n[admin]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warn"\n'
open(f"{d}/relay.toml", "w").write('[discovery]\nfile = "apps.json"\n'
    + common.replace("127.0.0.1:0", "127.0.0.1:18182")
    + '[relay]\nlisten = "127.0.0.1:18181"\nmax_subscribers = 4096\n')
open(f"{d}/follower.toml", "w").write('[discovery]\nmarathon = ["http://127.0.0.1:18181"]\n' + common)
PY
"$BIN" --config "$DIR/relay.toml" 2>"$DIR/relay.log" &
echo $! >"$DIR/pids"
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18181/v2/apps)" = 200 ] && break
  sleep 0.1
done
for _ in $(seq 1 "$K"); do
  "$BIN" --config "$DIR/follower.toml" 2>/dev/null &
  echo $! >>"$DIR/pids"
done
sleep "$SETTLE"
total=0; n=0; max=0
for p in $(tail -n +2 "$DIR/pids"); do
  r=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null)
  if [ -n "$r" ]; then total=$((total + r)); n=$((n + 1)); [ "$r" -gt "$max" ] && max=$r; fi
done
echo "followers alive $n/$K, RSS summed $((total / 1024)) MiB, mean $((total / (n > 0 ? n : 1))) KiB, max $max KiB"
curl -s http://127.0.0.1:18182/metrics | grep -E '^switchyard_relay_(open_streams|requests_total\{path="/v2/apps"\})'
free -m | head -2
