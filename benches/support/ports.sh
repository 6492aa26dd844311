# benches/support/ports.sh — ports for benchmark scripts that run while other sessions run theirs
# (sourced). Fixed ports collide: a second run's servers fail to bind, or — worse — the script
# measures whoever holds the port. So a script takes free ports at start and, once a server is
# up, checks that the listener on its port is that server's own socket.
#
#   free_ports N          N distinct ports on 127.0.0.1 that nothing is bound to now (not even
#                         in TIME_WAIT), below the kernel's ephemeral range (which clients' own
#                         connections use), chosen at random so that scripts started together
#                         do not pick alike. PORT_BASE=P takes P, P+1, ... instead, each checked.
#   wait_listener PID PORT [SECONDS]
#                         waits (30 s by default) until PORT listens on 127.0.0.1 and the
#                         listening socket is one of PID's open files; exits the script otherwise.

free_ports() {
  python3 - "$1" "${PORT_BASE:-}" <<'PY'
import random, socket, sys
n, base = int(sys.argv[1]), sys.argv[2]
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
def free(port):
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.bind((addr, port))  # no SO_REUSEADDR: a port in TIME_WAIT is not free either
        except OSError:
            return False
        finally:
            s.close()
    return True
if base:
    candidates = range(int(base), 65536)
else:
    candidates = random.sample(range(20000, max(low, 20000 + 4 * n)), max(low, 20000 + 4 * n) - 20000)
got = []
for p in candidates:
    if free(p):
        got.append(p)
        if len(got) == n:
            break
if len(got) < n:
    sys.exit(f"only {len(got)} free ports found, {n} wanted")
print(" ".join(map(str, got)))
PY
}

# The inode of the socket listening on 127.0.0.1:PORT (or the wildcard), if any.
listener_inode() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v a="0100007F:$hex" -v w="00000000:$hex" '($2 == a || $2 == w) && $4 == "0A" { print $10; exit }' /proc/net/tcp
}

wait_listener() {
  local pid=$1 port=$2 deadline=$((SECONDS + ${3:-30})) inode
  while :; do
    inode=$(listener_inode "$port")
    if [[ -n $inode ]]; then
      if find /proc/"$pid"/fd -lname "socket:\[$inode\]" 2>/dev/null | grep -q .; then
        return 0
      fi
      # Listening, but not by PID: another process holds the port (or PID is still starting
      # and someone else got there first). Give PID its chance, then refuse to measure.
    fi
    kill -0 "$pid" 2>/dev/null || { echo "process $pid (for port $port) is gone" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "port $port: not listening, or not by process $pid" >&2; exit 1; }
    sleep 0.1
  done
}
