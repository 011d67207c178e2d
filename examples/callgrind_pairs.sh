#!/usr/bin/env bash
# Instructions (Ir) per malloc+free pair, counted by callgrind, for strata, the
# system allocator, mimalloc (the system allocator under LD_PRELOAD, if
# libmimalloc is installed) and the bare harness (no-op allocator).
#
#   examples/callgrind_pairs.sh [N]        (N defaults to 1000000)
#
# Only `measured_loop` (and what it calls) is counted, so the 100k-pair
# warm-up, ring set-up and process start-up are excluded. "net" subtracts the
# harness's own Ir per pair (ring bookkeeping, size lookup, one-byte touch).
set -euo pipefail

N="${1:-1000000}"
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
cargo build --release --example pairs >&2
# The same harness without the `harden` feature (plain free-list links), to show
# what the encoding costs.
cargo build --release --example pairs --no-default-features --target-dir target/no-harden >&2
BIN="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
BIN="${BIN:-target}/release/examples/pairs"
BIN_NH=target/no-harden/release/examples/pairs

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# ir LABEL BINARY MODE [ENV...] -> prints total Ir of measured_loop
ir() {
    local label="$1" bin="$2" mode="$3"
    shift 3
    local out="$TMP/callgrind.$label"
    env "$@" valgrind --tool=callgrind --toggle-collect='*measured_loop*' \
        --callgrind-out-file="$out" "$bin" "$mode" "$N" >"$TMP/$label.log" 2>&1 || {
        cat "$TMP/$label.log" >&2
        echo "callgrind run for $label failed" >&2
        exit 1
    }
    local total
    total="$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out" | head -n1)"
    [ -n "$total" ] || total="$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out" | head -n1)"
    [ -n "$total" ] && [ "$total" -gt 0 ] || {
        echo "no instructions collected for $label (toggle-collect did not match?)" >&2
        exit 1
    }
    echo "$total"
}

base="$(ir harness "$BIN" harness)"
rows=("strata $BIN strata" "no-harden $BIN_NH strata" "system $BIN system")
MIMALLOC=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2
if [ -e "$MIMALLOC" ]; then
    rows+=("mimalloc $BIN system LD_PRELOAD=$MIMALLOC")
fi

printf '%-10s %14s %10s %10s\n' allocator "total Ir" "Ir/pair" "net Ir/pair"
printf '%-10s %14s %10s %10s\n' ---------- -------------- ---------- ----------
for row in "${rows[@]}"; do
    # shellcheck disable=SC2086
    set -- $row
    total="$(ir "$@")"
    awk -v l="$1" -v t="$total" -v b="$base" -v n="$N" \
        'BEGIN { printf "%-10s %14d %10.1f %10.1f\n", l, t, t / n, (t - b) / n }'
done
awk -v t="$base" -v n="$N" \
    'BEGIN { printf "%-10s %14d %10.1f %10s\n", "harness", t, t / n, "-" }'
echo "(N = $N pairs after a 100k warm-up; ring of 1024 live blocks, 8-512 B)"
