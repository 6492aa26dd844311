#!/usr/bin/env bash
# Interleaved rounds of two `scale` bench binaries (benches/scale.rs), for the figures of one
# instance at 10,000 and 50,000 apps: `A=path/to/scale-old B=path/to/scale-new ROUNDS=3
# bash benches/scale_ab.sh`. Each round runs A then B (then B then A on the next round) for
# every case; the lines each run prints go to stdout, prefixed with the round, binary and case.
set -euo pipefail
: "${A:?path of the baseline bench binary}" "${B:?path of the bench binary under test}"
ROUNDS=${ROUNDS:-3}
CASES=${CASES:-"10000:events:20 50000:events:40 10000:model:0 50000:model:0"}
for round in $(seq 1 "$ROUNDS"); do
    order="A B"
    if ((round % 2 == 0)); then order="B A"; fi
    for case in $CASES; do
        IFS=: read -r apps mode events <<<"$case"
        for which in $order; do
            bin=${!which}
            SCALE_APPS=$apps SCALE_EVENTS=$events timeout 900 "$bin" "$mode" 2>&1 |
                grep -E "first table|event -> route|other threads|one-event compile|compile median|resident|heap held|table hash" |
                sed "s/^/round=$round bin=$which apps=$apps mode=$mode: /"
        done
    done
done
