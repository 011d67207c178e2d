//! A refill that finds a span's free list longer than a batch (`slow::alloc_slow`,
//! `Central::carve_within`): taken whole within the room the budget and the class's
//! cap allow, the list's max grown to hold it; cut to a batch beyond that room.

use super::*;
use crate::backend::Backend;
use crate::os::SysOs;
use crate::size_class::{CLASS_CAP, CLASS_FIRST_REFILL, class_for};

fn backend() -> &'static Backend<SysOs> {
    Box::leak(Box::new(Backend::new(SysOs)))
}

/// A heap whose class-`c` refill meets a span with `m` free objects (and some live,
/// so the span stays), after a budget of `budget` bytes: the objects the refill
/// received, the list's max after it, and the heap (validated).
fn refill_after_frees(c: SizeClass, m: usize, budget: usize) -> (u64, u32, Box<ThreadHeap>) {
    let be = backend();
    // Batches carved from a fresh span until it gave more than m objects; m of
    // them back onto its free list, the others kept live (the span stays).
    let mut objs = Vec::new();
    while objs.len() <= m {
        let b = be.central.refill_within(c, &be.page_heap, c.batch(), 0);
        assert_eq!(b.count, c.batch());
        let mut o = b.head;
        for _ in 0..b.count {
            objs.push(o.cast::<u8>());
            // SAFETY: the refill gave us a chain of `b.count` objects.
            o = unsafe { FreeObj::next(o, c) };
        }
    }
    assert!(objs.len() < c.objects_per_span(), "one span");
    for &p in &objs[..m] {
        // SAFETY: a class-c object we own and give up.
        unsafe { be.free_small_direct(c, p) };
    }
    let heap = Box::new(ThreadHeap::new(HeapState::Pooled));
    // SAFETY: a fresh heap this thread owns; its class-c list is empty.
    let p = unsafe {
        heap.activate(budget);
        heap.alloc_slow(c, be)
    };
    assert!(!p.is_null());
    // SAFETY: this thread owns the heap.
    unsafe { heap.validate(be) }.unwrap();
    let got = heap.counters().received;
    let max = heap.lists[c.index()].max.get();
    // SAFETY: as above; the object is the heap's to take back.
    unsafe {
        if !heap.try_push(c, p) {
            heap.free_slow(c, p, be);
        }
        heap.validate(be).unwrap();
        heap.flush_all(be);
    }
    (got, max, heap)
}

#[test]
fn a_long_free_list_is_taken_whole_within_the_room_and_the_max_grows_to_hold_it() {
    let c = class_for(32, 8).unwrap();
    let m = 4 * c.batch();
    assert!(m < c.objects_per_span() && m <= CLASS_CAP[c.index()] as usize);
    let (got, max, _heap) = refill_after_frees(c, m, DEFAULT_CACHE_BUDGET);
    assert_eq!(got, m as u64, "the whole list, in one refill");
    assert_eq!(max, m as u32, "the max grown to the list");
}

#[test]
fn a_list_longer_than_the_budget_allows_is_cut_to_the_first_refill() {
    let c = class_for(32, 8).unwrap();
    let m = 4 * c.batch();
    // Room for two batches' worth of the class only.
    let budget = 2 * c.batch() * c.size_bytes();
    let (got, max, _heap) = refill_after_frees(c, m, budget);
    assert_eq!(
        got,
        CLASS_FIRST_REFILL[c.index()] as u64,
        "cut to what was wanted"
    );
    assert_eq!(max, 0, "the max grows on overflow only");
}

/// Once a front end that refills from arrays serves some thread
/// (`Backend::want_arrays`), a thread cache's flush of a whole batch hands its
/// objects over marked free one by one (an array's form: each link null), not as
/// a chain (each object linked to the next): a CPU's refill then copies the
/// addresses without reading the objects.
#[test]
fn whole_batches_flush_as_arrays_once_arrays_are_wanted() {
    let c = class_for(64, 8).unwrap();
    for wanted in [false, true] {
        let be = backend();
        if wanted {
            be.want_arrays();
        }
        assert_eq!(be.arrays_wanted(), wanted);
        let heap = Box::new(ThreadHeap::new(HeapState::Pooled));
        // SAFETY: a fresh heap this thread owns.
        unsafe { heap.activate(DEFAULT_CACHE_BUDGET) };
        // More than the list may ever hold: the frees must flush.
        let n = CLASS_CAP[c.index()] as usize + 4 * c.batch();
        let objs: Vec<*mut u8> = (0..n)
            .map(|_| {
                // SAFETY: this thread owns the heap; c is a valid class.
                let p = unsafe {
                    match heap.pop(c) {
                        p if p.is_null() => heap.alloc_slow(c, be),
                        p => p,
                    }
                };
                assert!(!p.is_null());
                p
            })
            .collect();
        for &p in &objs {
            // SAFETY: class-c objects this thread got from the heap and gives up.
            unsafe {
                if !heap.try_push(c, p) {
                    heap.free_slow(c, p, be);
                }
            }
        }
        // SAFETY: this thread owns the heap.
        unsafe { heap.validate(be) }.unwrap();
        // The objects the heap still lists; the others went to the central tier.
        let mut listed = std::collections::HashSet::new();
        let mut o = heap.lists[c.index()].head.get();
        while !o.is_null() {
            listed.insert(o.cast::<u8>());
            // SAFETY: an object of the heap's class-c list (invariant 1).
            o = unsafe { FreeObj::next(o, c) };
        }
        let flushed: Vec<_> = objs.iter().filter(|p| !listed.contains(*p)).collect();
        assert!(flushed.len() >= c.batch(), "nothing was flushed");
        let linked = flushed
            .iter()
            // SAFETY: free class-c objects of `be` with a link or the free mark in
            // their first word, which nothing else uses during the test.
            .filter(|&&&p| !unsafe { FreeObj::next(p.cast(), c) }.is_null())
            .count();
        if wanted {
            assert_eq!(linked, 0, "a flushed object still links to another");
        } else {
            assert!(linked > 0, "flushed chains link their objects");
        }
        // SAFETY: this thread owns the heap.
        unsafe { heap.flush_all(be) };
    }
}
