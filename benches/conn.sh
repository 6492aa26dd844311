#!/usr/bin/env bash
# benches/conn.sh — a new connection per request, before/after and against HAProxy 2.6: wrk with
# `Connection: close` (-t1 -c50), so every request is a new client connection through the proxy,
# in TCP mode and HTTP mode, behind nginx (../shared/peers/nginx.conf).
#
# Every server runs at once, each on its own ports, all free ports taken at start
# (benches/support/ports.sh; PORT_BASE=P takes P, P+1, ... instead), so runs of other sessions at
# the same time neither collide with this one nor get measured by it: every port is checked to
# be listened on by the process started for it. HAProxy runs ../shared/peers/haproxy.cfg's
# fe_http/fe_tcp (its ports moved), nginx ../shared/peers/nginx.conf (likewise). All pinned to core 1 with one worker/thread; nginx and wrk on core 0. The runs are short
# slices taken in turn (the order rotating every slice), so neighbours' load, which drifts over
# minutes on a shared machine, hits every server alike. Per slice: connections/s and p99 (wrk
# --latency) and the server's CPU time per connection, from the scheduler's per-thread run time
# (/proc/PID/task/*/schedstat, nanoseconds). The table gives medians over slices, and the
# medians of the per-slice ratios to HAProxy's slice of the same turn.
#   usage: SLICES=9 DURATION=2 MODES="tcp http" bash benches/conn.sh BIN [BIN ...]
# Traffic goes to 127.0.0.1 only; every process it starts is stopped on exit (by PID).
set -euo pipefail
SLICES=${SLICES:-9} DURATION=${DURATION:-2} MODES=${MODES:-tcp http}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
WORK=$(mktemp -d /tmp/switchyard-conn.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
(($# > 0 && $# <= 8)) || { echo "usage: bash benches/conn.sh BINARY [BINARY ...] (at most 8)" >&2; exit 2; }
export PATH=$PATH:/usr/sbin:/sbin
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# shellcheck source=support/ports.sh
source "$ROOT/benches/support/ports.sh"
read -r -a FREE <<<"$(free_ports $((3 + 3 * $#)))"
NGINX_PORT=${FREE[0]}
# The peers' configurations, with this run's ports and directory (HAProxy's iperf3 frontends,
# which come last, are left out: this script does not use them).
port_map="s#/tmp/peers#$WORK#g; s#127.0.0.1:18080#127.0.0.1:$NGINX_PORT#g; s#127.0.0.1:18081#127.0.0.1:${FREE[1]}#g; s#127.0.0.1:18082#127.0.0.1:${FREE[2]}#g"
sed "$port_map" "$PEERS_DIR/nginx.conf" >"$WORK/nginx.conf"
sed "$port_map" "$PEERS_DIR/haproxy.cfg" | awk '/^# L4: TCP proxy to iperf3/ { exit } { print }' >"$WORK/haproxy.cfg"
mkdir -p "$WORK"/haproxy "$WORK"/nginx/{tmp_body,tmp_proxy,tmp_fcgi,tmp_uwsgi,tmp_scgi}
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f", s }'; }

taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" & PIDS+=($!)
wait_listener $! "$NGINX_PORT"
declare -A PID PORT
taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 & PIDS+=($!)
PID[haproxy]=$!; PORT[haproxy,http]=${FREE[1]}; PORT[haproxy,tcp]=${FREE[2]}
names=(haproxy)
i=0
for bin in "$@"; do
  name="$i:$(basename "$bin")" dir="$WORK/sy$i"
  http_port=${FREE[3 + 3 * i]} tcp_port=${FREE[4 + 3 * i]} admin_port=${FREE[5 + 3 * i]}
  mkdir -p "$dir"
  cat >"$dir/apps.json" <<JSON
{"apps":[
 {"id":"/bench/http","labels":{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http"},
  "portDefinitions":[{"port":$http_port,"protocol":"tcp"}],
  "tasks":[{"id":"bench_http.t1","appId":"/bench/http","host":"127.0.0.1","ports":[$NGINX_PORT],"state":"TASK_RUNNING"}]},
 {"id":"/bench/tcp","labels":{"HAPROXY_GROUP":"external"},
  "portDefinitions":[{"port":$tcp_port,"protocol":"tcp"}],
  "tasks":[{"id":"bench_tcp.t1","appId":"/bench/tcp","host":"127.0.0.1","ports":[$NGINX_PORT],"state":"TASK_RUNNING"}]}
]}
JSON
  cat >"$dir/switchyard.toml" <<TOML
[discovery]
file = "$dir/apps.json"
[proxy]
group = "external"
bind = "127.0.0.1"
[admin]
listen = "127.0.0.1:$admin_port"
[runtime]
workers = 1
[log]
level = "warn"
TOML
  taskset -c 1 "$bin" --config "$dir/switchyard.toml" >"$dir/log" 2>&1 & PIDS+=($!)
  PID[$name]=$!; PORT[$name,http]=$http_port; PORT[$name,tcp]=$tcp_port
  names+=("$name")
  i=$((i + 1))
done
for n in "${names[@]}"; do for m in $MODES; do wait_listener "${PID[$n]}" "${PORT[$n,$m]}"; done; done
for n in "${names[@]}"; do for m in $MODES; do   # warm-up, untimed
  taskset -c 0 wrk -t1 -c50 -d1s -H 'Connection: close' "http://127.0.0.1:${PORT[$n,$m]}/" >/dev/null
done; done

RESULTS=$WORK/results.tsv
: >"$RESULTS"
run() { # slice name mode — one wrk run, one line in results.tsv
  local out c0 c1 req rps p99 cpu err
  c0=$(cpu_ns "${PID[$2]}")
  out=$(taskset -c 0 wrk -t1 -c50 -d"${DURATION}s" --latency -H 'Connection: close' "http://127.0.0.1:${PORT[$2,$3]}/")
  c1=$(cpu_ns "${PID[$2]}")
  read -r rps p99 req err < <(awk 'function ms(v, u) { u = v; sub(/^[0-9.]+/, "", u); v += 0
      return u == "us" ? v / 1000 : u == "s" ? v * 1000 : v }
    /Requests\/sec:/ { rps = $2 } $1 == "99%" { p99 = ms($2) } / requests in / { req = $1 }
    /Non-2xx or 3xx responses:/ { err += $NF } /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    END { printf "%.0f %.3f %d %d\n", rps, p99, req, err }' <<<"$out")
  cpu=$(awk -v d=$((c1 - c0)) -v r="$req" 'BEGIN { printf "%.1f", r ? d / r / 1000 : 0 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rps" "$p99" "$cpu" "$err" >>"$RESULTS"
  printf 'slice %2s %-24s %-4s conn/s %6s  p99 %7s ms  CPU µs/conn %6s  errors %s\n' "$1" "$2" "$3" "$rps" "$p99" "$cpu" "$err" >&2
}
for ((s = 1; s <= SLICES; s++)); do
  for m in $MODES; do
    for ((k = 0; k < ${#names[@]}; k++)); do run "$s" "${names[$(((k + s) % ${#names[@]}))]}" "$m"; done
  done
done

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), load average before the table: $(cut -d' ' -f1-3 /proc/loadavg); $SLICES slices of ${DURATION}s per server and mode"
echo
echo "| mode | server | conn/s | p99 ms | CPU µs / conn | conn/s ÷ HAProxy | p99 ÷ HAProxy | CPU ÷ HAProxy |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '
  function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  { key = $3 SUBSEP $2; rps[key, $1] = $4; p99[key, $1] = $5; cpu[key, $1] = $6; slices[$1] = 1
    if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
  END {
    for (o = 1; o <= k; o++) {
      split(order[o], kv, SUBSEP); m = kv[1]; s = kv[2]; h = m SUBSEP "haproxy"
      n = 0; nr = 0
      for (r in slices) {
        if (!((order[o], r) in rps)) continue
        n++; a[n] = rps[order[o], r]; b[n] = p99[order[o], r]; c[n] = cpu[order[o], r]
        if ((h, r) in rps && rps[h, r] > 0 && cpu[h, r] > 0 && p99[h, r] > 0) {
          nr++; x[nr] = rps[order[o], r] / rps[h, r]; z[nr] = p99[order[o], r] / p99[h, r]; y[nr] = cpu[order[o], r] / cpu[h, r] }
      }
      same = (s == "haproxy" || !nr)
      printf "| %s | %s | %.0f | %.2f | %.1f | %s | %s | %s |\n", m, s, med(a, n), med(b, n), med(c, n),
        same ? "–" : sprintf("%.2f", med(x, nr)), same ? "–" : sprintf("%.2f", med(z, nr)), same ? "–" : sprintf("%.2f", med(y, nr))
    }
  }' "$RESULTS"
