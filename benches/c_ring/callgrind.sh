#!/usr/bin/env bash
# Instructions per C malloc+free pair under LD_PRELOAD, counted by callgrind:
# ring.c frees and reallocates slots of a ring of 1,024 live blocks of 8-512 B
# (its defaults; `ring N RING MIN MAX` sets the ring and the sizes).
# Both calls of measured_loop are counted (100k warm-up + N pairs); the loop's own
# code is about 16 instructions per pair. Usage: benches/c_ring/callgrind.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-300000}"
cargo build --release --manifest-path capi/Cargo.toml --target-dir target/c-abi >&2
# The library without the `harden` feature (plain free-list links): its cost.
cargo build --release --manifest-path capi/Cargo.toml --no-default-features \
    --target-dir target/c-abi-no-harden >&2
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cc -O2 -o "$OUT/ring" benches/c_ring/ring.c
MIMALLOC=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2
printf '%-10s %12s\n' allocator 'Ir/pair'
for a in strata no-harden glibc mimalloc; do
    case $a in
        strata) pre=$PWD/target/c-abi/release/libstrata.so ;;
        no-harden) pre=$PWD/target/c-abi-no-harden/release/libstrata.so ;;
        glibc) pre= ;;
        mimalloc) [ -e "$MIMALLOC" ] || continue; pre=$MIMALLOC ;;
    esac
    env ${pre:+LD_PRELOAD=$pre} valgrind --tool=callgrind --toggle-collect=measured_loop \
        --callgrind-out-file="$OUT/cg.$a" "$OUT/ring" "$N" >/dev/null 2>&1
    total=$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$OUT/cg.$a" | head -n1)
    awk -v t="$total" -v n="$N" -v a="$a" 'BEGIN { printf "%-10s %12.1f\n", a, t / (n + 100000) }'
done
