#!/usr/bin/env bash
# What each page-heap placement policy (STRATA_PLACEMENT=best|first|next) does to
# fragmentation, memory and speed, on the same workloads side by side:
#
#   benches/placement.sh [--quick] [--out DIR]     # default ~3 minutes; --quick ~40 s
#
# Per policy:
#   - examples/placement_mix: a long random mix of Large blocks and small objects,
#     sampled over time (resident, allocated, free spans, largest free span);
#   - examples/fragmentation: the phased fragmentation workload (samples.csv);
#   - every workload of benches/workloads under LD_PRELOAD of libstrata.so (ops/s,
#     peak RSS, and the page heap's free spans at exit via STRATA_SHOW_STATS);
#   - the heap map (strata::write_heap_map) after 3 s of placement_mix (workers
#     still running), the same workload under each policy.
# Then benches/placement.py writes DIR/summary.csv, one SVG chart per figure and
# DIR/heap-maps.svg (the maps side by side). Default DIR: target/placement.
# One run per cell: on a busy machine, rerun and compare the ratios, not the values.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
OUT=target/placement
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
POLICIES="best first next"
if [ "$QUICK" = 1 ]; then
    MIX_S=3 FRAG_S=3 WL_S=0.15
else
    MIX_S=20 FRAG_S=12 WL_S=0.5
fi

echo "== building" >&2
cargo build --release --example placement_mix --example fragmentation
cargo build --release --manifest-path capi/Cargo.toml --target-dir target/c-abi
LIB="$PWD/target/c-abi/release/libstrata.so"
RUNNER="$(cargo bench --no-run --bench workloads --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*workloads[^"]*\)".*/\1/p' | tail -n1)"
[ -x "$RUNNER" ] || { echo "workloads runner not found" >&2; exit 1; }
EX=target/release/examples

rm -rf "$OUT"
mkdir -p "$OUT"
for p in $POLICIES; do
    echo "== $p: placement_mix (${MIX_S} s)" >&2
    mkdir -p "$OUT/mix-$p"
    STRATA_PLACEMENT=$p "$EX/placement_mix" --seconds "$MIX_S" --out "$OUT/mix-$p" \
        >"$OUT/mix-$p/stdout.txt"
    echo "== $p: fragmentation (${FRAG_S} s)" >&2
    mkdir -p "$OUT/frag-$p"
    STRATA_PLACEMENT=$p /usr/bin/time -f "%M %e" -o "$OUT/frag-$p/time.txt" \
        "$EX/fragmentation" --seconds "$FRAG_S" --out "$OUT/frag-$p" >"$OUT/frag-$p/stdout.txt"
    echo "== $p: workloads (${WL_S} s each)" >&2
    mkdir -p "$OUT/wl-$p"
    "$RUNNER" --list | while IFS=$'\t' read -r w kind _; do
        t=2
        [ "$kind" = single ] && t=1
        STRATA_PLACEMENT=$p STRATA_SHOW_STATS=1 LD_PRELOAD="$LIB" "$RUNNER" --workload "$w" \
            --threads "$t" --seconds "$WL_S" --expect strata \
            >"$OUT/wl-$p/$w.out" 2>"$OUT/wl-$p/$w.err"
    done
    echo "== $p: heap map after 3 s of placement_mix" >&2
    mkdir -p "$OUT/heapmap-$p"
    STRATA_PLACEMENT=$p "$EX/placement_mix" --seconds 3 --heap-map --out "$OUT/heapmap-$p" \
        >"$OUT/heapmap-$p/stdout.txt"
done
python3 benches/placement.py "$OUT"
