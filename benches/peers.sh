#!/usr/bin/env bash
# benches/peers.sh — side-by-side loopback benchmark: Switchyard vs HAProxy 2.6 (proxying) and
# unbound, NSD and Knot DNS (DNS).
#
# Starts nginx (backend, 127.0.0.1:18080) and an iperf3 server (127.0.0.1:15201) pinned to core 0,
# HAProxy (nbthread 1; HTTP :18081, TCP :18082, TCP :15202 -> iperf3) and Switchyard
# (benches/peers/switchyard.toml: HTTP :18091, TCP :18092, TCP :15212 -> iperf3) pinned to core 1.
# Runs rounds interleaved A B A B: wrk (core 0) against each proxy's HTTP-mode and TCP-mode port, and
# iperf3 (core 0) through each proxy and direct, and dnsperf (core 0) against a second Switchyard
# (benches/peers/dns.toml, :15354), unbound (auth-zone, :15353), Knot DNS (benches/peers/knot.conf,
# :15355) and NSD (benches/peers/nsd.conf, :15356), all on core 1 with one serving thread, the
# same 100 names; the DNS servers go in turn, the order rotating every round, and get a table of
# their own (q/s, and server CPU-seconds per 100k queries, NSD's over its process tree).
# Per round it records req/s, p99, CPU steal (from /proc/stat) and server CPU-seconds per 100k
# requests or queries (from /proc/PID/stat). Rounds with steal above
# MAX_STEAL are discarded; medians of the kept rounds go into a markdown table (stdout, and OUT).
# Traffic goes to 127.0.0.1 only; every process it starts is stopped on exit (by PID).
# Installs haproxy nginx wrk iperf3 unbound nsd knot dnsperf (and curl jq dig) from Debian if
# missing: needs root (or sudo). CASES=dns runs the DNS servers only (no proxies started).
#
# Env knobs:
#   ROUNDS=3           rounds per proxy          DURATION=8   seconds per wrk/h2load/dnsperf run
#   RATE=40000         the fixed offered load (h2load --rps) at which p99 latencies are compared
#   IPERF_TIME=5       seconds per iperf3 run    MAX_STEAL=2  discard rounds above this steal %
#   SWITCHYARD_BIN=target/release/switchyard    (built with `cargo build --release` if missing)
#   SKIP_SWITCHYARD=1  compare direct nginx/iperf3 against HAProxy instead (no Switchyard needed)
#   REPIN=0            leave the DNS servers' own thread affinity (Knot's UDP worker then runs on
#                      core 0, beside dnsperf: how the 0.187 s of issue 16 was measured)
#   BASELINE_BIN=path  another switchyard binary (e.g. main's) measured in the DNS rotation too, as
#                      "baseline" (:15357): before/after in one interleaved run
#   PEERS_DIR=<repo>/../shared/peers            OUT=file  also write the table there
#   KEEP_WORK=1        keep the scratch dir (configs, server logs, raw results.tsv)
#   CASES="http vhost" only these cases (of: http rate vhost tcp close tcp-close iperf vip dns);
#                      rows of the others read "–". close / tcp-close: wrk with `Connection: close`,
#                      a new client connection per request, in HTTP mode / TCP mode
# Runs from the repo root (relative paths above are from there). Takes about 5 minutes with the
# defaults: ROUNDS*(2*(7*DURATION+2*IPERF_TIME)+IPERF_TIME) s plus a 4 s warm-up and a few s of
# start-up.
set -euo pipefail

ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} IPERF_TIME=${IPERF_TIME:-5} MAX_STEAL=${MAX_STEAL:-2}
RATE=${RATE:-40000}
SKIP_SWITCHYARD=${SKIP_SWITCHYARD:-0} OUT=${OUT:-} KEEP_WORK=${KEEP_WORK:-0} CASES=${CASES:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || dirname "$HERE")
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
SWITCHYARD_BIN=${SWITCHYARD_BIN:-target/release/switchyard}
CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/switchyard-peers.XXXXXX)
RESULTS=$WORK/results.tsv
PIDS=()
NOTES=()
declare -A HTTP_PORT=([switchyard]=18091 [haproxy]=18081 [direct]=18080)
declare -A TCP_PORT=([switchyard]=18092 [haproxy]=18082 [direct]=18080)
# switchyard's shared vhost listener (Host: 127.0.0.1 routes to /bench/http) against HAProxy's
# HTTP-mode frontend
declare -A VHOST_PORT=([switchyard]=18093 [haproxy]=18081 [direct]=18080)
declare -A IPERF_PORT=([switchyard]=15212 [haproxy]=15202 [direct]=15201)
# iperf3 through an IP VIP (switchyard, 127.66.0.1:15213, Maglev) against HAProxy's TCP mode
declare -A VIP_TARGET=([switchyard]=127.66.0.1:15213 [haproxy]=127.0.0.1:15202 [direct]=127.0.0.1:15201)
# DNS: switchyard's DNS instance against unbound, Knot and NSD, each serving the 100 names of one
# A record
DNS_PEERS=(unbound knot nsd)
declare -A DNS_PORT=([switchyard]=15354 [unbound]=15353 [knot]=15355 [nsd]=15356 [baseline]=15357)
declare -A DNS_SERVER=([switchyard]=switchyard-dns [unbound]=unbound [knot]=knot [nsd]=nsd [baseline]=baseline)
BASELINE_BIN=${BASELINE_BIN:-} REPIN=${REPIN:-1}
[[ -z $BASELINE_BIN ]] || DNS_PEERS+=(baseline)
declare -A PID_OF=([direct]="")   # direct has no proxy process: CPU column is n/a

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
  if [[ $KEEP_WORK == 1 || $rc != 0 ]]; then log "scratch dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- setup -------------------------------------------------------------------------------------
install_deps() {
  local -A pkg_of=([haproxy]=haproxy [nginx]=nginx [wrk]=wrk [iperf3]=iperf3 [curl]=curl [jq]=jq [taskset]=util-linux
    [h2load]=nghttp2-client
    [unbound]=unbound [nsd]=nsd [knotd]=knot [dnsperf]=dnsperf [dig]=bind9-dnsutils)
  local cmd missing=() sudo=() i
  export PATH=$PATH:/usr/sbin:/sbin   # haproxy and nginx live in /usr/sbin
  for cmd in "${!pkg_of[@]}"; do command -v "$cmd" >/dev/null || missing+=("${pkg_of[$cmd]}"); done
  ((${#missing[@]})) || return 0
  for ((i = 0; i < 600; i++)); do   # an install may be running in the background: let it finish
    pidof apt-get apt dpkg >/dev/null || break
    ((i % 30)) || log "waiting for a running apt/dpkg to finish (missing: ${missing[*]})"
    sleep 1
  done
  missing=()
  for cmd in "${!pkg_of[@]}"; do command -v "$cmd" >/dev/null || missing+=("${pkg_of[$cmd]}"); done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  log "installing ${missing[*]} (apt waits for any apt/dpkg already running)"
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq)
  "${apt[@]}" update >&2
  "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >&2
}

prepare_configs() {
  [[ -d $PEERS_DIR ]] || die "peer configs not found at $PEERS_DIR (set PEERS_DIR)"
  local f
  for f in haproxy.cfg nginx.conf unbound.conf; do
    [[ -f $PEERS_DIR/$f ]] || die "missing $PEERS_DIR/$f"
    sed "s#/tmp/peers#$WORK#g" "$PEERS_DIR/$f" >"$WORK/$f"
  done
  for f in nsd.conf knot.conf; do   # ours: NSD moved off switchyard's port
    sed "s#/tmp/peers#$WORK#g" "$ROOT/benches/peers/$f" >"$WORK/$f"
  done
  mkdir -p "$WORK"/nsd "$WORK"/knot
  cp "$PEERS_DIR/bench.test.zone" "$PEERS_DIR/queries.txt" "$WORK/"
  mkdir -p "$WORK"/haproxy "$WORK"/nginx/{tmp_body,tmp_proxy,tmp_fcgi,tmp_uwsgi,tmp_scgi}
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # haproxy maxconn 4096 needs ~8.2k FDs
}

# is something listening on 127.0.0.1:$1 (or 0.0.0.0)? Reads /proc/net/tcp: no connection made.
listening() {
  local hex; hex=$(printf '%04X' "$1")
  awk -v p=":$hex" '$4=="0A" && ($2=="0100007F" p || $2=="00000000" p) {f=1} END {exit !f}' /proc/net/tcp
}

start() { # name core cmd... — runs cmd pinned to core in the background, logs to $WORK/name.log
  local name=$1 core=$2; shift 2
  taskset -c "$core" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!"); PID_OF[$name]=$!
  log "started $name (pid $!, core $core)"
}

wait_ready() { # name check-command... — polls until the check passes, 30 s deadline
  local name=$1 deadline=$((SECONDS + 30)); shift
  until "$@" >/dev/null 2>&1; do
    kill -0 "${PID_OF[$name]}" 2>/dev/null || { tail -n 20 "$WORK/$name.log" >&2; die "$name exited during start-up"; }
    ((SECONDS < deadline)) || { tail -n 20 "$WORK/$name.log" >&2; die "$name not ready after 30 s: $*"; }
    sleep 0.2
  done
}

ports_ready() { local p; for p in "$@"; do listening "$p" || return 1; done; }
http_ok() { [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$1/") == ok ]]; }
switchyard_ready() {
  curl -fsS --max-time 2 http://127.0.0.1:19090/readyz && ports_ready 18091 18092 18093 15212 && http_ok 18091 && http_ok 18092 && http_ok 18093
}

start_servers() {
  local p
  local ports=(19091 19092 15353 15354 15355 15356 15357)
  [[ $CASES == dns ]] || ports+=(18080 15201 18081 18082 15202 15203 18091 18092 18093 15212 19090)
  for p in "${ports[@]}"; do
    ! listening "$p" || die "port $p already in use on 127.0.0.1 (leftover server?)"
  done
  (($(nproc) >= 2)) || die "needs at least 2 CPUs for pinning (nproc=$(nproc))"
  if [[ $CASES == dns ]]; then start_dns_servers; return; fi
  start nginx 0 nginx -c "$WORK/nginx.conf" -p "$WORK/nginx/" -e "$WORK/nginx/error.log"
  start iperf3 0 iperf3 -s -B 127.0.0.1 -p 15201
  start haproxy 1 haproxy -db -f "$WORK/haproxy.cfg"
  wait_ready nginx ports_ready 18080
  wait_ready iperf3 ports_ready 15201
  wait_ready haproxy ports_ready 18081 18082 15202
  if ! { http_ok 18081 && http_ok 18082; }; then die "HAProxy does not proxy to nginx"; fi
  [[ $SKIP_SWITCHYARD == 1 ]] && return 0
  if [[ ! -x $SWITCHYARD_BIN ]]; then
    log "$SWITCHYARD_BIN missing: cargo build --release"
    cargo build --release >&2
    [[ -x $SWITCHYARD_BIN ]] || die "$SWITCHYARD_BIN still missing after the build"
  fi
  start switchyard 1 "$SWITCHYARD_BIN" --config benches/peers/switchyard.toml
  wait_ready switchyard switchyard_ready
  start_dns_servers
}
start_dns_servers() {
  build_switchyard
  start unbound 1 unbound -d -c "$WORK/unbound.conf"
  start knot 1 knotd -c "$WORK/knot.conf"
  start nsd 1 nsd -d -c "$WORK/nsd.conf"
  start switchyard-dns 1 "$SWITCHYARD_BIN" --config benches/peers/dns.toml
  wait_ready unbound dns_answers 15353 h1.bench.test
  wait_ready knot dns_answers 15355 h1.bench.test
  wait_ready nsd dns_answers 15356 h1.bench.test
  wait_ready switchyard-dns dns_answers 15354 h1.marathon.bench.test
  # Knot pins its UDP worker threads itself (worker i on CPU i: its one worker lands on core 0,
  # beside dnsperf, where waking the load generator costs no cross-core IPI and it looks ~20 %
  # cheaper): every thread of every DNS server back to core 1, after start-up.
  local s
  for s in unbound knot nsd switchyard-dns; do repin "${PID_OF[$s]}"; done
  if [[ -n $BASELINE_BIN ]]; then
    sed -e 's/:15354"/:15357"/' -e 's/:19091"/:19092"/' benches/peers/dns.toml >"$WORK/baseline.toml"
    cp benches/peers/dns-apps.json "$WORK/"
    start baseline 1 "$BASELINE_BIN" --config "$WORK/baseline.toml"
    wait_ready baseline dns_answers 15357 h1.marathon.bench.test
    repin "${PID_OF[baseline]}"
  fi
}
repin() { # pid — every thread of pid and of its children on core 1 (NSD serves from a child)
  [[ $REPIN == 1 ]] || return 0
  local p
  for p in "$1" $(pgrep -P "$1"); do taskset -a -p -c 1 "$p" >/dev/null; done
}
build_switchyard() {
  [[ -x $SWITCHYARD_BIN ]] && return 0
  log "$SWITCHYARD_BIN missing: cargo build --release"
  cargo build --release >&2
  [[ -x $SWITCHYARD_BIN ]] || die "$SWITCHYARD_BIN still missing after the build"
}
dns_answers() { [[ -n $(dig @127.0.0.1 -p "$1" "$2" A +short +time=1 +tries=1) ]]; }

# --- measurement -------------------------------------------------------------------------------
cpu_snapshot() { # "total steal" jiffies from the aggregate cpu line (guest is inside user already)
  local _c u n s i w q sq st _rest
  read -r _c u n s i w q sq st _rest </proc/stat
  echo "$((u + n + s + i + w + q + sq + st)) $st"
}
steal_pct() { # before after
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1]
    printf "%.2f", (d > 0 ? 100 * (y[2] - x[2]) / d : 0) }'
}
proc_ticks() { # utime+stime of pid (all threads), 0 when no pid
  [[ -n $1 ]] || { echo 0; return; }
  local s f; s=$(<"/proc/$1/stat"); s=${s##*) }
  read -r -a f <<<"$s"
  echo $((f[11] + f[12]))
}
tree_ticks() { # utime+stime of pid and every live descendant (NSD serves from forked children)
  [[ -n $1 ]] || { echo 0; return; }
  local total child
  total=$(proc_ticks "$1")
  for child in $(pgrep -P "$1"); do total=$((total + $(tree_ticks "$child"))); done
  echo "$total"
}

run_wrk() { # port [wrk args...] -> "rps p99_ms requests errors"
  local port=$1; shift
  taskset -c 0 wrk -t1 -c50 -d"${DURATION}s" --latency "$@" "http://127.0.0.1:$port/" | parse_wrk
}
parse_wrk() {
  awk 'function ms(v, u) { u = v; sub(/^[0-9.]+/, "", u); v += 0
         return u == "us" ? v / 1000 : u == "s" ? v * 1000 : u == "m" ? v * 60000 : v }
       /Requests\/sec:/ { rps = $2 }   $1 == "99%" { p99 = ms($2) }   / requests in / { req = $1 }
       /Non-2xx or 3xx responses:/ { err += $NF }
       /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
       END { if (req == "") exit 1; printf "%.0f %.3f %d %d\n", rps, p99, req, err }'
}
run_iperf() { # port [host] -> receiver Gbit/s
  local json; json=$(taskset -c 0 iperf3 -c "${2:-127.0.0.1}" -p "$1" -t "$IPERF_TIME" -J) || true
  jq -e '.end.sum_received.bits_per_second / 1e9 * 100 | round / 100' <<<"$json" || { log "iperf3 :$1 failed: $(jq -r '.error // "?"' <<<"$json")"; return 1; }
}

run_rate() { # port -> "p99_ms requests errors": h2load at a fixed RATE, per-request latencies logged
  local log=$WORK/h2load.log out
  rm -f "$log"
  out=$(taskset -c 0 h2load --h1 -t1 -c50 --rps "$((RATE / 50))" -D "$DURATION" --log-file="$log" \
    "http://127.0.0.1:$1/" 2>&1) || true
  # columns: start (us), status, duration (us); the p99 of the durations, the count, the failures
  local bad; bad=$(awk -F'\t' '$2 != 200 { n++ } END { print n + 0 }' "$log" 2>/dev/null || echo 0)
  cut -f3 "$log" 2>/dev/null | sort -n | awk -v bad="$bad" '{ d[NR] = $1 }
    END { if (!NR) exit 1; printf "%.3f %d %d\n", d[int((NR - 1) * 0.99) + 1] / 1000, NR, bad }' ||
    { log "h2load :$1 failed: $(tail -n 3 <<<"$out")"; return 1; }
}

run_dnsperf() { # port queries-file -> "q/s completed"
  taskset -c 0 dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l "$DURATION" 2>/dev/null |
    awk '/Queries per second/ { q = $4 } /Queries completed/ { n = $3 } END { if (q == "") exit 1; printf "%.0f %d\n", q, n }'
}

measure() { # case proxy round — one run, one line in results.tsv
  local case=$1 proxy=$2 round=$3 pid=${PID_OF[$2]:-} c0 c1 t0 steal rps=- p99=- cpu=- gbps=- req err
  c0=$(cpu_snapshot); t0=$(proc_ticks "$pid")
  if [[ $case == dns ]]; then
    local server=${DNS_SERVER[$proxy]} queries=$WORK/queries.txt
    pid=${PID_OF[$server]}; t0=$(tree_ticks "$pid")
    [[ $proxy != switchyard && $proxy != baseline ]] || queries=$ROOT/benches/peers/dns-queries.txt
    read -r rps req < <(run_dnsperf "${DNS_PORT[$proxy]}" "$queries" || echo "- 0")
    [[ $req == 0 ]] || cpu=$(awk -v d="$(($(tree_ticks "$pid") - t0))" -v hz="$CLK_TCK" -v r="$req" \
      'BEGIN { printf "%.3f", d / hz / r * 100000 }')
  elif [[ $case == rate ]]; then
    read -r p99 req err < <(run_rate "${HTTP_PORT[$proxy]}" || echo "- 0 0")
    ((err == 0)) || NOTES+=("$proxy rate round $round: $err non-200 answers out of $req requests")
    [[ -z $pid || $req == 0 ]] || cpu=$(awk -v d="$(($(proc_ticks "$pid") - t0))" -v hz="$CLK_TCK" -v r="$req" \
      'BEGIN { printf "%.3f", d / hz / r * 100000 }')
  elif [[ $case == iperf ]]; then
    gbps=$(run_iperf "${IPERF_PORT[$proxy]}") || gbps=-
  elif [[ $case == vip ]]; then
    local target=${VIP_TARGET[$proxy]}
    gbps=$(run_iperf "${target##*:}" "${target%:*}") || gbps=-
  else
    local port=${TCP_PORT[$proxy]} extra=()
    [[ $case != http && $case != close ]] || port=${HTTP_PORT[$proxy]}
    [[ $case != vhost ]] || port=${VHOST_PORT[$proxy]}
    # a new connection per request: every request opens (and closes) a client connection
    [[ $case != close && $case != tcp-close ]] || extra=(-H 'Connection: close')
    read -r rps p99 req err < <(run_wrk "$port" "${extra[@]}" || echo "- - 0 0")
    ((err == 0)) || NOTES+=("$proxy $case round $round: $err errors (non-2xx/socket) out of $req requests")
    [[ -z $pid || $req == 0 ]] || cpu=$(awk -v d="$(($(proc_ticks "$pid") - t0))" -v hz="$CLK_TCK" -v r="$req" \
      'BEGIN { printf "%.3f", d / hz / r * 100000 }')
  fi
  c1=$(cpu_snapshot); steal=$(steal_pct "$c0" "$c1")
  # requests (or queries) served per CPU-second of the server: the per-core throughput
  local per_core=-
  [[ $cpu == - ]] || per_core=$(awk -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0 ? 100000 / c : 0) }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$proxy" "$round" "$steal" "$rps" "$p99" "$cpu" "$gbps" "$per_core" >>"$RESULTS"
  log "round $round $proxy $case: req/s=$rps p99=${p99}ms cpu-s/100k=$cpu Gbit/s=$gbps steal=$steal%"
}

warm_up() { # 1 s of wrk on every port, untimed: the first measured run is otherwise ~25 % slow
  local proxy
  if [[ $CANDIDATE != direct ]]; then
    run_dnsperf 15354 "$ROOT/benches/peers/dns-queries.txt" >/dev/null
    for proxy in "${DNS_PEERS[@]}"; do
      local q=$WORK/queries.txt
      [[ $proxy != baseline ]] || q=$ROOT/benches/peers/dns-queries.txt
      run_dnsperf "${DNS_PORT[$proxy]}" "$q" >/dev/null
    done
  fi
  [[ $CASES != dns ]] || return 0
  for proxy in "$CANDIDATE" haproxy; do
    taskset -c 0 wrk -t1 -c50 -d1s "http://127.0.0.1:${HTTP_PORT[$proxy]}/" >/dev/null
    taskset -c 0 wrk -t1 -c50 -d1s "http://127.0.0.1:${TCP_PORT[$proxy]}/" >/dev/null
  done
}

run_rounds() {
  # Each case runs for both servers back to back, first one then the other, and the order flips
  # every round (A B, B A, ...): neighbours' load drifts over minutes, and a pair measured seconds
  # apart sees the same machine.
  local r proxy case order cases
  if [[ -n $CASES ]]; then
    read -ra cases <<<"$CASES"
  else
    cases=(http rate vhost tcp close tcp-close iperf vip)
    [[ $CANDIDATE == direct ]] || cases+=(dns)
  fi
  for ((r = 1; r <= ROUNDS; r++)); do
    order=("$CANDIDATE" haproxy)
    ((r % 2)) || order=(haproxy "$CANDIDATE")
    for case in "${cases[@]}"; do
      if [[ $case == dns ]]; then   # the four DNS servers in turn, the order rotating each round
        local servers=("$CANDIDATE" "${DNS_PEERS[@]}") n=$((${#DNS_PEERS[@]} + 1)) i
        for ((i = 0; i < n; i++)); do measure dns "${servers[(i + r - 1) % n]}" "$r"; done
        continue
      fi
      for proxy in "${order[@]}"; do measure "$case" "$proxy" "$r"; done
    done
    [[ $CANDIDATE == direct || -n $CASES ]] || measure iperf direct "$r"
  done
}

# --- report ------------------------------------------------------------------------------------
stats() { # case proxy column -> "median kept total noisy" (median of kept rounds, else of all)
  awk -F'\t' -v c="$1" -v p="$2" -v k="$3" -v max="$MAX_STEAL" '
    function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    $1 == c && $2 == p && $k != "-" { all[++n] = $k + 0; if ($4 + 0 <= max + 0) ok[++m] = $k + 0 }
    END { if (!n) print "- 0 0 0"; else if (m) print med(ok, m), m, n, 0; else print med(all, n), 0, n, 1 }' "$RESULTS"
}
fmt() { # value noisy printf-format
  [[ $1 == - ]] && { echo "n/a"; return; }
  # shellcheck disable=SC2059  # the format is ours, passed by row()
  printf "$3%s" "$1" "$([[ $2 == 1 ]] && echo ' (noisy)')"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

row() { # case-label case column metric format
  local a h av an ak at hv hn hk ht dv dn dk dt direct="–" vs_direct="–" kept_direct=""
  read -r av ak at an <<<"$(stats "$2" "$CANDIDATE" "$3")"
  read -r hv hk ht hn <<<"$(stats "$2" haproxy "$3")"
  a=$(fmt "$av" "$an" "$5"); h=$(fmt "$hv" "$hn" "$5")
  if [[ $2 == iperf && $CANDIDATE != direct ]]; then
    read -r dv dk dt dn <<<"$(stats iperf direct "$3")"
    direct=$(fmt "$dv" "$dn" "$5"); vs_direct=$(ratio "$av" "$dv")
    kept_direct=", direct $dk/$dt"
  fi
  echo "| $1 | $4 | $a | $h | $(ratio "$av" "$hv") | $direct | $vs_direct | $ak/$at, $hk/$ht$kept_direct |"
}

report() {
  local commit total kept
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
  [[ -z $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] || commit="$commit (dirty tree)"
  total=$(wc -l <"$RESULTS")
  kept=$(awk -F'\t' -v max="$MAX_STEAL" '$4 + 0 <= max + 0' "$RESULTS" | wc -l)
  echo "## $CANDIDATE vs HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }') and unbound $(unbound -V | awk 'NR == 1 { print $2 }') — loopback, pinned"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel: $(uname -r), nproc: $(nproc), commit: $commit"
  echo "- proxies and DNS servers on core 1 (1 worker/thread); wrk -t1 -c50 -d${DURATION}s, iperf3 -t $IPERF_TIME, dnsperf -l $DURATION (100 names, A); nginx + iperf3 server + load generators on core 0"
  echo "- the peer column is HAProxy for proxying rows, unbound (auth-zone) for dns rows"
  echo "- rounds: $ROUNDS; each case runs for both servers back to back, A B then B A; medians over rounds with CPU steal <= $MAX_STEAL%:" \
    "discarded $((total - kept)) of $total runs; \"(noisy)\" = every round discarded, median of all"
  echo
  echo "| case | metric | $CANDIDATE | peer | $CANDIDATE/peer | direct | $CANDIDATE/direct | kept rounds ($CANDIDATE, peer) |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  row "http keep-alive" http 5 "req/s" "%.0f"
  row "http keep-alive" http 6 "p99 ms" "%.2f"
  row "http keep-alive" http 7 "CPU-s / 100k req" "%.3f"
  row "http keep-alive" http 9 "req per proxy CPU-s" "%.0f"
  row "http at $RATE req/s offered" rate 6 "p99 ms" "%.2f"
  row "http at $RATE req/s offered" rate 7 "CPU-s / 100k req" "%.3f"
  row "http vhost listener" vhost 5 "req/s" "%.0f"
  row "http vhost listener" vhost 6 "p99 ms" "%.2f"
  row "http vhost listener" vhost 7 "CPU-s / 100k req" "%.3f"
  row "http vhost listener" vhost 9 "req per proxy CPU-s" "%.0f"
  row "tcp-mode http" tcp 5 "req/s" "%.0f"
  row "tcp-mode http" tcp 6 "p99 ms" "%.2f"
  row "tcp-mode http" tcp 7 "CPU-s / 100k req" "%.3f"
  row "tcp-mode http" tcp 9 "req per proxy CPU-s" "%.0f"
  row "http, new connection per request" close 5 "conn/s" "%.0f"
  row "http, new connection per request" close 6 "p99 ms" "%.2f"
  row "http, new connection per request" close 7 "CPU-s / 100k conn" "%.3f"
  row "http, new connection per request" close 9 "conn per proxy CPU-s" "%.0f"
  row "tcp, new connection per request" tcp-close 5 "conn/s" "%.0f"
  row "tcp, new connection per request" tcp-close 6 "p99 ms" "%.2f"
  row "tcp, new connection per request" tcp-close 7 "CPU-s / 100k conn" "%.3f"
  row "tcp, new connection per request" tcp-close 9 "conn per proxy CPU-s" "%.0f"
  row "iperf tcp" iperf 8 "Gbit/s" "%.2f"
  row "iperf via VIP" vip 8 "Gbit/s" "%.2f"
  if ((${#NOTES[@]})); then echo; printf -- '- warning: %s\n' "${NOTES[@]}"; fi
}

dns_row() { # server label
  local qv qk qt qn cv ck ct cn kv _k _t _n
  read -r qv qk qt qn <<<"$(stats dns "$1" 5)"
  read -r cv ck ct cn <<<"$(stats dns "$1" 7)"
  read -r kv _k _t _n <<<"$(stats dns knot 7)"
  echo "| $2 | $(fmt "$qv" "$qn" "%.0f") | $(fmt "$cv" "$cn" "%.3f") | $(ratio "$cv" "$kv") | $ck/$ct |"
}

report_dns() {
  grep -q '^dns' "$RESULTS" || return 0
  echo
  echo "### DNS, one serving thread each on core 1, dnsperf -l $DURATION on core 0 (100 names, A)"
  echo
  echo "- servers in turn, the order rotating each round; medians over rounds with steal <= $MAX_STEAL%"
  [[ $REPIN == 1 ]] || echo "- REPIN=0: each server's own thread affinity kept (Knot's UDP worker on core 0, beside dnsperf)"
  echo
  echo "| server | queries/s | CPU-s / 100k queries | CPU / Knot's | kept rounds |"
  echo "|---|---:|---:|---:|---|"
  dns_row "$CANDIDATE" "$CANDIDATE ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))"
  dns_row knot "Knot DNS $(knotd -V 2>/dev/null | awk '{ print $NF }')"
  dns_row nsd "NSD $(nsd -v 2>&1 | awk 'NR == 1 { print $3 }')"
  dns_row unbound "unbound $(unbound -V | awk 'NR == 1 { print $2 }')"
  [[ -z $BASELINE_BIN ]] || dns_row baseline "baseline: $("$BASELINE_BIN" --version 2>/dev/null)"
}

main() {
  cd "$ROOT"
  CANDIDATE=switchyard
  [[ $SKIP_SWITCHYARD != 1 ]] || CANDIDATE=direct
  install_deps
  prepare_configs
  start_servers
  log "benchmarking $CANDIDATE vs haproxy: $ROUNDS rounds"
  warm_up
  run_rounds
  local table
  if [[ $CASES == dns ]]; then table=$(report_dns); else table=$(report; report_dns); fi
  printf '%s\n' "$table"
  [[ -z $OUT ]] || printf '%s\n' "$table" >"$OUT"
}

main "$@"
