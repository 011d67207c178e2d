//! Huge blocks: each is a mapping of its own, recorded in a registry (a hash of
//! records from the metadata arena, under a lock) so that `free` without a size,
//! `realloc` by remapping and "is this ours?" find it. One thread grows a huge block
//! while another shrinks one, both remapping (the fake OS, like Linux, hands a
//! just-unmapped range to the next mapping of its size at once), then both free.
//!
//! A freed block waits in the cache of freed huge mappings, so the other thread's
//! next block may be that mapping, taken over and grown or shrunk by remap.
//!
//! Properties: each block is found with its own length while live, a remap keeps
//! its contents, every mapping goes back to the OS exactly once and with its own
//! length (the last ones when the cache is emptied), and the registry and the cache
//! end empty.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{FakeOs, all_bytes, assert_all_returned, fill, model};
use strata::internals::{Backend, HUGE_THRESHOLD, OS_PAGE};

/// Allocates `from` pages, fills them with `id`, remaps to `to` pages, checks, frees.
fn resize_and_free(be: &Backend<FakeOs>, id: u8, from: usize, to: usize) {
    assert!(from * OS_PAGE > HUGE_THRESHOLD);
    let p = be.alloc_huge(from * OS_PAGE, 8, false);
    assert!(!p.is_null());
    assert_eq!(be.usable_size(p), Some(from * OS_PAGE));
    // SAFETY: ours.
    unsafe { fill(p as usize, from * OS_PAGE, id) };
    // SAFETY: a live huge block of ours.
    let q = unsafe { be.realloc_huge(p, to * OS_PAGE) };
    assert!(!q.is_null());
    assert_eq!(be.usable_size(q), Some(to * OS_PAGE));
    let kept = from.min(to) * OS_PAGE;
    // SAFETY: ours; the first `kept` bytes were carried over.
    assert!(
        unsafe { all_bytes(q as usize, kept, id) },
        "remap lost contents"
    );
    // SAFETY: ours, given up.
    unsafe { be.free_huge(q) };
}

#[test]
fn huge_blocks_grown_shrunk_and_freed_at_once_are_unmapped_once_with_their_length() {
    model(|| {
        let be = Arc::new(Backend::new(FakeOs::new()));
        let grower = {
            let be = be.clone();
            thread::spawn(move || resize_and_free(&be, 1, 1, 2))
        };
        let shrinker = {
            let be = be.clone();
            thread::spawn(move || resize_and_free(&be, 2, 2, 1))
        };
        grower.join().unwrap();
        shrinker.join().unwrap();
        // Freed blocks wait in the huge cache (one thread may have taken the
        // other's, and grown or shrunk it) until it is emptied.
        be.validate().unwrap();
        be.release_shared();
        let (mapped, unmapped) = be.page_heap.os().totals();
        assert_eq!(mapped - unmapped, be.meta.mapped_bytes());
        assert_all_returned(&be);
    });
}

/// Allocates each of `sizes` pages in turn (no realloc), fills it with `id`, checks
/// it and frees it: through the cache, a block may be a mapping the other thread
/// freed, taken whole, shrunk or grown.
fn churn_through_cache(be: &Backend<FakeOs>, id: u8, sizes: &[usize]) {
    for &pages in sizes {
        let len = pages * OS_PAGE;
        assert!(len > HUGE_THRESHOLD);
        let p = be.alloc_huge(len, 8, false);
        assert!(!p.is_null());
        let usable = be.usable_size(p).expect("a live huge block");
        assert!(
            usable >= len && usable - len <= len / 4,
            "{usable} bytes for {len}"
        );
        // SAFETY: ours, `usable` bytes long.
        unsafe { fill(p as usize, usable, id) };
        loom::thread::yield_now();
        // SAFETY: ours; no one else may have written it meanwhile.
        assert!(
            unsafe { all_bytes(p as usize, usable, id) },
            "a huge block shared with another thread"
        );
        // SAFETY: ours, given up.
        unsafe { be.free_huge(p) };
    }
}

#[test]
fn freed_huge_mappings_are_taken_over_by_another_thread_whole_shrunk_or_grown() {
    model(|| {
        let be = Arc::new(Backend::new(FakeOs::new()));
        let a = {
            let be = be.clone();
            thread::spawn(move || churn_through_cache(&be, 1, &[4, 1]))
        };
        let b = {
            let be = be.clone();
            thread::spawn(move || churn_through_cache(&be, 2, &[2, 8]))
        };
        a.join().unwrap();
        b.join().unwrap();
        be.validate().unwrap();
        be.release_shared();
        let (mapped, unmapped) = be.page_heap.os().totals();
        assert_eq!(mapped - unmapped, be.meta.mapped_bytes());
        assert_all_returned(&be);
    });
}
