#!/usr/bin/env bash
# benches/h2.sh — HTTP/2 clients with multiplexed streams: switchyard against HAProxy 2.6's h2
# frontend, over h2c (prior knowledge, plain TCP) and TLS (ALPN h2, TLS 1.3, ECDSA P-256, the same
# self-signed certificate for both, made here and removed on exit). One worker / nbthread 1 each,
# pinned to core 1; nginx (the HTTP/1.1 backend) and h2load pinned to core 0. Each h2 stream
# becomes a backend HTTP/1.1 request (keep-alive, pooled) in both proxies.
# Load: h2load -t1 -c$CLIENTS -m$STREAMS -D $DURATION (closed loop). Per run: req/s, p99 of the
# per-request latencies (h2load --log-file), the proxy's CPU-seconds per 100k requests and
# requests per proxy CPU-second (utime+stime from /proc/PID/stat), the user-space part of it
# (utime alone: the rest is the kernel's loopback path), CPU steal. Rounds interleave
# A B then B A; rounds with steal above MAX_STEAL are dropped; medians of the kept rounds.
# Loopback only; stops what it started, by PID.
# Env: ROUNDS=3 DURATION=8 CLIENTS=100 STREAMS=10 MAX_STEAL=2 SWITCHYARD_BIN=target/release/switchyard
#      MODES="h2c tls" KEEP_WORK=1 (keep the scratch dir: configs, logs, results.tsv)
#      BASE_BIN=/path/to/other/switchyard: a second switchyard (before a change) in the same
#      interleaved rounds, on its own ports, reported beside the first (`base`).
#      TOGETHER=1: every proxy's run of a round at once, each under its own h2load, sharing the
#      cores (see `begin` below): req/s then says nothing, CPU per request compares like with like.
#      PERF_STAT=1: also count, with `perf stat -p PID` over each run, the proxy's task-clock,
#      context switches and the system calls that matter, reported per request at the end
#      (summed over rounds; what the kernel side of a request costs each proxy).
set -euo pipefail
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} CLIENTS=${CLIENTS:-100} STREAMS=${STREAMS:-10}
MAX_STEAL=${MAX_STEAL:-2} MODES=${MODES:-"h2c tls"} KEEP_WORK=${KEEP_WORK:-0} BASE_BIN=${BASE_BIN:-}
PERF_STAT=${PERF_STAT:-0} TOGETHER=${TOGETHER:-0}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/switchyard-h2.XXXXXX)
RESULTS=$WORK/results.tsv
PIDS=()
declare -A PID_OF=()
declare -A URL=([switchyard-h2c]=http://127.0.0.1:18493/ [haproxy-h2c]=http://127.0.0.1:18483/
  [switchyard-tls]=https://127.0.0.1:18444/ [haproxy-tls]=https://127.0.0.1:18443/)
[[ -z $BASE_BIN ]] || URL+=([base-h2c]=http://127.0.0.1:18495/ [base-tls]=https://127.0.0.1:18446/)
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
  if [[ $KEEP_WORK == 1 ]]; then log "scratch dir kept: $WORK (remove $WORK/certs yourself)"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export PATH=$PATH:/usr/sbin:/sbin
for cmd in haproxy nginx openssl h2load taskset; do command -v "$cmd" >/dev/null || die "$cmd missing (see benches/peers.sh)"; done
(($(nproc) >= 2)) || die "needs at least 2 CPUs for pinning (nproc=$(nproc))"
[[ -x $SWITCHYARD_BIN ]] || (cd "$ROOT" && cargo build --release >&2)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- configs -----------------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.local \
  -addext subjectAltName=DNS:bench.local,IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
mkdir -p "$WORK/certs"
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/certs/bench.pem"
cat >"$WORK/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option dontlognull
frontend h2c
    bind 127.0.0.1:18483 proto h2
    default_backend nginx
frontend h2tls
    bind 127.0.0.1:18443 ssl crt $WORK/certs/bench.pem alpn h2,http/1.1
    default_backend nginx
backend nginx
    http-reuse safe
    server n1 127.0.0.1:18480
CFG
cat >"$WORK/nginx.conf" <<CFG
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18480; location / { default_type text/plain; return 200 "ok\n"; } } }
CFG
cat >"$WORK/apps.json" <<JSON
{"apps":[{"id":"/bench/h2","labels":{"HAPROXY_0_MODE":"http","HAPROXY_0_VHOST":"127.0.0.1"},
  "portDefinitions":[{"port":18491,"protocol":"tcp"}],
  "tasks":[{"id":"t1","appId":"/bench/h2","host":"127.0.0.1","ports":[18480],"state":"TASK_RUNNING"}]}]}
JSON
cat >"$WORK/switchyard.toml" <<TOML
[discovery]
file = "apps.json"
[proxy]
group = "*"
bind = "127.0.0.1"
[http]
listen = ["127.0.0.1:18493"]
h2c = true
[https]
listen = ["127.0.0.1:18444"]
certs = "certs"
[admin]
listen = "127.0.0.1:19093"
[runtime]
workers = 1
[log]
level = "warn"
TOML

# --- servers -----------------------------------------------------------------------------------
start() { # name core cmd...
  local name=$1 core=$2; shift 2
  taskset -c "$core" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!"); PID_OF[$name]=$!
  log "started $name (pid $!, core $core)"
}
answers() { # url: one h2 request answered 200
  taskset -c 0 h2load -n1 -c1 "$1" 2>/dev/null | grep -q '1 succeeded'
}
wait_ready() { # name url
  local deadline=$((SECONDS + 30))
  until answers "$2"; do
    kill -0 "${PID_OF[$1]}" 2>/dev/null || { tail -n 20 "$WORK/$1.log" >&2; die "$1 exited during start-up"; }
    ((SECONDS < deadline)) || { tail -n 20 "$WORK/$1.log" >&2; die "$1 does not answer $2 after 30 s"; }
    sleep 0.2
  done
}
start nginx 0 nginx -c "$WORK/nginx.conf" -p "$WORK"
start haproxy 1 haproxy -db -f "$WORK/haproxy.cfg"
start switchyard 1 "$SWITCHYARD_BIN" --config "$WORK/switchyard.toml"
if [[ -n $BASE_BIN ]]; then
  sed 's/18493/18495/; s/18444/18446/; s/19093/19095/' "$WORK/switchyard.toml" >"$WORK/base.toml"
  start base 1 "$BASE_BIN" --config "$WORK/base.toml"
fi
for target in "${!URL[@]}"; do wait_ready "${target%-*}" "${URL[$target]}"; done

# --- measurement -------------------------------------------------------------------------------
cpu_snapshot() { local _c u n s i w q sq st _r; read -r _c u n s i w q sq st _r </proc/stat; echo "$((u + n + s + i + w + q + sq + st)) $st"; }
steal_pct() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1]
  printf "%.2f", (d > 0 ? 100 * (y[2] - x[2]) / d : 0) }'; }
proc_ticks() { local s f; s=$(<"/proc/$1/stat"); s=${s##*) }; read -r -a f <<<"$s"; echo $((f[11] + f[12])); }
user_ticks() { local s f; s=$(<"/proc/$1/stat"); s=${s##*) }; read -r -a f <<<"$s"; echo $((f[11])); }

# One run: begin starts h2load against PROXY (and perf stat on it), end waits for it and writes
# its line in results.tsv. In turn, each proxy's run ends before the next begins; TOGETHER=1
# begins every proxy's run at once (each against its own h2load, the proxies sharing core 1 and
# the clients core 0), so that what the neighbours take from the machine falls on all of them
# alike and each round's ratio compares like with like.
declare -A T0 U0 C0 PS H2PID
begin() { # proxy mode round
  local proxy=$1 mode=$2 pid=${PID_OF[$1]}
  rm -f "$WORK/h2load.$proxy.log" "$WORK/h2load.$proxy.out"
  PS[$proxy]=
  if [[ $PERF_STAT == 1 ]]; then
    perf stat -x, -e "$EVENTS" -p "$pid" -o "$WORK/perf.$proxy.stat" &
    PS[$proxy]=$!
    sleep 0.2
  fi
  C0[$proxy]=$(cpu_snapshot); T0[$proxy]=$(proc_ticks "$pid"); U0[$proxy]=$(user_ticks "$pid")
  taskset -c 0 h2load -t1 -c"$CLIENTS" -m"$STREAMS" -D "$DURATION" --log-file="$WORK/h2load.$proxy.log" \
    "${URL[$proxy-$mode]}" >"$WORK/h2load.$proxy.out" 2>&1 &
  H2PID[$proxy]=$!
}
end() { # proxy mode round -> one line in results.tsv
  local proxy=$1 mode=$2 round=$3 pid=${PID_OF[$1]} c1 t1 u1 out rps p99 req bad cpu steal
  local hlog=$WORK/h2load.$proxy.log ps=${PS[$1]}
  wait "${H2PID[$proxy]}" || true
  out=$(<"$WORK/h2load.$proxy.out")
  t1=$(proc_ticks "$pid"); u1=$(user_ticks "$pid"); c1=$(cpu_snapshot); steal=$(steal_pct "${C0[$proxy]}" "$c1")
  if [[ -n $ps ]]; then
    kill -INT "$ps"; wait "$ps" 2>/dev/null || true
  fi
  rps=$(awk '/^finished in/ { v = $4; gsub(/,/, "", v); print v + 0 }' <<<"$out")
  # log columns: start (us), status, duration (us)
  bad=$(awk -F'\t' '$2 != 200 { n++ } END { print n + 0 }' "$hlog" 2>/dev/null || echo 0)
  read -r p99 req < <(cut -f3 "$hlog" 2>/dev/null | sort -n |
    awk '{ d[NR] = $1 } END { if (!NR) { print "- 0"; exit } printf "%.3f %d\n", d[int((NR - 1) * 0.99) + 1] / 1000, NR }')
  ((req > 0)) || { log "h2load $proxy $mode failed: $(tail -n 3 <<<"$out")"; rps=-; }
  ((bad == 0)) || log "warning: $proxy $mode round $round: $bad non-200 answers of $req"
  cpu=$(awk -v d="$((t1 - T0[$proxy]))" -v hz="$CLK_TCK" -v r="$req" 'BEGIN { if (r) printf "%.3f", d / hz / r * 100000; else print "-" }')
  local per_core; per_core=$(awk -v c="$cpu" 'BEGIN { if (c == "-" || c == 0) print "-"; else printf "%.0f", 100000 / c }')
  local user_us; user_us=$(awk -v d="$((u1 - U0[$proxy]))" -v hz="$CLK_TCK" -v r="$req" 'BEGIN { if (r) printf "%.3f", d / hz / r * 1e6; else print "-" }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$proxy" "$round" "$steal" "${rps:--}" "$p99" "$cpu" "$per_core" "$user_us" >>"$RESULTS"
  [[ -z $ps ]] || awk -F, -v m="$mode" -v p="$proxy" -v req="$req" '
    NF > 3 && $1 ~ /^[0-9.]+$/ { printf "%s\t%s\t%s\t%s\t%s\n", m, p, $3, $1, req }' "$WORK/perf.$proxy.stat" >>"$WORK/perf.tsv"
  log "round $round $proxy $mode: req/s=$rps p99=${p99}ms cpu-s/100k=$cpu req/cpu-s=$per_core steal=$steal%"
}

EVENTS=task-clock,context-switches,page-faults
for s in epoll_ctl epoll_wait recvfrom readv writev sendto sendmsg recvmsg futex brk mmap munmap madvise; do
  EVENTS+=",syscalls:sys_enter_$s"
done
for target in "${!URL[@]}"; do   # warm-up, untimed
  taskset -c 0 h2load -t1 -c"$CLIENTS" -m"$STREAMS" -D 1 "${URL[$target]}" >/dev/null 2>&1 || true
done
for ((r = 1; r <= ROUNDS; r++)); do
  order=(switchyard haproxy ${BASE_BIN:+base})
  ((r % 2)) || order=(${BASE_BIN:+base} haproxy switchyard)
  for mode in $MODES; do
    if [[ $TOGETHER == 1 ]]; then
      for proxy in "${order[@]}"; do begin "$proxy" "$mode" "$r"; done
      for proxy in "${order[@]}"; do end "$proxy" "$mode" "$r"; done
    else
      for proxy in "${order[@]}"; do begin "$proxy" "$mode" "$r"; end "$proxy" "$mode" "$r"; done
    fi
  done
done

# --- report ------------------------------------------------------------------------------------
stats() { # mode proxy column -> "median kept total"
  awk -F'\t' -v m="$1" -v p="$2" -v k="$3" -v max="$MAX_STEAL" '
    function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    $1 == m && $2 == p && $k != "-" { all[++n] = $k + 0; if ($4 + 0 <= max + 0) ok[++q] = $k + 0 }
    END { if (!n) print "- 0 0"; else if (q) print med(ok, q), q, n; else print med(all, n), 0, n }' "$RESULTS"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
commit=$(git -C "$ROOT" rev-parse --short HEAD)
[[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock) ]] || commit="$commit (dirty tree)"
echo "## HTTP/2: switchyard vs HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }') — h2load -c$CLIENTS -m$STREAMS, loopback, pinned"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel: $(uname -r), commit: $commit; proxies on core 1 (one worker/thread), nginx + h2load on core 0"
echo "- h2load -t1 -c$CLIENTS -m$STREAMS -D $DURATION; $ROUNDS rounds, A B then B A$([[ $TOGETHER != 1 ]] || echo ", the proxies of a round run at once (TOGETHER=1)"); medians of rounds with steal <= $MAX_STEAL%"
echo
echo "| mode | metric | switchyard | haproxy | switchyard/haproxy | kept (sy, hp) |"
echo "|---|---|---:|---:|---:|---|"
for mode in $MODES; do
  for col in "5 req/s" "6 p99 ms" "7 CPU-s / 100k req" "8 req per proxy CPU-s" "9 user-space µs per req"; do
    read -r av ak at <<<"$(stats "$mode" switchyard "${col%% *}")"
    read -r hv hk ht <<<"$(stats "$mode" haproxy "${col%% *}")"
    echo "| $mode | ${col#* } | $av | $hv | $(ratio "$av" "$hv") | $ak/$at, $hk/$ht |"
    if [[ -n $BASE_BIN ]]; then
      read -r bv bk bt <<<"$(stats "$mode" base "${col%% *}")"
      echo "| $mode | ${col#* } (base) | $bv | $hv | $(ratio "$bv" "$hv") | $bk/$bt, $hk/$ht |"
    fi
  done
done
if [[ -n $BASE_BIN ]]; then echo; echo "base: $BASE_BIN"; fi
# Per round, each switchyard's requests per CPU-second over HAProxy's in the same round; the
# median of those ratios (steady against a slow moment that falls on one round only).
echo
for mode in $MODES; do
  for proxy in switchyard ${BASE_BIN:+base}; do
    awk -F'\t' -v m="$mode" -v p="$proxy" '
      $1 == m && $8 != "-" { v[$2, $3] = $8; rounds[$3] = 1 }
      END { n = 0; for (r in rounds) if (((p, r) in v) && (("haproxy", r) in v)) x[++n] = v[p, r] / v["haproxy", r]
            for (i = 2; i <= n; i++) for (j = i; j > 1 && x[j-1] > x[j]; j--) { t = x[j]; x[j] = x[j-1]; x[j-1] = t }
            line = ""; for (i = 1; i <= n; i++) line = line sprintf(" %.2f", x[i])
            if (n) printf "%s %s: requests per CPU-second / HAProxy, per round (sorted):%s; median %.2f\n", m, p, line, n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2 }' "$RESULTS"
  done
done
if [[ $PERF_STAT == 1 && -s $WORK/perf.tsv ]]; then
  echo
  echo "Per request, summed over rounds (perf stat -p PID; task-clock in µs):"
  echo
  awk -F'\t' '
    { k = $1 " " $2; key = $3; v[k, key] += $4; if (!((k, key) in seen)) { seen[k, key] = 1; n[k]++ }
      if (key == "task-clock") req[k] += $5
      if (!(k in seenp)) { seenp[k] = 1; procs[++np] = k }
      if (!(key in seenk)) { seenk[key] = 1; keys[++nk] = key } }
    END {
      printf "| event |"; for (i = 1; i <= np; i++) printf " %s |", procs[i]; print ""
      printf "|---|"; for (i = 1; i <= np; i++) printf "---:|"; print ""
      for (j = 1; j <= nk; j++) { name = keys[j]; sub(/^syscalls:sys_enter_/, "", name); printf "| %s |", name
        for (i = 1; i <= np; i++) { x = req[procs[i]] ? v[procs[i], keys[j]] / req[procs[i]] : 0
          if (keys[j] == "task-clock") x = x * 1000
          printf " %.3f |", x }
        print "" } }' "$WORK/perf.tsv"
fi
