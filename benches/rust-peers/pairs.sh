#!/usr/bin/env bash
# Two builds of one workload side by side: runs binary A and binary B in turn
# (A B A B ...), N pairs, and prints the medians of their CPU (user + sys) and
# wall times and of the ratios B/A taken pair by pair, with the spread of those
# ratios. On a shared machine whose speed drifts from minute to minute, a ratio
# of two runs a second apart is steadier than a ratio of two medians.
#
#   bash benches/rust-peers/pairs.sh A B WORKLOAD [N]
#   A, B: binaries under benches/rust-peers/target/release (e.g. a copy of
#   `strata` built from another commit, and `strata`); WORKLOAD: rayon, json,
#   tokio or cache; N: pairs, default 10. PEERS_SCALE and PEERS_CACHE_MB size
#   the work as for run.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
a=$1 b=$2 w=$3 n=${4:-10}
bin="$here/target/release"
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.t"' EXIT
for ((i = 0; i < n; i++)); do
    for x in "$a" "$b"; do
        /usr/bin/time -f "%e %U %S" -o "$tmp.t" "$bin/$x" "$w" > /dev/null
        echo "$x $(tail -n 1 "$tmp.t")" >> "$tmp"
    done
done
python3 - "$tmp" "$a" "$b" "$w" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
a, b, w = sys.argv[2:5]
runs = {a: [], b: []}
for name, wall, usr, sys_s in rows:
    runs[name].append((float(wall), float(usr) + float(sys_s)))
pairs = list(zip(runs[a], runs[b]))
for name in (a, b):
    v = runs[name]
    print(f"{w} {name}: wall {statistics.median(x[0] for x in v):.3f} s, "
          f"cpu {statistics.median(x[1] for x in v):.3f} s (medians of {len(v)})")
for i, what in ((1, "cpu"), (0, "wall")):
    r = sorted(q[i] / p[i] for p, q in pairs)
    print(f"{b}/{a} {what}: {statistics.median(r):.3f} (pairs {r[0]:.2f}-{r[-1]:.2f}, "
          f"{sum(x < 1 for x in r)} of {len(r)} below 1)")
PY
