#!/bin/bash
# A relay under load, and the instance's own control plane: one switchyard with a file source of
# APPS apps x 3 tasks, `[relay]` on and its admin API; READERS clients (wrk, one connection each)
# read the relay's full snapshot (`/v2/apps?embed=apps.tasks&embed=apps.deployments&embed=apps.readiness`,
# what followers ask for) for DURATION seconds, plain or gzip (GZIP=1, the header followers
# send), while a probe asks the same instance's admin `/healthz` every 20 ms on one keep-alive
# connection. Printed per binary and round: the probe's p50 / p99 / max latency (ms) idle and
# under the readers, and the snapshots/s and MiB/s the relay served; then the bytes of one
# snapshot, plain and gzip. BIN and, when set, BASE (another build, e.g. one from before a
# change) run interleaved, ROUNDS rounds each; the medians are printed last. Loopback only; every
# process it starts is stopped by PID.
#
#   APPS=10000 READERS=16 DURATION=10 ROUNDS=3 BASE=/tmp/switchyard-before bash benches/relay_load.sh
set -u
APPS=${APPS:-10000}
READERS=${READERS:-16}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
GZIP=${GZIP:-0}
BIN=${BIN:-$(dirname "$0")/../target/release/switchyard}
BASE=${BASE:-}
DIR=$(mktemp -d)
trap 'for p in $(cat "$DIR/pids" 2>/dev/null); do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$DIR"' EXIT
python3 - "$DIR" "$APPS" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
apps = []
for i in range(n):
    app_id = f"/svc/app-{i}"
    apps.append({"id": app_id,
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": f"app-{i}.example.com"},
        "portDefinitions": [{"port": 10000 + i % 20000, "protocol": "tcp", "name": "main"}],
        "tasks": [{"id": f"app-{i}.{t}", "appId": app_id, "host": "127.0.0.1", "ports": [20000 + t],
                   "ipAddresses": [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
                   "state": "TASK_RUNNING", "startedAt": "2026-11-22T00:00:00.000Z",
                   "slaveId": "agent-1", "version": "2026-11-22T00:00:00.000Z"} for t in range(3)],
        "version": "2026-11-22T00:00:00.000Z"})
json.dump({"apps": apps}, open(f"{d}/apps.json", "w"))
open(f"{d}/relay.toml", "w").write('[discovery]\nfile = "apps.json"\n'
    '[runtime]\nworkers = 1\n[proxy]\ngroup = "none"\nbind = "127.0.0.1"\n'
    '[admin]\nlisten = "127.0.0.1:18282"\n[log]\nlevel = "warn"\n'
    '[relay]\nlisten = "127.0.0.1:18281"\n')
PY
SNAP='/v2/apps?embed=apps.tasks&embed=apps.deployments&embed=apps.readiness'
HEADER=()
[ "$GZIP" = 1 ] && HEADER=(-H 'Accept-Encoding: gzip')

probe() { # seconds -> "p50 p99 max" in ms
  python3 - "$1" <<'PY'
import http.client, sys, time
end = time.time() + float(sys.argv[1]); lat = []
c = http.client.HTTPConnection("127.0.0.1", 18282, timeout=30)
while time.time() < end:
    t = time.perf_counter(); c.request("GET", "/healthz"); c.getresponse().read()
    lat.append((time.perf_counter() - t) * 1000); time.sleep(0.02)
lat.sort()
print(f"{lat[len(lat)//2]:.2f} {lat[int(len(lat)*0.99)]:.2f} {lat[-1]:.2f}")
PY
}

run() { # binary label
  "$1" --config "$DIR/relay.toml" 2>"$DIR/$2.log" &
  local pid=$!
  echo $pid >>"$DIR/pids"
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:18281$SNAP")" = 200 ] && break
    sleep 0.1
  done
  local idle; idle=$(probe 3)
  wrk -t2 -c"$READERS" -d"${DURATION}s" --timeout 30s "${HEADER[@]}" "http://127.0.0.1:18281$SNAP" >"$DIR/wrk" 2>&1 &
  local wrk=$!
  sleep 1
  local loaded; loaded=$(probe $((DURATION - 2)))
  wait $wrk
  local rps mib
  rps=$(awk '/Requests\/sec/{print $2}' "$DIR/wrk")
  mib=$(awk '/Transfer\/sec/{v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /MB/) {sub("MB","",v)} else if (v ~ /KB/) {sub("KB","",v); v/=1024}; print v}' "$DIR/wrk")
  echo "$2 idle_p50_p99_max=[$idle] loaded_p50_p99_max=[$loaded] snapshots/s=$rps MiB/s=$mib"
  echo "$2 $loaded $rps" >>"$DIR/results"
  if [ ! -f "$DIR/sizes" ]; then
    plain=$(curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:18281$SNAP")
    gz=$(curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%{size_download}' "http://127.0.0.1:18281$SNAP")
    echo "one snapshot of $APPS apps: $plain bytes plain, $gz bytes gzip" >"$DIR/sizes"
  fi
  kill $pid; wait $pid 2>/dev/null
}

for r in $(seq 1 "$ROUNDS"); do
  [ -n "$BASE" ] && run "$BASE" base
  run "$BIN" new
done
cat "$DIR/sizes" 2>/dev/null
for who in base new; do
  grep "^$who " "$DIR/results" 2>/dev/null | python3 -c "
import sys, statistics
rows = [l.split() for l in sys.stdin]
if rows:
    med = lambda i: statistics.median(float(r[i]) for r in rows)
    print(f'$who median of {len(rows)}: /healthz under load p50 {med(1):.2f} ms, p99 {med(2):.2f} ms, max {med(3):.2f} ms; {med(4):.1f} snapshots/s')
"
done
