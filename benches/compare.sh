#!/usr/bin/env bash
# Compare strata with glibc, mimalloc, jemalloc and tcmalloc on the workload
# runner; writes benches/results/{results.csv,table.md,*.svg}.
#
#   benches/compare.sh                 # full run (threads 1,2,4,8; 3 reps; ~12 min on 2 cores)
#   benches/compare.sh --quick         # smoke test (~1 min), output in target/compare/quick
#   benches/compare.sh --help          # all options
#
# The work is done by benches/compare.py (Python 3 standard library only).
set -euo pipefail
exec python3 "$(dirname "${BASH_SOURCE[0]}")/compare.py" "$@"
