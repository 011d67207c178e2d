#!/usr/bin/env bash
# Resident memory of small programs under each allocator, from /proc/self/status at
# exit: VmHWM (the peak, what /usr/bin/time -v calls the maximum resident set size),
# RssAnon (heap and the allocator's own data) and RssFile (code and data of the
# loaded libraries), in KiB, medians of 5 runs by VmHWM; then VmHWM against glibc's.
#
# C programs (benches/footprint/footprint.c) under LD_PRELOAD: `first` (one
# malloc), `small` (one thread, ~240 KiB live of 8 B - 2 KiB blocks, 200k
# allocations), `threads` (the same work on 4 short-lived threads, 2 at a time).
# Then the same three as a Rust program (examples/footprint.rs) whose
# #[global_allocator] is strata or System (glibc; mimalloc and jemalloc by
# LD_PRELOAD under System).
#
# Usage: benches/footprint.sh            (STRATA_BASE=/path/libstrata.so adds a
#        row for another build of the C library, e.g. an older commit's;
#        STRATA_ALT=/path/libstrata.so one more, as strata-alt)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --manifest-path capi/Cargo.toml --target-dir target/c-abi >&2
cargo build --release --example footprint >&2
# The allocator's statics are all zero bytes, so they sit in .bss and cost no
# resident page until used (TransferStack invariant 1 in src/transfer.rs).
# One non-zero byte anywhere in a static moves all of it to .data, whose file
# pages are resident (82 KiB for BACKEND): name the statics found there.
if nm target/c-abi/release/libstrata.so | grep -q ' [dD] .*6global7BACKEND'; then
    echo "warning: the allocator's statics are in .data, not .bss: a non-zero default crept in" >&2
fi
nm -S -t d --size-sort -C target/c-abi/release/libstrata.so | awk '$3 ~ /^[dD]$/ && $2 + 0 >= 4096 {
    $1 = ""; print "warning: in .data (resident file pages), bytes and static:" $0 }' >&2
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cc -O2 -pthread -o "$OUT/footprint" benches/footprint/footprint.c
L=/usr/lib/x86_64-linux-gnu
RUST=$PWD/target/release/examples/footprint

# row LANG MODE NAME PRELOAD CHOICE: median of 5 runs, printed against $base.
row() {
    local lang=$1 mode=$2 name=$3 pre=$4 choice=$5 prog
    [ -z "$pre" ] || [ -e "$pre" ] || return 0
    if [ "$lang" = C ]; then prog="$OUT/footprint"; else prog="$RUST"; fi
    for _ in 1 2 3 4 5; do
        env ${pre:+LD_PRELOAD=$pre} FOOTPRINT_ALLOC="$choice" "$prog" "$mode"
    done | sort -n -k2 | sed -n 3p >"$OUT/row"
    read -r _ hwm anon file <"$OUT/row"
    [ -n "$base" ] || base=$hwm
    awk -v l="$lang" -v m="$mode" -v a="$name" -v h="$hwm" -v n="$anon" -v f="$file" \
        -v b="$base" 'BEGIN { printf "%-4s %-8s %-11s %7d %7d %7d %8.2f\n", l, m, a, h, n, f, h / b }'
}

printf '%-4s %-8s %-11s %7s %7s %7s %8s\n' lang program allocator VmHWM RssAnon RssFile 'vs glibc'
for mode in first small threads; do
    base=
    row C "$mode" glibc "" ""
    row C "$mode" strata "$PWD/target/c-abi/release/libstrata.so" ""
    [ -z "${STRATA_BASE:-}" ] || row C "$mode" strata-base "$STRATA_BASE" ""
    [ -z "${STRATA_ALT:-}" ] || row C "$mode" strata-alt "$STRATA_ALT" ""
    row C "$mode" mimalloc "$L/libmimalloc.so.2" ""
    row C "$mode" jemalloc "$L/libjemalloc.so.2" ""
    row C "$mode" tcmalloc "$L/libtcmalloc_minimal.so.4" ""
done
for mode in first small threads; do
    base=
    row Rust "$mode" System "" system
    row Rust "$mode" strata "" strata
    row Rust "$mode" mimalloc "$L/libmimalloc.so.2" system
    row Rust "$mode" jemalloc "$L/libjemalloc.so.2" system
done
