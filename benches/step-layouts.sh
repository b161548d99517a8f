#!/usr/bin/env bash
# step-layouts.sh - the pure L4 step bench (benches/l4_step.rs) in three code layouts, run in
# turn, because one layout can sit on a cliff the others miss (in some layouts the batched
# step ran 30-35% slower, stalled on stack round trips): a change is only faster if it is
# faster in all three.
#
#   step-layouts.sh [FILTER] [ROUNDS]
#
# Builds the bench as `cargo bench --no-default-features --features l4` with 1, 4 (the release
# profile's) and 16 codegen units, each in its own target dir under $LAYOUT_DIR (default
# target/step-layouts), then runs the three binaries in turn ROUNDS times (default 2) with the
# criterion FILTER (default 'nat_udp_in_batch32|nat_udp_out_batch32|fullnat_tcp_in_batch32'),
# each run under an exclusive hold (flock) of the file $BENCH_LOCK if it is set, so that runs
# on a shared machine can take turns. Prints one line per run: layout, round,
# case, median Mpps. Run it from the repository root.
set -euo pipefail

filter=${1:-'nat_udp_in_batch32|nat_udp_out_batch32|fullnat_tcp_in_batch32'}
rounds=${2:-2}
dir=${LAYOUT_DIR:-target/step-layouts}
lock=${BENCH_LOCK:-}
units=(1 4 16)

bins=()
for u in "${units[@]}"; do
    echo "building with $u codegen unit(s)" >&2
    mkdir -p "$dir"
    log=$dir/build-cgu$u.log
    if ! CARGO_PROFILE_BENCH_CODEGEN_UNITS=$u CARGO_TARGET_DIR="$dir/cgu$u" \
        cargo bench --no-default-features --features l4 --bench l4_step --no-run > "$log" 2>&1; then
        tail -20 "$log" >&2
        exit 1
    fi
    bin=$(sed -n 's/.*Executable .*(\(.*\))$/\1/p' "$log")
    [ -x "$bin" ] || { echo "no bench binary for $u codegen units (see $log)" >&2; exit 1; }
    bins+=("$bin")
done

run() {
    if [ -n "$lock" ] && command -v flock > /dev/null; then flock -x "$lock" "$@"; else "$@"; fi
}
for r in $(seq "$rounds"); do
    for i in "${!units[@]}"; do
        run "${bins[$i]}" --bench --noplot "$filter" 2>&1 |
            awk -v u="${units[$i]}" -v r="$r" '
                /^l4_step/ { c = $1; sub(/.*\//, "", c) }
                /thrpt:  \[[0-9]/ { printf "cgu%-3s round %s  %-32s %s Mpps\n", u, r, c, $4 }'
    done
done
