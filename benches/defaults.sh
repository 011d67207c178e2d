#!/usr/bin/env bash
# How the two tunables move speed and memory: sweeps the thread-cache budget
# (STRATA_THREAD_CACHE_BYTES) and the purge delay (STRATA_PURGE_DELAY_MS) over the
# workloads of benches/workloads/ under LD_PRELOAD of the C library, and prints, per
# setting, the median ops/s and median peak RSS of REPS runs. The defaults in
# src/thread_heap.rs (DEFAULT_CACHE_BUDGET) and src/page_heap.rs
# (DEFAULT_PURGE_DELAY_MS) cite its output.
#
#   benches/defaults.sh [THREADS] [SECONDS] [REPS]     (defaults: nproc, 1.0, 3)
#
# Every run verifies its data (the runner checks every block before freeing it).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS="${1:-$(nproc)}"
SECONDS_PER_RUN="${2:-1.0}"
REPS="${3:-3}"

cargo build --release --manifest-path capi/Cargo.toml --target-dir target/c-abi >&2
LIB="$PWD/target/c-abi/release/libstrata.so"
W="$(cargo bench --no-run --bench workloads --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*workloads[^"]*\)".*/\1/p' | tail -n1)"
[ -x "$W" ] || { echo "workloads runner not found" >&2; exit 1; }

# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# run WORKLOAD THREADS ENV... -> "ops_per_sec peak_rss_kib" medians
run() {
    local wl="$1" t="$2"
    shift 2
    local ops=() rss=() line
    for _ in $(seq "$REPS"); do
        line="$(env LD_PRELOAD="$LIB" "$@" "$W" --workload "$wl" --threads "$t" \
            --seconds "$SECONDS_PER_RUN" --expect strata)"
        ops+=("$(sed -n 's/.*ops_per_sec=\([0-9.]*\).*/\1/p' <<<"$line")")
        rss+=("$(sed -n 's/.*peak_rss_kib=\([0-9]*\).*/\1/p' <<<"$line")")
    done
    printf '%s %s\n' "$(printf '%s\n' "${ops[@]}" | median)" \
        "$(printf '%s\n' "${rss[@]}" | median)"
}

threads_for() {
    case "$1" in glibc-simple | malloc-large) echo 1 ;; *) echo "$THREADS" ;; esac
}

# sweep TITLE VAR LABEL "VALUES" "WORKLOADS": one row per workload, one column per
# value of the environment variable VAR (headed "LABEL value")
sweep() {
    local title="$1" var="$2" label="$3" values wls wl v ops rss
    read -r -a values <<<"$4"
    read -r -a wls <<<"$5"
    echo "# $title; $THREADS threads, ${SECONDS_PER_RUN}s x $REPS, medians of ops/s and peak RSS"
    printf '%-14s' workload
    for v in "${values[@]}"; do printf '%22s' "$label $v"; done
    echo
    for wl in "${wls[@]}"; do
        printf '%-14s' "$wl"
        for v in "${values[@]}"; do
            read -r ops rss < <(run "$wl" "$(threads_for "$wl")" "$var=$v")
            printf '%13.1fk %5dM' "$(awk "BEGIN{print $ops/1e3}")" "$((rss / 1024))"
        done
        echo
    done
}

sweep "thread-cache budget (purge delay at its default)" STRATA_THREAD_CACHE_BYTES budget \
    "256k 512k 1m 2m 4m 8m 32m" \
    "rptest larson xmalloc glibc-thread alloc-test thread-churn glibc-simple"
echo
sweep "purge delay in ms (budget at its default)" STRATA_PURGE_DELAY_MS delay \
    "0 10 100 1000 10000" \
    "mstress rptest malloc-large larson"
