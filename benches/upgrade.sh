#!/usr/bin/env bash
# benches/upgrade.sh — connections refused and requests failed during zero-downtime binary
# upgrades under load.
#
# Starts nginx (backend, 127.0.0.1:18080, ../shared/peers/nginx.conf) and switchyard
# (benches/peers/switchyard.toml plus an upgrade socket: HTTP :18091, vhost :18093). For each of
# UPGRADES rounds it runs wrk with a new connection per request (`Connection: close`, the case where
# a refused connection would show) against the service port for DURATION seconds and, halfway
# through, starts a new switchyard with `run --upgrade`; the old one drains and exits. It prints
# wrk's requests, non-2xx answers and socket errors (connect, read, write, timeout) per round.
# Traffic goes to 127.0.0.1 only; every process it starts is stopped on exit (by PID).
# Installs nginx and wrk from Debian if missing.
#
# Env: UPGRADES=3 DURATION=6 WORKERS=1 SWITCHYARD_BIN=target/release/switchyard PEERS_DIR=../shared/peers
set -euo pipefail

UPGRADES=${UPGRADES:-3} DURATION=${DURATION:-6}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || dirname "$HERE")
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
WORK=$(mktemp -d /tmp/switchyard-upgrade.XXXXXX)
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

export PATH=$PATH:/usr/sbin:/sbin
for tool in nginx wrk; do
  command -v "$tool" >/dev/null || apt-get -qq install -y --no-install-recommends "$tool" >/dev/null
done
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

sed "s#/tmp/peers#$WORK#g" "$PEERS_DIR/nginx.conf" >"$WORK/nginx.conf"
mkdir -p "$WORK"/nginx/{tmp_body,tmp_proxy,tmp_fcgi,tmp_uwsgi,tmp_scgi}
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" &
PIDS+=($!)
cp "$ROOT/benches/peers/apps.json" "$WORK/apps.json"
sed -e 's/^\[runtime\]$/[runtime]\nupgrade_socket = "upgrade.sock"\nconfig_watch_interval = "0s"/' \
  -e 's/^level = "warn"/level = "info"/' -e "s/^workers = 1\$/workers = ${WORKERS:-1}/" \
  "$ROOT/benches/peers/switchyard.toml" >"$WORK/switchyard.toml"
"$BIN" --config "$WORK/switchyard.toml" 2>>"$WORK/switchyard.log" &
PIDS+=($!)
current=$!

ready() { curl -fsS -o /dev/null "http://127.0.0.1:19090/readyz" 2>/dev/null; }
for _ in $(seq 100); do ready && break; sleep 0.1; done
ready || { echo "switchyard did not become ready" >&2; cat "$WORK/switchyard.log" >&2; exit 1; }
for _ in $(seq 100); do [[ -S $WORK/upgrade.sock ]] && break; sleep 0.1; done

echo "| round | requests | non-2xx | connect errors | read errors | write errors | timeouts |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$UPGRADES"); do
  wrk -t1 -c20 -d"${DURATION}s" -H "Connection: close" http://127.0.0.1:18091/ >"$WORK/wrk.txt" &
  wrk_pid=$!
  sleep "$((DURATION / 2))"
  "$BIN" run --upgrade --config "$WORK/switchyard.toml" 2>>"$WORK/switchyard.log" &
  next=$!
  PIDS+=($next)
  wait "$current" || { echo "old process exited non-zero" >&2; exit 1; }
  current=$next
  wait "$wrk_pid"
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.txt")
  read -r c r w t < <(awk '/Socket errors/ {gsub(",", ""); print $4, $6, $8, $10}' "$WORK/wrk.txt") || true
  echo "| $round | $requests | ${non2xx:-0} | ${c:-0} | ${r:-0} | ${w:-0} | ${t:-0} |"
done
