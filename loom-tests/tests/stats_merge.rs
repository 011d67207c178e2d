//! Statistics merged on demand: one thread allocates, frees (overflowing into a
//! flush to the central tier) and exits (its heap flushed and pooled), while another
//! takes a snapshot of the heap.
//!
//! Properties: the snapshot taken in the middle is internally consistent (the byte
//! identities documented on `Stats` hold, no class shows more live objects than were
//! ever allocated, counts never exceed what happened); a snapshot begun after the
//! program freed both objects shows none live, even while the exiting thread's flush
//! is between its cache and the central tier (waiting for the class lock the
//! snapshot holds); and once the thread is gone the counts are exact: two
//! allocations, two frees, nothing allocated or cached.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom_tests::{FakeOs, assert_all_returned, model_big_stack, spawn_big};
use strata::Stats;
use strata::internals::{Backend, SizeClass};

/// 64-byte objects: four to a span, batches of two.
const C: SizeClass = SizeClass(0);

fn check_consistent(s: &Stats) {
    let live: u64 = s
        .classes
        .iter()
        .map(|c| c.live_objects * c.size as u64)
        .sum();
    let spans: u64 = s.classes.iter().map(|c| c.span_bytes).sum();
    let free: u64 = s.classes.iter().map(|c| c.span_free_bytes()).sum();
    assert_eq!(s.allocated_bytes, live + s.large_bytes + s.huge_bytes);
    assert_eq!(
        spans,
        live + s.thread_cached_bytes + s.central_cached_bytes + free,
        "{s:?}"
    );
    assert!(s.allocated_bytes <= s.active_bytes && s.active_bytes <= s.mapped_bytes);
    assert!(s.resident_bytes <= s.mapped_bytes);
    assert!(s.classes[C.index()].live_objects <= 2, "{s:?}");
    assert!(s.allocs <= 2 && s.frees <= 2, "{s:?}");
}

/// One thread allocates two objects and frees them, with a cache budget of
/// `budget` bytes, then exits (its heap flushed and pooled), while the model's
/// thread takes a snapshot. Checks the snapshot, and the exact counts at the end.
fn race_snapshot_with_worker(budget: usize) {
    model_big_stack(move || {
        let be = Arc::new(Backend::new(FakeOs::new()));
        be.set_cache_budget(budget);
        let freed = Arc::new(AtomicBool::new(false));
        let worker = {
            let be = be.clone();
            let freed = freed.clone();
            spawn_big(move || {
                let h = be.new_thread_heap();
                // SAFETY: a live heap, this thread's alone until it retires it.
                let heap = unsafe { &*h };
                let mut objs = Vec::new();
                for _ in 0..2 {
                    // SAFETY: a valid class; our heap.
                    let p = unsafe { heap.pop(C) };
                    let p = if p.is_null() {
                        // SAFETY: our live heap.
                        unsafe { heap.alloc_slow(C, &be) }
                    } else {
                        p
                    };
                    assert!(!p.is_null());
                    objs.push(p);
                }
                for p in objs {
                    // SAFETY: class-C objects of ours, given up once.
                    unsafe {
                        if !heap.try_push(C, p) {
                            heap.free_slow(C, p, &be);
                        }
                    }
                }
                freed.store(true, Ordering::Release);
                // SAFETY: the heap is ours and this thread is done with it.
                unsafe { be.retire_thread_heap(h) };
            })
        };
        let all_freed = freed.load(Ordering::Acquire);
        let mid = be.stats();
        check_consistent(&mid);
        if all_freed {
            assert_eq!(mid.classes[C.index()].live_objects, 0, "{mid:?}");
            assert_eq!(mid.allocated_bytes, 0, "{mid:?}");
        }
        worker.join().unwrap();
        let end = be.stats();
        check_consistent(&end);
        assert_eq!((end.allocs, end.frees), (2, 2), "{end:?}");
        assert_eq!(end.allocated_bytes, 0, "{end:?}");
        assert_eq!(end.thread_cached_bytes, 0, "{end:?}");
        assert_eq!(end.thread_heaps_live, 0);
        assert_all_returned(&be);
    });
}

#[test]
fn snapshot_racing_alloc_free_flush_and_exit_is_consistent_and_ends_exact() {
    // No room for an object in the cache: each free goes to free_slow and straight
    // back to the central tier.
    race_snapshot_with_worker(C.size_bytes());
}

#[test]
fn snapshot_after_everything_is_freed_shows_nothing_live_while_the_exit_flushes() {
    // Room for a batch: both frees stay cached, and the exit flushes them, so the
    // snapshot may meet the batch between the cache and the central tier.
    race_snapshot_with_worker(C.size_bytes() * C.batch());
}
