#!/usr/bin/env bash
# Large-block churn (256 KiB-1 MiB) under LD_PRELOAD: strata, glibc, and mimalloc /
# jemalloc, tcmalloc where their Debian packages are installed. Runs the allocators in turn,
# REPS rounds (order reversed every other round), and prints the median ns per step
# and its ratio to glibc. THREADS threads churn rings of their own at once.
# Usage: benches/large_ring/run.sh [REPS] [STEPS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS="${1:-5}"
STEPS="${2:-200000}"
THREADS="${3:-1}"
cargo build --release --manifest-path capi/Cargo.toml --target-dir target/c-abi >&2
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cc -O2 -pthread -o "$OUT/large_ring" benches/large_ring/large_ring.c
LIB=/usr/lib/x86_64-linux-gnu
names=(strata glibc)
libs=("$PWD/target/c-abi/release/libstrata.so" "")
for extra in mimalloc:libmimalloc.so.2 jemalloc:libjemalloc.so.2 tcmalloc:libtcmalloc_minimal.so.4; do
    if [ -e "$LIB/${extra#*:}" ]; then
        names+=("${extra%%:*}")
        libs+=("$LIB/${extra#*:}")
    fi
done
for ((r = 0; r < REPS; r++)); do
    order=("${!names[@]}")
    if ((r % 2)); then
        order=($(printf '%s\n' "${order[@]}" | tac))
    fi
    for i in "${order[@]}"; do
        ns=$(env ${libs[$i]:+LD_PRELOAD=${libs[$i]}} "$OUT/large_ring" "$STEPS" $((256 << 10)) $((1 << 20)) "$THREADS")
        echo "${names[$i]} $ns" >>"$OUT/results"
    done
done
awk '
    { v[$1] = v[$1] " " $2 }
    END {
        for (a in v) {
            n = split(substr(v[a], 2), x, " ")
            # insertion sort, then the median
            for (i = 2; i <= n; i++) { t = x[i]; j = i - 1; while (j > 0 && x[j] > t) { x[j + 1] = x[j]; j-- } x[j + 1] = t }
            med[a] = (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
        }
        printf "%-10s %12s %10s\n", "allocator", "ns/step", "vs glibc"
        for (a in med) printf "%-10s %12.1f %9.2fx\n", a, med[a], med["glibc"] / med[a]
    }' "$OUT/results" | sort -k1,1
echo "(medians of $REPS rounds of $STEPS steps a thread, $THREADS threads; a ring of 64 blocks of 256 KiB-1 MiB each; vs glibc: above 1 is faster)"
