#!/usr/bin/env bash
# benches/tls.sh — TLS 1.3: switchyard's HTTPS vhost listener against HAProxy 2.6
# (`bind ... ssl crt`), one worker each, pinned to core 1, with the same certificate (KEY=ec:
# ECDSA P-256, KEY=rsa: RSA-2048); nginx (the backend) and the clients pinned to core 0.
# Per round, each server in turn (the order flipping every round):
#   - sequential full handshakes/s: `openssl s_time -new` (one GET each; s_time sends no SNI, so
#     both answer with their default certificate);
#   - sequential resumed handshakes/s: `openssl s_time -reuse` (session tickets);
#   - concurrent full handshakes: wrk -t1 -c50 with `Connection: close` over HTTPS (a new
#     connection and a full handshake per request), connections/s, p99 and the server's CPU
#     time per handshake (scheduler run time, /proc/PID/task/*/schedstat);
#   - bulk HTTPS: wrk -t1 -c10 keep-alive fetching a 1 MiB response, MB/s and CPU s per GB.
# Rounds with CPU steal above MAX_STEAL are dropped; medians of the kept rounds, and the median
# of the per-round ratios. Loopback only; stops what it started, by PID.
# Env: ROUNDS=3 DURATION=5 MAX_STEAL=2 KEY=ec SWITCHYARD_BIN=target/release/switchyard
set -euo pipefail
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} MAX_STEAL=${MAX_STEAL:-2} KEY=${KEY:-ec}
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
WORK=$(mktemp -d /tmp/switchyard-tls.XXXXXX)
PIDS=()
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export PATH=$PATH:/usr/sbin:/sbin
for cmd in haproxy nginx openssl; do
  command -v "$cmd" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends haproxy nginx openssl >&2
done
[[ -x $SWITCHYARD_BIN ]] || (cd "$ROOT" && cargo build --release >&2)

case $KEY in
  ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa) newkey=(-newkey rsa:2048) ;;
  *) echo "KEY is ec or rsa" >&2; exit 2 ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=bench.local \
  -addext subjectAltName=DNS:bench.local -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
head -c 1048576 /dev/zero >"$WORK/big.bin"
chmod 0755 "$WORK"; chmod 0644 "$WORK/big.bin"   # nginx's worker runs as another user
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
frontend https
    bind 127.0.0.1:18443 ssl crt $WORK/certs/bench.pem alpn http/1.1
    default_backend nginx
backend nginx
    server n1 127.0.0.1:18480
CFG
cat >"$WORK/nginx.conf" <<CFG
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18480; location / { return 200 "ok\n"; }
  location = /big { alias $WORK/big.bin; } } }
CFG
cat >"$WORK/apps.json" <<JSON
{"apps":[{"id":"/bench/https","labels":{"HAPROXY_0_VHOST":"bench.local"},"portDefinitions":[{"port":0,"protocol":"tcp"}],
  "tasks":[{"id":"t1","appId":"/bench/https","host":"127.0.0.1","ports":[18480],"state":"TASK_RUNNING"}]}]}
JSON
cat >"$WORK/switchyard.toml" <<TOML
[discovery]
file = "apps.json"
[proxy]
group = "*"
bind = "127.0.0.1"
[https]
listen = ["127.0.0.1:18444"]
certs = "certs"
[admin]
listen = "127.0.0.1:19092"
[runtime]
workers = 1
[log]
level = "warn"
TOML

start() { local name=$1 core=$2; shift 2; taskset -c "$core" "$@" >"$WORK/$name.log" 2>&1 & PIDS+=("$!"); }
start nginx 0 nginx -c "$WORK/nginx.conf" -p "$WORK"
start haproxy 1 haproxy -db -f "$WORK/haproxy.cfg"
start switchyard 1 "$SWITCHYARD_BIN" --config "$WORK/switchyard.toml"
for port in 18443 18444; do
  for _ in $(seq 100); do
    curl -fsk --resolve "bench.local:$port:127.0.0.1" "https://bench.local:$port/" >/dev/null 2>&1 && break
    sleep 0.2
  done
done

steal() { local _c u n s i w q sq st _r; read -r _c u n s i w q sq st _r </proc/stat; echo "$((u + n + s + i + w + q + sq + st)) $st"; }
steal_pct() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1]; printf "%.2f", (d > 0 ? 100 * (y[2] - x[2]) / d : 0) }'; }
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f", s }'; }
s_time() { # port -new|-reuse -> handshakes/s
  taskset -c 0 openssl s_time -connect "127.0.0.1:$1" "$2" -tls1_3 -time "$DURATION" -www / 2>/dev/null |
    awk '/connections in .* real seconds/ { print $1 / $4; exit }'
}
wrk_run() { # port pid path extra-args... -> "per_s p99_ms cpu_us_per_request bytes_per_s"
  local port=$1 pid=$2 path=$3 c0 c1 out; shift 3
  c0=$(cpu_ns "$pid")
  out=$(taskset -c 0 wrk -t1 -d"${DURATION}s" --latency -H 'Host: bench.local' "$@" "https://127.0.0.1:$port$path")
  ! grep -qE "Non-2xx|Socket errors" <<<"$out" || log "port $port $path: $(grep -E "Non-2xx|Socket errors" <<<"$out" | tr -s ' ')"
  c1=$(cpu_ns "$pid")
  awk -v d=$((c1 - c0)) 'function ms(v, u) { u = v; sub(/^[0-9.]+/, "", u); v += 0
      return u == "us" ? v / 1000 : u == "s" ? v * 1000 : v }
    function bytes(v, u) { u = v; sub(/^[0-9.]+/, "", u); v += 0
      return u == "GB" ? v * 2^30 : u == "MB" ? v * 2^20 : u == "KB" ? v * 2^10 : v }
    /Requests\/sec:/ { rps = $2 } $1 == "99%" { p99 = ms($2) } / requests in / { req = $1 }
    /Transfer\/sec:/ { bps = bytes($2) }
    END { printf "%.0f %.2f %.1f %.0f\n", rps, p99, (req ? d / req / 1000 : 0), bps }' <<<"$out"
}
declare -A PORT=([switchyard]=18444 [haproxy]=18443) PID_OF=([switchyard]=${PIDS[2]} [haproxy]=${PIDS[1]})
RESULTS=$WORK/results.tsv
: >"$RESULTS"
measure() { # round server
  local port=${PORT[$2]} pid=${PID_OF[$2]} a b full reuse conc bulk
  a=$(steal)
  full=$(s_time "$port" -new)
  reuse=$(s_time "$port" -reuse)
  conc=$(wrk_run "$port" "$pid" / -c50 -H 'Connection: close')
  bulk=$(wrk_run "$port" "$pid" /big -c10)
  b=$(steal)
  read -r c_rps c_p99 c_cpu _ <<<"$conc"
  read -r _ _ b_cpu b_bps <<<"$bulk"
  local mbps gb_cpu
  mbps=$(awk -v b="$b_bps" 'BEGIN { printf "%.0f", b / 2^20 }')
  # CPU seconds per GiB moved: µs per 1 MiB response × 1024 / 1e6
  gb_cpu=$(awk -v c="$b_cpu" 'BEGIN { printf "%.3f", c * 1024 / 1e6 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$(steal_pct "$a" "$b")" "${full:-0}" "${reuse:-0}" \
    "$c_rps" "$c_p99" "$c_cpu" "$mbps" "$gb_cpu" >>"$RESULTS"
  log "round $1 $2: full $full/s, resumed $reuse/s, concurrent $c_rps/s p99 ${c_p99}ms ${c_cpu}µs CPU each, bulk $mbps MiB/s ${gb_cpu} CPU-s/GiB"
}
for name in switchyard haproxy; do   # warm-up, untimed
  taskset -c 0 wrk -t1 -c50 -d1s -H 'Host: bench.local' -H 'Connection: close' "https://127.0.0.1:${PORT[$name]}/" >/dev/null
done
for ((r = 1; r <= ROUNDS; r++)); do
  order=(switchyard haproxy)
  ((r % 2)) || order=(haproxy switchyard)
  for name in "${order[@]}"; do measure "$r" "$name"; done
done

echo "## TLS 1.3 ($KEY certificate): switchyard vs HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit: $(git -C "$ROOT" rev-parse --short HEAD), $ROUNDS rounds of ${DURATION}s per figure; medians of rounds with steal <= $MAX_STEAL% (all rounds if none), ratio = median of per-round ratios"
echo
echo "| figure | switchyard | haproxy | ratio |"
echo "|---|---:|---:|---:|"
awk -F'\t' -v max="$MAX_STEAL" '
  function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  { v[$2, $1, 4] = $4; v[$2, $1, 5] = $5; v[$2, $1, 6] = $6; v[$2, $1, 7] = $7; v[$2, $1, 8] = $8; v[$2, $1, 9] = $9; v[$2, $1, 10] = $10
    if ($3 + 0 <= max + 0) ok[$1] = ok[$1] + 1; all[$1] = 1 }
  END {
    kept = 0; for (r in ok) if (ok[r] == 2) kept++
    split("4 5 6 7 8 9 10", cols, " ")
    split("sequential full handshakes/s|sequential resumed handshakes/s|concurrent full handshakes/s (wrk -c50)|concurrent handshakes p99 ms|CPU µs per concurrent handshake|bulk MiB/s (1 MiB responses, wrk -c10)|CPU s per GiB bulk", names, "|")
    for (c = 1; c <= 7; c++) {
      k = cols[c]; ns = 0; nh = 0; nr = 0
      for (r in all) {
        if (kept && ok[r] != 2) continue
        s[++ns] = v["switchyard", r, k]; h[++nh] = v["haproxy", r, k]
        if (v["haproxy", r, k] > 0) x[++nr] = v["switchyard", r, k] / v["haproxy", r, k]
      }
      printf "| %s | %s | %s | %s |\n", names[c], med(s, ns), med(h, nh), nr ? sprintf("%.2f", med(x, nr)) : "n/a"
    }
  }' "$RESULTS"
