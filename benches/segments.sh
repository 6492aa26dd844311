#!/usr/bin/env bash
# benches/segments.sh — TCP segments per proxied connection, switchyard (TCP mode) against
# HAProxy 2.6 (`mode tcp`), counted exactly: each server runs in a private network namespace
# (`unshare -n`, needs root) with its own loopback, nginx behind it, and a sequential client
# making N new connections (`Connection: close`, one request each); the namespace's TCP
# counters (/proc/net/snmp, /proc/net/netstat) are read before and after, so no other traffic
# on the machine is counted. What a connection costs the kernel follows its segments.
#   usage: N=2000 bash benches/segments.sh BINARY [BINARY ...]
# Everything it starts lives in the namespace and is stopped (by PID) before it ends.
set -euo pipefail
N=${N:-2000}
(($# > 0)) || { echo "usage: bash benches/segments.sh BINARY [BINARY ...]" >&2; exit 2; }
export PATH=$PATH:/usr/sbin:/sbin
WORK=$(mktemp -d /tmp/switchyard-segments.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"/nginx/{tmp_body,tmp_proxy,tmp_fcgi,tmp_uwsgi,tmp_scgi}
cat >"$WORK/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn; events { worker_connections 1024; }
http { access_log off; client_body_temp_path $WORK/nginx/tmp_body; proxy_temp_path $WORK/nginx/tmp_proxy;
  fastcgi_temp_path $WORK/nginx/tmp_fcgi; uwsgi_temp_path $WORK/nginx/tmp_uwsgi; scgi_temp_path $WORK/nginx/tmp_scgi;
  server { listen 127.0.0.1:18080; location / { default_type text/plain; return 200 "ok\n"; } } }
CONF
cat >"$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe_tcp
    mode tcp
    bind 127.0.0.1:18082
    default_backend be_tcp
backend be_tcp
    mode tcp
    server nginx1 127.0.0.1:18080
CONF
cat >"$WORK/apps.json" <<JSON
{"apps":[{"id":"/bench/tcp","labels":{"HAPROXY_GROUP":"external"},"portDefinitions":[{"port":18092,"protocol":"tcp"}],
  "tasks":[{"id":"bench_tcp.t1","appId":"/bench/tcp","host":"127.0.0.1","ports":[18080],"state":"TASK_RUNNING"}]}]}
JSON
cat >"$WORK/switchyard.toml" <<TOML
[discovery]
file = "$WORK/apps.json"
[proxy]
group = "external"
bind = "127.0.0.1"
[admin]
listen = "127.0.0.1:19090"
[runtime]
workers = 1
[log]
level = "warn"
TOML
cat >"$WORK/client.py" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:64]
    s.close()
PY
cat >"$WORK/inside.sh" <<'SH'
set -euo pipefail
WORK=$1 N=$2 NAME=$3 BIN=${4:-}
ip link set lo up
nginx -c "$WORK/nginx.conf" >/dev/null 2>&1 & NG=$!
if [[ $NAME == haproxy ]]; then haproxy -db -f "$WORK/haproxy.cfg" >/dev/null 2>&1 & P=$!; PORT=18082
else "$BIN" --config "$WORK/switchyard.toml" >/dev/null 2>&1 & P=$!; PORT=18092; fi
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
python3 "$WORK/client.py" "$PORT" 20 # warm-up, and the route is live
snap() { for f in /proc/net/snmp /proc/net/netstat; do
  awk '{ if ($1 in h) { for (i = 2; i <= NF; i++) print h[$1] "." k[$1, i], $i } else { h[$1] = substr($1, 1, length($1) - 1); for (i = 2; i <= NF; i++) k[$1, i] = $i } }' "$f"; done; }
snap | sort >"$WORK/before"
python3 "$WORK/client.py" "$PORT" "$N"
snap | sort >"$WORK/after"
kill "$P" "$NG"; wait 2>/dev/null || true
join "$WORK/before" "$WORK/after" | awk -v n="$N" -v s="$NAME" '
  $1 ~ /^(Tcp\.(InSegs|OutSegs)|TcpExt\.(TCPOrigDataSent|TCPPureAcks|TCPHPAcks))$/ { printf "%s\t%s\t%.2f\n", s, $1, ($3 - $2) / n }'
SH
{
  unshare -n bash "$WORK/inside.sh" "$WORK" "$N" haproxy
  for bin in "$@"; do unshare -n bash "$WORK/inside.sh" "$WORK" "$N" "$(basename "$bin")" "$bin"; done
} >"$WORK/table.tsv"
echo "TCP segments per proxied connection (both of its TCP connections; $N sequential new connections):"
echo
awk -F'\t' '{ v[$1, $2] = $3; if (!($1 in s)) { s[$1] = 1; order[++n] = $1 } if (!($2 in m)) { m[$2] = 1; keys[++k] = $2 } }
  END { printf "| counter |"; for (i = 1; i <= n; i++) printf " %s |", order[i]; printf "\n|---|"; for (i = 1; i <= n; i++) printf "---:|"; printf "\n"
        for (j = 1; j <= k; j++) { printf "| %s |", keys[j]; for (i = 1; i <= n; i++) printf " %s |", v[order[i], keys[j]]; printf "\n" } }' "$WORK/table.tsv"
