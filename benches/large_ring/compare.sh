#!/usr/bin/env bash
# Runs one command under each allocator (LD_PRELOAD: strata, glibc, mimalloc,
# jemalloc, tcmalloc where installed), REPS rounds in rotating order, and prints per
# allocator the median of what the command prints (its own timing), of the elapsed
# wall time and of the peak RSS (/usr/bin/time -v).
# Usage: benches/large_ring/compare.sh REPS COMMAND [ARGS...]
# e.g.   benches/large_ring/compare.sh 5 "$BIN/malloc_large" 5000
set -euo pipefail
REPS="$1"
shift
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
LIB=/usr/lib/x86_64-linux-gnu
STRATA="${STRATA_LIB:-$ROOT/target/c-abi/release/libstrata.so}"
names=(strata glibc)
libs=("$STRATA" "")
for extra in mimalloc:libmimalloc.so.2 jemalloc:libjemalloc.so.2 tcmalloc:libtcmalloc_minimal.so.4; do
    if [ -e "$LIB/${extra#*:}" ]; then
        names+=("${extra%%:*}")
        libs+=("$LIB/${extra#*:}")
    fi
done
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
n=${#names[@]}
for ((r = 0; r < REPS; r++)); do
    for ((j = 0; j < n; j++)); do
        i=$(((j + r) % n))
        env ${libs[$i]:+LD_PRELOAD=${libs[$i]}} /usr/bin/time -v -o "$OUT/tv" "$@" >"$OUT/out"
        own=$(tail -1 "$OUT/out")
        rss=$(awk '/Maximum resident/ { print $6 }' "$OUT/tv")
        wall=$(awk '/Elapsed \(wall/ { n = split($8, t, ":"); s = 0; for (k = 1; k <= n; k++) s = s * 60 + t[k]; print s }' "$OUT/tv")
        sys=$(awk '/System time/ { print $4 }' "$OUT/tv")
        echo "${names[$i]} $own $wall $sys $rss" >>"$OUT/results"
    done
done
awk '
    function med(s,   n, x, i, j, t) {
        n = split(substr(s, 2), x, " ")
        for (i = 2; i <= n; i++) { t = x[i]; j = i - 1; while (j > 0 && x[j] + 0 > t + 0) { x[j + 1] = x[j]; j-- } x[j + 1] = t }
        return (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
    }
    { o[$1] = o[$1] " " $2; w[$1] = w[$1] " " $3; s[$1] = s[$1] " " $4; m[$1] = m[$1] " " $5 }
    END {
        printf "%-10s %10s %8s %8s %12s\n", "allocator", "printed", "wall s", "sys s", "peak RSS KiB"
        for (a in o) printf "%-10s %10s %8.2f %8.2f %12d\n", a, med(o[a]), med(w[a]), med(s[a]), med(m[a])
    }' "$OUT/results" | sort -k1,1
echo "(medians of $REPS rounds: $*)"
