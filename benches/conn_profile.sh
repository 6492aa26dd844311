#!/usr/bin/env bash
# benches/conn_profile.sh — where a new TCP connection's CPU goes, per connection, switchyard (TCP
# mode) against HAProxy 2.6 `mode tcp`, in the setup of benches/conn.sh (wrk -t1 -c50
# `Connection: close` on core 0 with nginx, each server alone on core 1, one worker/thread).
#
# For each server in turn (ROUNDS times, order rotating), one wrk run of DURATION seconds under
#   - `perf stat -p PID`: task-clock, context switches, wake-ups, the system calls that matter
#     (accept4, connect, epoll_ctl/epoll_wait, read/recvfrom, write/sendto, shutdown, close,
#     setsockopt, getsockopt, futex), all divided by the connections wrk made;
#   - or, with PERF_RECORD=1, `perf record -e cpu-clock -g -p PID` instead of the system call
#     counts (whose tracing costs CPU itself): the CPU per connection by kernel/user symbol (self
#     time), the top SYMBOLS of the servers side by side; KEEP_DATA=DIR keeps the perf.data files
#     there (perf report -i DIR/perf.ROUND.NAME.data) for call graphs.
# RATE=N replaces wrk's closed loop (50 connections, each followed by the next as soon as it ends)
# by an open one: N new connections a second (h2load --rate, one request each, `Connection:
# close`), the same offered load for every server — in a closed loop a faster server keeps the
# client's and nginx's core busier, which makes its wake-ups of them cheaper.
# Run it under the build lock so that compiles do not land in the samples:
#   flock /tmp/switchyard-build.lock env ROUNDS=3 DURATION=3 PERF_RECORD=1 bash benches/conn_profile.sh BIN [BIN ...]
# Ports are taken free at start (benches/support/ports.sh). Traffic goes to 127.0.0.1 only; every
# process it starts is stopped on exit (by PID).
set -euo pipefail
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-3} PERF_RECORD=${PERF_RECORD:-0} SYMBOLS=${SYMBOLS:-40}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
WORK=$(mktemp -d /tmp/switchyard-connprof.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
(($# > 0 && $# <= 8)) || { echo "usage: bash benches/conn_profile.sh BINARY [BINARY ...] (at most 8)" >&2; exit 2; }
export PATH=$PATH:/usr/sbin:/sbin
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# shellcheck source=support/ports.sh
source "$ROOT/benches/support/ports.sh"
read -r -a FREE <<<"$(free_ports $((3 + 2 * $#)))"
NGINX_PORT=${FREE[0]}
port_map="s#/tmp/peers#$WORK#g; s#127.0.0.1:18080#127.0.0.1:$NGINX_PORT#g; s#127.0.0.1:18081#127.0.0.1:${FREE[1]}#g; s#127.0.0.1:18082#127.0.0.1:${FREE[2]}#g"
sed "$port_map" "$PEERS_DIR/nginx.conf" >"$WORK/nginx.conf"
sed "$port_map" "$PEERS_DIR/haproxy.cfg" | awk '/^# L4: TCP proxy to iperf3/ { exit } { print }' >"$WORK/haproxy.cfg"
mkdir -p "$WORK"/haproxy "$WORK"/nginx/{tmp_body,tmp_proxy,tmp_fcgi,tmp_uwsgi,tmp_scgi}

taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" & PIDS+=($!)
wait_listener $! "$NGINX_PORT"
declare -A PID PORT
taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 & PIDS+=($!)
PID[haproxy]=$!; PORT[haproxy]=${FREE[2]}
names=(haproxy)
i=0
for bin in "$@"; do
  name="$i:$(basename "$bin")" dir="$WORK/sy$i"
  tcp_port=${FREE[3 + 2 * i]} admin_port=${FREE[4 + 2 * i]}
  mkdir -p "$dir"
  cat >"$dir/apps.json" <<JSON
{"apps":[
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
  PID[$name]=$!; PORT[$name]=$tcp_port
  names+=("$name")
  i=$((i + 1))
done
for n in "${names[@]}"; do wait_listener "${PID[$n]}" "${PORT[$n]}"; done
for n in "${names[@]}"; do # warm-up, untimed
  taskset -c 0 wrk -t1 -c50 -d1s -H 'Connection: close' "http://127.0.0.1:${PORT[$n]}/" >/dev/null
done

EVENTS=task-clock,context-switches,sched:sched_wakeup
[[ $PERF_RECORD == 1 ]] || for s in accept4 connect epoll_ctl epoll_wait read recvfrom write sendto shutdown close setsockopt getsockopt futex clock_gettime; do
  EVENTS+=",syscalls:sys_enter_$s"
done
STATS=$WORK/stats.tsv
: >"$STATS"
run() { # round name
  local n=$2 out req
  out=$WORK/perf.$1.${n//[:\/]/_}
  perf stat -x, -e "$EVENTS" -p "${PID[$n]}" -o "$out.stat" &
  local ps=$!
  local pr=
  if [[ $PERF_RECORD == 1 ]]; then
    perf record -q -e cpu-clock -F 4999 -g -p "${PID[$n]}" -o "$out.data" >/dev/null 2>&1 &
    pr=$!
  fi
  sleep 0.2
  if [[ -n ${RATE:-} ]]; then
    # An open loop: RATE new connections a second whatever the server does, one request each.
    local total=$((RATE * DURATION))
    req=$(taskset -c 0 h2load --h1 -H 'Connection: close' -r $((RATE / 10)) --rate-period=100ms -c "$total" -n "$total" \
      "http://127.0.0.1:${PORT[$n]}/" | awk '/^requests:/ { print $8 }')
  else
    req=$(taskset -c 0 wrk -t1 -c50 -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:${PORT[$n]}/" |
      awk '/ requests in / { print $1 }')
  fi
  kill -INT $ps ${pr:+$pr}
  wait $ps ${pr:+$pr} 2>/dev/null || true
  awk -F, -v r="$1" -v n="$n" -v req="$req" 'NF > 3 && $1 ~ /^[0-9.]+$/ { printf "%s\t%s\t%s\t%s\t%s\n", r, n, $3, $1, req }' "$out.stat" >>"$STATS"
  if [[ $PERF_RECORD == 1 ]]; then
    perf report -i "$out.data" --no-children --sort sym -g none --stdio -F overhead,sample,sym 2>/dev/null |
      awk -v r="$1" -v n="$n" -v req="$req" '$1 ~ /%$/ { s = $2; $1 = ""; $2 = ""; sub(/^ +/, ""); printf "%s\t%s\tsym %s\t%s\t%s\n", r, n, $0, s, req }' >>"$STATS"
    # Inclusive time of each system call (its softirq work included: on loopback, the peer's
    # receive of a segment sent runs in the sender's system call), and user space's.
    local total user
    read -r total user < <(perf report -i "$out.data" --no-children --sort sym -g none --stdio -F sample,sym 2>/dev/null |
      awk '$1 ~ /^[0-9]+$/ { t += $1; if ($2 == "[.]") u += $1 } END { print t + 0, u + 0 }')
    printf '%s\t%s\tsys (user space)\t%s\t%s\n' "$1" "$n" "$user" "$req" >>"$STATS"
    printf '%s\t%s\tall samples\t%s\t%s\n' "$1" "$n" "$total" "$req" >>"$STATS"
    perf report -i "$out.data" --children --sort sym -g none --stdio 2>/dev/null |
      awk -v r="$1" -v n="$n" -v req="$req" -v t="$total" '$4 ~ /^__x64_sys_/ { p = $1; sub(/%$/, "", p)
        printf "%s\t%s\tsys %s\t%s\t%s\n", r, n, substr($4, 11), p * t / 100, req }' >>"$STATS"
    if [[ -n ${KEEP_DATA:-} ]]; then mkdir -p "$KEEP_DATA" && mv "$out.data" "$KEEP_DATA/"; else rm -f "$out.data"; fi
  fi
  echo "round $1 $n: $req connections" >&2
}
for ((r = 1; r <= ROUNDS; r++)); do
  for ((k = 0; k < ${#names[@]}; k++)); do run "$r" "${names[$(((k + r) % ${#names[@]}))]}"; done
done

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), load average: $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds of ${DURATION}s per server"
echo
# Per connection: the sum over rounds of each count divided by the sum of connections.
awk -F'\t' -v names="${names[*]}" -v top="$SYMBOLS" '
  { key = $3; v[$2, key] += $4; if (!(($2, $1) in seenr)) { seenr[$2, $1] = 1; conns[$2] += $5 }
    if (!(key in seenk)) { seenk[key] = 1; keys[++nk] = key } }
  END {
    ns = split(names, nm, " ")
    printf "| per connection |"; for (i = 1; i <= ns; i++) printf " %s |", nm[i]; print ""
    printf "|---|"; for (i = 1; i <= ns; i++) printf "---:|"; print ""
    printf "| connections |"; for (i = 1; i <= ns; i++) printf " %d |", conns[nm[i]]; print ""
    for (k = 1; k <= nk; k++) {
      key = keys[k]; if (key ~ /^(sym|sys) / || key == "all samples") continue
      label = key; if (key == "task-clock") label = "CPU µs (task-clock)"
      printf "| %s |", label
      for (i = 1; i <= ns; i++) { x = v[nm[i], key] / conns[nm[i]]; if (key == "task-clock") x *= 1000; printf " %.3f |", x }
      print ""
    }
    # Samples are turned into µs per connection by the task-clock of the same runs: a symbol
    # with a share x of the samples of a server took x of its CPU time.
    for (i = 1; i <= ns; i++) us[nm[i]] = v[nm[i], "all samples"] ? v[nm[i], "task-clock"] * 1000 / conns[nm[i]] / v[nm[i], "all samples"] : 0
    m = 0
    for (k = 1; k <= nk; k++) {
      key = keys[k]; if (key !~ /^sym /) continue
      best = 0; for (i = 1; i <= ns; i++) { x = v[nm[i], key] * us[nm[i]]; if (x > best) best = x }
      m++; sk[m] = key; sb[m] = best
    }
    for (i = 2; i <= m; i++) for (j = i; j > 1 && sb[j-1] < sb[j]; j--) { t = sb[j]; sb[j] = sb[j-1]; sb[j-1] = t; t = sk[j]; sk[j] = sk[j-1]; sk[j-1] = t }
    if (m) {
      print ""
      printf "| µs per connection by system call (inclusive, perf cpu-clock samples) |"; for (i = 1; i <= ns; i++) printf " %s |", nm[i]; print ""
      printf "|---|"; for (i = 1; i <= ns; i++) printf "---:|"; print ""
      for (k = 1; k <= nk; k++) {
        key = keys[k]; if (key !~ /^sys /) continue
        best = 0; for (i = 1; i <= ns; i++) { x = v[nm[i], key] * us[nm[i]]; if (x > best) best = x }
        if (best < 0.05) continue
        printf "| %s |", substr(key, 5)
        for (i = 1; i <= ns; i++) printf " %.2f |", v[nm[i], key] * us[nm[i]]
        print ""
      }
    }
    if (m) {
      print ""
      printf "| µs per connection by symbol (self, perf cpu-clock samples) |"; for (i = 1; i <= ns; i++) printf " %s |", nm[i]; print ""
      printf "|---|"; for (i = 1; i <= ns; i++) printf "---:|"; print ""
      for (k = 1; k <= m && k <= top; k++) {
        label = substr(sk[k], 5); gsub(/\|/, "\\|", label)
        printf "| `%s` |", label
        for (i = 1; i <= ns; i++) printf " %.2f |", v[nm[i], sk[k]] * us[nm[i]]
        print ""
      }
    }
  }' "$STATS"
