#!/usr/bin/env bash
# Threads that churn and then idle or exit (benches/idle_threads/idle_threads.c),
# under LD_PRELOAD: strata (its default: thread caches for the first max(64, 4 x
# CPUs) threads, per-CPU caches after them; strata-tc, thread caches only,
# STRATA_PERCPU=0; strata-percpu, every thread per CPU, STRATA_PERCPU=1; and
# strata-auto, thread caches for the first thread per CPU then per-CPU caches,
# STRATA_PERCPU=auto), glibc, and mimalloc / jemalloc / tcmalloc where their Debian
# packages are installed (libmimalloc2.0, libjemalloc2, libgoogle-perftools4).
# For each thread count: the median over REPS runs (allocators interleaved) of the
# churn time, throughput, and resident MiB while idle and after every thread exited.
# Then a Markdown table of the medians, and three SVG charts with the raw runs in
# benches/results/ (idle-threads-*.svg, idle-threads.txt).
# Usage: benches/idle_threads/run.sh [REPS] [THREAD COUNTS...]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS="${1:-3}"
shift || true
COUNTS=("${@:-1 16 64 256 1024}")
read -r -a COUNTS <<<"${COUNTS[*]}"
cargo build --release --manifest-path capi/Cargo.toml --target-dir target/c-abi >&2
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cc -O2 -pthread -o "$OUT/idle_threads" benches/idle_threads/idle_threads.c
LIB=/usr/lib/x86_64-linux-gnu
STRATA="$PWD/target/c-abi/release/libstrata.so"
names=(strata strata-tc strata-percpu strata-auto glibc)
preload=("$STRATA" "$STRATA" "$STRATA" "$STRATA" "")
envs=("" "STRATA_PERCPU=0" "STRATA_PERCPU=1" "STRATA_PERCPU=auto" "")
for extra in mimalloc:libmimalloc.so.2 jemalloc:libjemalloc.so.2 tcmalloc:libtcmalloc_minimal.so.4; do
    if [ -e "$LIB/${extra#*:}" ]; then
        names+=("${extra%%:*}")
        preload+=("$LIB/${extra#*:}")
        envs+=("")
    fi
done
printf '%-14s %7s %9s %8s %12s %12s\n' allocator threads churn_ms Mops rss_idle_MiB rss_exit_MiB
for n in "${COUNTS[@]}"; do
    for ((r = 0; r < REPS; r++)); do
        for i in "${!names[@]}"; do
            line=$(env ${envs[$i]} ${preload[$i]:+LD_PRELOAD=${preload[$i]}} \
                "$OUT/idle_threads" "$n" 20000 3000)
            echo "${names[$i]} $line" >>"$OUT/raw"
        done
    done
    for name in "${names[@]}"; do
        python3 - "$OUT/raw" "$name" "$n" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.split()[0] == sys.argv[2] and l.split()[1] == sys.argv[3]]
med = lambda k: statistics.median(float(r[k]) for r in rows)
print(f"{sys.argv[2]:<14} {sys.argv[3]:>7} {med(2):9.1f} {med(3):8.2f} {med(4):12.1f} {med(5):12.1f}")
PY
    done
done
mkdir -p benches/results
cp "$OUT/raw" benches/results/idle-threads.txt
python3 benches/idle_threads/plot.py benches/results/idle-threads.txt benches/results
