#!/usr/bin/env bash
# benches/dns.sh — DNS queries/s: switchyard against unbound (authoritative auth-zone), one thread
# each, pinned to core 1, with dnsperf pinned to core 0. Both serve 100 A names of one record
# (unbound: h0..h99.bench.test from ../shared/peers; switchyard: h0..h99.marathon.bench.test from
# benches/peers/dns-apps.json). Rounds interleave A B A B; rounds with CPU steal above MAX_STEAL
# are dropped; prints medians and the ratio. Loopback only; stops what it started, by PID.
# Env: ROUNDS=3 DURATION=8 MAX_STEAL=2 SWITCHYARD_BIN=target/release/switchyard PEERS_DIR OUT
set -euo pipefail
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} MAX_STEAL=${MAX_STEAL:-2} OUT=${OUT:-}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
WORK=$(mktemp -d /tmp/switchyard-dns.XXXXXX)
PIDS=()
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

install_deps() {
  export PATH=$PATH:/usr/sbin:/sbin
  command -v unbound >/dev/null && command -v dnsperf >/dev/null && command -v dig >/dev/null && return
  log "installing unbound dnsperf bind9-dnsutils"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq update >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq install -y --no-install-recommends \
    unbound dnsperf bind9-dnsutils >&2
}

start() { # name core cmd...
  local name=$1 core=$2; shift 2
  taskset -c "$core" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
  log "started $name (pid $!, core $core)"
}

wait_answer() { # port name
  local deadline=$((SECONDS + 30))
  until [[ -n $(dig @127.0.0.1 -p "$1" "$2" A +short +time=1 +tries=1 2>/dev/null) ]]; do
    ((SECONDS < deadline)) || { cat "$WORK"/*.log >&2; die "no answer for $2 on :$1"; }
    sleep 0.2
  done
}

steal() { # prints "total steal" jiffies
  local _c u n s i w q sq st _r; read -r _c u n s i w q sq st _r </proc/stat
  echo "$((u + n + s + i + w + q + sq + st)) $st"
}

run() { # port queries-file -> "qps steal%"
  local a b qps
  a=$(steal)
  qps=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l "$DURATION" 2>/dev/null | awk '/Queries per second/ { print $4 }')
  b=$(steal)
  awk -v a="$a" -v b="$b" -v q="${qps:-0}" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1]
    printf "%.0f %.2f\n", q, (d > 0 ? 100 * (y[2] - x[2]) / d : 0) }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (!NR) print 0; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

main() {
  install_deps
  [[ -x $SWITCHYARD_BIN ]] || (cd "$ROOT" && cargo build --release >&2)
  sed "s#/tmp/peers#$WORK#g" "$PEERS_DIR/unbound.conf" >"$WORK/unbound.conf"
  cp "$PEERS_DIR/bench.test.zone" "$PEERS_DIR/queries.txt" "$WORK/"
  start unbound 1 unbound -d -c "$WORK/unbound.conf"
  start switchyard 1 "$SWITCHYARD_BIN" --config "$ROOT/benches/peers/dns.toml"
  wait_answer 15353 h1.bench.test
  wait_answer 15354 h1.marathon.bench.test
  taskset -c 0 dnsperf -s 127.0.0.1 -p 15354 -d "$ROOT/benches/peers/dns-queries.txt" -l 1 >/dev/null 2>&1
  taskset -c 0 dnsperf -s 127.0.0.1 -p 15353 -d "$WORK/queries.txt" -l 1 >/dev/null 2>&1
  local r sy un kept_sy=() kept_un=() all_sy=() all_un=() q s
  for ((r = 1; r <= ROUNDS; r++)); do
    read -r q s < <(run 15354 "$ROOT/benches/peers/dns-queries.txt"); log "round $r switchyard: $q q/s, steal $s%"
    all_sy+=("$q"); awk -v s="$s" -v m="$MAX_STEAL" 'BEGIN { exit !(s <= m) }' && kept_sy+=("$q")
    read -r q s < <(run 15353 "$WORK/queries.txt"); log "round $r unbound: $q q/s, steal $s%"
    all_un+=("$q"); awk -v s="$s" -v m="$MAX_STEAL" 'BEGIN { exit !(s <= m) }' && kept_un+=("$q")
  done
  ((${#kept_sy[@]})) || kept_sy=("${all_sy[@]}")
  ((${#kept_un[@]})) || kept_un=("${all_un[@]}")
  sy=$(printf '%s\n' "${kept_sy[@]}" | median); un=$(printf '%s\n' "${kept_un[@]}" | median)
  local table
  table=$(cat <<TABLE
## DNS: switchyard vs unbound $(unbound -V | awk 'NR == 1 { print $2 }') (auth-zone) — loopback, one thread each, pinned

- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit: $(git -C "$ROOT" rev-parse --short HEAD), dnsperf -l $DURATION (100 names, A), rounds: $ROUNDS interleaved
- kept rounds (steal <= $MAX_STEAL%): switchyard ${#kept_sy[@]}/$ROUNDS, unbound ${#kept_un[@]}/$ROUNDS

| server | queries/s (median) | ratio to unbound |
|---|---:|---:|
| switchyard | $sy | $(awk -v a="$sy" -v b="$un" 'BEGIN { printf "%.2f", (b ? a / b : 0) }') |
| unbound | $un | 1.00 |
TABLE
)
  printf '%s\n' "$table"
  [[ -z $OUT ]] || printf '%s\n' "$table" >"$OUT"
}
main "$@"
