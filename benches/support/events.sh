# benches/support/events.sh — callgrind's simulated events per request (sourced by callgrind.sh
# and h2_haproxy_callgrind.sh when CG_OPTS asks valgrind to simulate caches or branches).
#
#   cg_events OUT >FILE        the `events:` and `summary:` lines of a callgrind output file
#   per_event FILE1 FILE2 N    each event's count per request: (FILE2 - FILE1) / N, FILE1 and
#                              FILE2 written by cg_events for runs of N1 and N2 = N1 + N
cg_events() { grep -m1 '^events:' "$1"; grep -m1 '^summary:' "$1"; }
per_event() {
  paste -d' ' <(sed -n 2p "$1") <(sed -n 2p "$2") | awk -v names="$(sed -n 1p "$1")" -v n="$3" '
    { split(names, e, " "); k = (NF - 2) / 2; line = "per request:"
      for (i = 2; i <= k + 1; i++) line = line sprintf(" %s %.0f", e[i], ($(i + k + 1) - $i) / n)
      print line }'
}
