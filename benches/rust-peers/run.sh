#!/usr/bin/env bash
# Builds the comparison binaries (one per global allocator) and runs the four
# workloads interleaved: every repetition runs each workload under every allocator,
# in an order that rotates between repetitions. Prints, per workload and allocator,
# the medians of wall time, CPU time (user + sys), peak RSS, context switches
# (voluntary + involuntary) and system time from /usr/bin/time -v, and wall and CPU
# time over the best peer's.
#
#   bash benches/rust-peers/run.sh [REPS] [WORKLOADS...]
#   REPS default 5; WORKLOADS default: rayon json tokio cache.
#   ALLOCS="strata mimalloc" picks the allocators (a copy of a binary under another
#   name starting with "strata", e.g. target/release/strata-before, is run as one
#   more column and not counted as a peer); PEERS_SCALE, PEERS_CACHE_MB
#   size the work (src/lib.rs); RESULTS=file keeps the raw rows.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
reps=${1:-5}
shift || true
workloads=${*:-rayon json tokio cache}
allocs=${ALLOCS:-strata system mimalloc jemalloc snmalloc}
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
bin="$here/target/release"
raw=${RESULTS:-$(mktemp)}
: > "$raw"
tmp=$(mktemp)
for ((r = 0; r < reps; r++)); do
    set -- $allocs
    n=$#
    # Rotate the allocator order by one per repetition.
    order=$(for ((i = 0; i < n; i++)); do j=$(((i + r) % n + 1)); echo "${!j}"; done)
    for w in $workloads; do
        for a in $order; do
            /usr/bin/time -v -o "$tmp" "$bin/$a" "$w" > /dev/null
            awk -v a="$a" -v w="$w" -F': ' '
                /Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0;
                    for (i = 1; i <= n; i++) s = s * 60 + t[i]; wall = s }
                /Maximum resident set size/ { rss = $2 }
                /Voluntary context switches/ { vcs = $2 }
                /Involuntary context switches/ { ics = $2 }
                /System time/ { sys = $2 }
                /User time/ { usr = $2 }
                END { printf "%s %s %s %s %s %s %s\n", w, a, wall, rss, vcs + ics, sys, usr + sys }' \
                "$tmp" >> "$raw"
        done
    done
done
rm -f "$tmp"
python3 - "$raw" "$reps" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
data = {}
for w, a, wall, rss, cs, sys_s, cpu in rows:
    data.setdefault(w, {}).setdefault(a, []).append((float(wall), int(rss), int(cs), float(sys_s), float(cpu)))
print(f"medians of {sys.argv[2]} interleaved runs; ratio = wall / best peer's wall, cpu ratio =")
print("(user + sys) / best peer's (below 1: strata better); ctx switches: voluntary + involuntary")
print("| workload | allocator | wall s | ratio | cpu s | cpu ratio | peak RSS MiB | ctx switches | sys s |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for w, per in data.items():
    med = {a: [statistics.median(x[i] for x in v) for i in range(5)] for a, v in per.items()}
    peers = [m for a, m in med.items() if not a.startswith("strata")]
    best = min(m[0] for m in peers) if peers else None
    best_cpu = min(m[4] for m in peers) if peers else None
    for a, (wall, rss, cs, sys_s, cpu) in med.items():
        ratio = f"{wall / best:.2f}" if best else "-"
        cratio = f"{cpu / best_cpu:.2f}" if best_cpu else "-"
        print(f"| {w} | {a} | {wall:.2f} | {ratio} | {cpu:.2f} | {cratio} | {rss / 1024:.0f} | {cs:.0f} | {sys_s:.2f} |")
PY
