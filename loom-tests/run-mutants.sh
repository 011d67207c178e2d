#!/usr/bin/env bash
# Proof that the loom models bite: builds strata once per deliberate fault
# (`--cfg strata_mutant="NAME"`, see the `strata_mutant` switches in src/ and the
# list in Cargo.toml) and runs the loom model that must catch it. Every mutant must
# make its model FAIL; a mutant whose model passes has survived, and the script
# exits non-zero.
#
# Usage: loom-tests/run-mutants.sh [NAME...]     (default: every mutant)
#
# Environment: CARGO_TARGET_DIR (default target/loom-mutants, so the main and loom
# builds are not invalidated; artifacts of each mutant's flags are kept side by
# side, so a second run only rebuilds what changed), LOOM_MAX_PREEMPTIONS (default
# 2), CARGO_PROFILE_RELEASE_OPT_LEVEL (default 0) and CARGO_PROFILE_RELEASE_DEBUG
# (default 0). The release profile otherwise stays as it is (no debug assertions,
# no overflow checks), but unoptimised and without debug info: each mutant rebuilds
# every crate (RUSTFLAGS are part of every crate's hash), which takes ~8 s this way
# against ~25 s optimised on 2 cores, and a killed mutant's model fails within a
# second either way. strata itself is built at opt-level 1 (STRATA_OPT_LEVEL):
# unoptimised, its frames overflow the 32 KiB stacks of loom's threads in the
# backend's paths, and a model that dies of that has checked nothing (such a run
# is reported as ERROR, never as killed).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom-mutants}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-0}"
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-0}"
STRATA_OPT=(--config "profile.release.package.strata-alloc.opt-level=${STRATA_OPT_LEVEL:-1}")

# NAME  TEST-FILE  what the fault breaks
MUTANTS=(
    "transfer_push_relaxed           transfer_stack  push's CAS Release -> Relaxed: a batch is published before its contents"
    "transfer_pop_relaxed            transfer_stack  pop's loads of the head Acquire -> Relaxed"
    "transfer_no_tag                 transfer_stack  no ABA tag in the head: pop, reuse, push back between read and CAS"
    "desc_pool_publish_relaxed       desc_pool       a descriptor block published Relaxed, before its descriptors"
    "desc_pool_no_recheck            desc_pool       no re-check under the growth lock: a second block replaces the first"
    "chunk_map_set_relaxed           chunk_map       a chunk's entry set Relaxed: the entry is seen before the header"
    "chunk_map_contains_relaxed      chunk_map       the lookup's load of a chunk's entry Relaxed: the header is read unordered"
    "lock_acquire_relaxed            metadata_arena  RawLock takes the lock Relaxed"
    "lock_release_relaxed            metadata_arena  RawLock releases the lock Relaxed"
    "central_release_unlocked        flush_refill    objects returned to spans without the class lock"
    "central_empty_span_stays_listed span_release    an emptied span goes to the page heap but stays on the partial list"
    "page_heap_free_unlocked         coalescing      free_span without the page-heap lock"
    "coalesce_skips_unlink           coalescing      the left neighbour merged but left in its old bin"
    "coalesce_keeps_zeroed           purge           a dirty span merged into a purged one keeps 'known zero'"
    "purge_unlocked                  purge           the purge pass after the page-heap lock is dropped"
    "purge_ignores_refusal           purge           a purge the OS refused still flags its span known-zero"
    "retire_pools_before_flush       thread_exit     an exiting thread's heap pooled before its cache is flushed"
    "huge_remap_unlocked             huge_blocks     a huge block remapped outside the registry lock (the bug loom found)"
    "span_release_keeps_class        span_release    a released Small span's pages keep their class in the page entries"
    "huge_cache_takes_short          huge_blocks     a cached huge mapping is handed out whole even when shorter than the request"
    "stats_ignore_moves              stats_merge     thread heaps do not mark their moves: a snapshot counts a batch in transit as live"
    "stats_read_owner_field          stats_merge     a snapshot reads a heap's owner-only plain field (max), racing its owner"
    "percpu_one_fence                percpu_handoff  a non-owner unlocks a CPU's header with no second fence (the old drain bug)"
    "percpu_no_first_fence           percpu_handoff  a non-owner works on a CPU's stack without fencing it after the lock"
    "percpu_grow_locked              percpu_handoff  a capacity widened while a non-owner holds the header locked"
    "drain_no_fence                  thread_cache_drain a sleeping thread's drain reads its state with no fence after swapping its slot"
    "unneeded_chunk_leaks            growth          a chunk mapped while another thread made room is neither filed nor unmapped"
)

want=("$@")
for w in "${want[@]}"; do
    if ! printf '%s\n' "${MUTANTS[@]}" | awk '{print $1}' | grep -qx -- "$w"; then
        echo "unknown mutant: $w" >&2
        exit 2
    fi
done
# Progress on stderr: one updating line on a terminal, one line per step in CI logs.
progress() {
    if [ -t 2 ]; then
        printf '%-32s %-12s\r' "$1" "$2" >&2
    else
        printf '%s: %s\n' "$1" "$2" >&2
    fi
}

selected() {
    [ "${#want[@]}" -eq 0 ] && return 0
    local w
    for w in "${want[@]}"; do
        [ "$w" = "$1" ] && return 0
    done
    return 1
}

mkdir -p "$CARGO_TARGET_DIR"
rows=()
bad=0
start_all=$SECONDS
for line in "${MUTANTS[@]}"; do
    read -r name test what <<<"$line"
    selected "$name" || continue
    log="$CARGO_TARGET_DIR/mutant-$name.log"
    flags="--cfg strata_loom --cfg strata_mutant=\"$name\""
    t0=$SECONDS
    progress "$name" "building..."
    if ! RUSTFLAGS="$flags" cargo test "${STRATA_OPT[@]}" -p loom-tests --release --test "$test" --no-run \
        >"$log" 2>&1; then
        rows+=("$(printf '%-32s %-15s %-9s %4ss  %s' "$name" "$test" "ERROR" \
            $((SECONDS - t0)) "does not build (see $log)")")
        bad=1
        continue
    fi
    progress "$name" "running..."
    RUSTFLAGS="$flags" cargo test "${STRATA_OPT[@]}" -p loom-tests --release --test "$test" >>"$log" 2>&1
    rc=$?
    secs=$((SECONDS - t0))
    if [ "$rc" -eq 0 ]; then
        verdict="SURVIVED"
        why="the model passed: it does not catch: $what"
        bad=1
    elif grep -q 'has overflowed its stack' "$log"; then
        verdict="ERROR"
        why="a model thread overflowed its stack: nothing was checked (see $log)"
        bad=1
    elif grep -q '^test result: FAILED' "$log"; then
        verdict="killed"
        # The first panic message of the failing model (loom's report or an assert).
        why="$(grep -A1 -m1 'panicked at' "$log" | tail -n1 | cut -c1-90)"
    else
        verdict="ERROR"
        why="exit $rc without a failing test (see $log)"
        bad=1
    fi
    rows+=("$(printf '%-32s %-15s %-9s %4ss  %s' "$name" "$test" "$verdict" "$secs" "$why")")
done

printf '\n%-32s %-15s %-9s %5s  %s\n' "MUTANT" "MODEL" "RESULT" "TIME" "HOW THE MODEL FAILED"
printf '%s\n' "${rows[@]}"
printf '\n%d mutant(s) in %ss; ' "${#rows[@]}" $((SECONDS - start_all))
if [ "$bad" -ne 0 ]; then
    echo "FAIL: a mutant survived or did not run (logs in $CARGO_TARGET_DIR/mutant-*.log)"
    exit 1
fi
echo "PASS: every mutant was killed by its model"
