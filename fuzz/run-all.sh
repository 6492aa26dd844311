#!/usr/bin/env bash
# Builds every fuzz target and runs each in turn for SECONDS (default 600), seeded from
# fuzz/seeds/<target> and growing fuzz/corpus/<target>; prints, per target, libFuzzer's
# executions and whether it wrote a crash artifact (fuzz/artifacts/<target>/).
#
#   fuzz/run-all.sh [SECONDS] [TARGET...]      (or FUZZ_SECONDS=...; FUZZ_SANITIZER=none)
#
# Targets come from `cargo fuzz list` (fuzz/Cargo.toml), h1_differential included.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz passes nightly-only `-Z`
# flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Not run by CI.
set -uo pipefail
cd "$(dirname "$0")"

seconds=${1:-${FUZZ_SECONDS:-600}}
[ $# -gt 0 ] && shift
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

nice -n 19 cargo fuzz build -s "$sanitizer" || exit 2

mkdir -p logs
summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log="logs/$t.log"
    echo "== $t: ${seconds}s (log: fuzz/$log)"
    start=$SECONDS
    nice -n 19 cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1
    status=$?
    elapsed=$((SECONDS - start))
    # `Done N runs in S second(s)` when time ran out; the last `#N` status line otherwise.
    runs=$(sed -n 's/^Done \([0-9]*\) runs in.*/\1/p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    new=$(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tr '\n' ' ')
    after=$(find "artifacts/$t" -type f | wc -l)
    if [ "$status" -ne 0 ] || [ "$after" -gt "$before" ]; then
        result="CRASH (exit $status) ${new:-see $log}"
        failed=1
    else
        result="no crash"
    fi
    line=$(printf '%-15s %12s runs %6ss  corpus %5s  %s' "$t" "${runs:-?}" "$elapsed" "$corpus" "$result")
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary (${seconds}s per target, sanitizer: $sanitizer)"
printf '%s\n' "${summary[@]}" | tee logs/summary.txt
exit $failed
