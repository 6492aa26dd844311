#!/usr/bin/env bash
# benches/limits.sh — the cost of an app's request limits when they are configured but not
# reached: one switchyard (one worker, pinned to core 1) serves two vhost apps on the same nginx
# backend, `free.bench` without limits and `limited.bench` with SWITCHYARD_0_RATE_LIMIT (far above
# what the load reaches) and, with LIMITS=both, MAX_CONCURRENT_REQUESTS too. wrk (keep-alive,
# HTTP/1.1 fast path) and nginx pinned to core 0. Per run: req/s and switchyard's CPU-seconds per
# 100k requests (utime+stime from /proc/PID/stat), CPU steal. Rounds interleave free,limited then
# limited,free; rounds with steal above MAX_STEAL are dropped; medians of the kept rounds, and
# the ratios limited/free.
# Loopback only; stops what it started, by PID.
# Env: ROUNDS=3 DURATION=8 CONNECTIONS=50 MAX_STEAL=2 LIMITS=rate|both
#      SWITCHYARD_BIN=target/release/switchyard KEEP_WORK=1
set -euo pipefail
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} CONNECTIONS=${CONNECTIONS:-50} MAX_STEAL=${MAX_STEAL:-2}
LIMITS=${LIMITS:-rate} KEEP_WORK=${KEEP_WORK:-0}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
WORK=$(mktemp -d /tmp/switchyard-limits.XXXXXX)
RESULTS=$WORK/results.tsv
PIDS=()
declare -A PID_OF=()
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for i in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  done
  if [[ $KEEP_WORK == 1 ]]; then log "scratch dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export PATH=$PATH:/usr/sbin:/sbin
for cmd in nginx wrk curl taskset; do command -v "$cmd" >/dev/null || die "$cmd missing (see benches/peers.sh)"; done
(($(nproc) >= 2)) || die "needs at least 2 CPUs for pinning (nproc=$(nproc))"
[[ -x $SWITCHYARD_BIN ]] || (cd "$ROOT" && cargo build --release >&2)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

limited='"SWITCHYARD_0_RATE_LIMIT":"1000000000/s"'
[[ $LIMITS == both ]] && limited+=',"SWITCHYARD_0_MAX_CONCURRENT_REQUESTS":"100000"'
cat >"$WORK/nginx.conf" <<CFG
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18580; location / { default_type text/plain; return 200 "ok\n"; } } }
CFG
cat >"$WORK/apps.json" <<JSON
{"apps":[
 {"id":"/bench/free","labels":{"HAPROXY_0_VHOST":"free.bench"},"portDefinitions":[{"port":0}],
  "tasks":[{"id":"f1","appId":"/bench/free","host":"127.0.0.1","ports":[18580],"state":"TASK_RUNNING"}]},
 {"id":"/bench/limited","labels":{"HAPROXY_0_VHOST":"limited.bench",$limited},"portDefinitions":[{"port":0}],
  "tasks":[{"id":"l1","appId":"/bench/limited","host":"127.0.0.1","ports":[18580],"state":"TASK_RUNNING"}]}]}
JSON
cat >"$WORK/switchyard.toml" <<TOML
[discovery]
file = "apps.json"
[proxy]
group = "*"
bind = "127.0.0.1"
[http]
listen = ["127.0.0.1:18593"]
[admin]
listen = "127.0.0.1:19193"
[runtime]
workers = 1
[log]
level = "warn"
TOML

start() { # name core cmd...
  local name=$1 core=$2; shift 2
  taskset -c "$core" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!"); PID_OF[$name]=$!
  log "started $name (pid $!, core $core)"
}
start nginx 0 nginx -c "$WORK/nginx.conf" -p "$WORK"
start switchyard 1 "$SWITCHYARD_BIN" --config "$WORK/switchyard.toml"
deadline=$((SECONDS + 30))
for host in free.bench limited.bench; do
  until [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" http://127.0.0.1:18593/) == 200 ]]; do
    ((SECONDS < deadline)) || { tail -n 20 "$WORK/switchyard.log" >&2; die "$host does not answer"; }
    sleep 0.2
  done
done
curl -s http://127.0.0.1:19193/v1/routes | grep -q RATE_LIMIT && die "the limit did not parse"

cpu_snapshot() { local _c u n s i w q sq st _r; read -r _c u n s i w q sq st _r </proc/stat; echo "$((u + n + s + i + w + q + sq + st)) $st"; }
steal_pct() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1]
  printf "%.2f", (d > 0 ? 100 * (y[2] - x[2]) / d : 0) }'; }
proc_ticks() { local s f; s=$(<"/proc/$1/stat"); s=${s##*) }; read -r -a f <<<"$s"; echo $((f[11] + f[12])); }
CLK_TCK=$(getconf CLK_TCK)
pid=${PID_OF[switchyard]}

measure() { # route round
  local route=$1 round=$2 c0 c1 t0 t1 out rps req non2xx steal cpu
  c0=$(cpu_snapshot); t0=$(proc_ticks "$pid")
  out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H "Host: $route.bench" http://127.0.0.1:18593/ 2>&1)
  t1=$(proc_ticks "$pid"); c1=$(cpu_snapshot); steal=$(steal_pct "$c0" "$c1")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  req=$(awk '/requests in/ { print $1 }' <<<"$out")
  non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out"); non2xx=${non2xx:-0}
  ((non2xx == 0)) || die "$route: $non2xx answers were not 2xx (a limit was reached?)"
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN { printf "%.3f", (t / hz) / n * 100000 }')
  printf '%s\t%s\t%s\t%s\t%s\n' "$route" "$round" "$rps" "$cpu" "$steal" >>"$RESULTS"
  log "round $round $route: $rps req/s, $cpu CPU-s per 100k, steal $steal%"
}
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="free limited"; else order="limited free"; fi
  for route in $order; do measure "$route" "$r"; done
done

awk -F'\t' -v max="$MAX_STEAL" -v limits="$LIMITS" '
  function median(arr, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j > 0 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
    return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2 }
  { round[$2] = round[$2] || ($5 > max); all[NR] = $0 }
  END {
    for (k = 1; k <= NR; k++) { split(all[k], f, "\t"); if (round[f[2]]) continue
      n[f[1]]++; rps[f[1], n[f[1]]] = f[3]; cpu[f[1], n[f[1]]] = f[4] }
    noisy = ""
    if (!n["free"] || !n["limited"]) { noisy = " (noisy: every round)"
      for (k = 1; k <= NR; k++) { split(all[k], f, "\t"); n[f[1]]++; rps[f[1], n[f[1]]] = f[3]; cpu[f[1], n[f[1]]] = f[4] } }
    for (r in n) { delete a; delete b; for (i = 1; i <= n[r]; i++) { a[i] = rps[r, i]; b[i] = cpu[r, i] }
      mr[r] = median(a, n[r]); mc[r] = median(b, n[r]) }
    printf "limits=%s rounds kept: %d%s\n", limits, n["free"], noisy
    printf "%-8s %12s %22s\n", "route", "req/s", "CPU-s per 100k req"
    printf "%-8s %12.0f %22.3f\n", "free", mr["free"], mc["free"]
    printf "%-8s %12.0f %22.3f\n", "limited", mr["limited"], mc["limited"]
    printf "limited/free: req/s %.3f, CPU per request %.3f\n", mr["limited"] / mr["free"], mc["limited"] / mc["free"]
  }' "$RESULTS"
