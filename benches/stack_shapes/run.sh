#!/usr/bin/env bash
# Builds shapes.c and runs the three free-store shapes interleaved, REPS times
# each, on the c_ring workload (1,024 blocks of 8-512 B) and on a ring of 16
# blocks of one size; prints the median CPU ns per pair of each. See shapes.c.
#   bash benches/stack_shapes/run.sh [REPS] [PAIRS]
set -euo pipefail
REPS="${1:-7}"
PAIRS="${2:-20000000}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cc -O2 -o "$OUT/shapes" "$(dirname "$0")/shapes.c"
for w in "1024 8 512" "16 64 64"; do
    for r in $(seq "$REPS"); do
        for s in index list packed; do
            # shellcheck disable=SC2086
            "$OUT/shapes" "$s" "$PAIRS" $w >>"$OUT/runs"
        done
    done
    echo "ring $w (RING MIN MAX), medians of $REPS:"
    for s in index list packed; do
        grep "^$s " "$OUT/runs" | awk '{print $2}' | sort -n |
            awk -v s="$s" '{v[NR]=$1} END {printf "  %-7s %.2f ns/pair\n", s, v[int((NR+1)/2)]}'
    done
    : >"$OUT/runs"
done
