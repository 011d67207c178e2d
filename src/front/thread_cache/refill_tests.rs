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
