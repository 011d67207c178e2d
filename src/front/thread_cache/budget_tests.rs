//! The adaptive budget (`slow`: a hot heap borrows on overflow, gives back when
//! calm, flushed or retired) against the backend's `CachePool`, and the growth of a
//! list's max only after it ran empty.

use super::slow::{BORROW_CAP_FACTOR, BORROW_STEP, CALM_EVENTS};
use super::*;
use crate::backend::Backend;
use crate::os::SysOs;
use crate::size_class::{CLASS_BATCH, class_for};

/// Objects of 2 KiB: a class whose batch fits in one borrowing step, and whose
/// list holds up to 1 MiB (`max_cached`).
const SIZE: usize = 2048;

fn backend() -> &'static Backend<SysOs> {
    Box::leak(Box::new(Backend::new(SysOs)))
}

fn live_heap(budget: usize) -> Box<ThreadHeap> {
    let heap = Box::new(ThreadHeap::new(HeapState::Pooled));
    // SAFETY: a fresh heap this thread owns.
    unsafe { heap.activate(budget) };
    heap
}

/// Allocates `n` objects of [`SIZE`] through the heap's paths, as `global` does.
fn take(heap: &ThreadHeap, be: &Backend<SysOs>, n: usize) -> Vec<*mut u8> {
    let c = class_for(SIZE, 8).unwrap();
    (0..n)
        .map(|_| {
            // SAFETY: a live heap this thread owns; c is a valid class.
            let p = unsafe { heap.pop(c) };
            let p = if p.is_null() {
                // SAFETY: as above, and the class-c list is empty.
                unsafe { heap.alloc_slow(c, be) }
            } else {
                p
            };
            assert!(!p.is_null());
            p
        })
        .collect()
}

/// Frees `blocks` through the heap's paths, as `global` does.
fn give(heap: &ThreadHeap, be: &Backend<SysOs>, blocks: Vec<*mut u8>) {
    let c = class_for(SIZE, 8).unwrap();
    for p in blocks {
        // SAFETY: blocks of class c this heap handed out, each freed once; the heap
        // is live and this thread's.
        unsafe {
            if !heap.try_push(c, p) {
                heap.free_slow(c, p, be);
            }
        }
    }
}

/// `n` rounds of an rptest-like working set of 1 MiB of [`SIZE`] objects: all
/// allocated, then all freed. A heap misses every batch of them (hot), and its
/// list's max grows by a batch a round (it ran empty in between).
fn rounds(heap: &ThreadHeap, be: &Backend<SysOs>, n: usize) {
    for _ in 0..n {
        let blocks = take(heap, be, (1 << 20) / SIZE);
        give(heap, be, blocks);
    }
}

/// `n` allocations and frees of one 16-byte block through the fast paths: hits,
/// which count as objects handed out and never miss.
fn hits(heap: &ThreadHeap, be: &Backend<SysOs>, n: usize) {
    let c = class_for(16, 8).unwrap();
    let mut p = take_one(heap, be, c);
    for _ in 0..n {
        give_one(heap, be, c, p);
        p = take_one(heap, be, c);
    }
    give_one(heap, be, c, p);
}

fn take_one(heap: &ThreadHeap, be: &Backend<SysOs>, c: SizeClass) -> *mut u8 {
    // SAFETY: a live heap this thread owns; c is a valid class; the slow path
    // only on an empty list.
    let p = unsafe {
        match heap.pop(c) {
            p if p.is_null() => heap.alloc_slow(c, be),
            p => p,
        }
    };
    assert!(!p.is_null());
    p
}

fn give_one(heap: &ThreadHeap, be: &Backend<SysOs>, c: SizeClass, p: *mut u8) {
    // SAFETY: a class-c block this heap handed out, freed once; the heap is live
    // and this thread's.
    unsafe {
        if !heap.try_push(c, p) {
            heap.free_slow(c, p, be);
        }
    }
}

/// Past a batch, a list grows when it swings: a sweep that frees 1 MiB it had
/// just allocated grows it to hold the whole round at once (its first overflow
/// follows the allocations that emptied the list, the others continue the same
/// run of frees). A list whose length only drifts upwards, with allocations
/// between its overflows and never empty, stops growing and flushes.
#[test]
fn a_list_grows_when_it_swings_not_when_it_drifts() {
    let be = backend();
    let c = class_for(SIZE, 8).unwrap();
    let batch = CLASS_BATCH[c.index()] as u32;

    let heap = live_heap(DEFAULT_CACHE_BUDGET);
    rounds(&heap, be, 1);
    assert_eq!(heap.lists[c.index()].max.get() as usize, (1 << 20) / SIZE);
    // SAFETY: the heap is this thread's.
    unsafe {
        heap.validate(be).unwrap();
        heap.flush_all(be);
    }

    let heap = live_heap(DEFAULT_CACHE_BUDGET);
    let mut spare = take(&heap, be, 8 * batch as usize);
    while let Some(p) = spare.pop() {
        // One more free than allocations each time: the length drifts up.
        give_one(&heap, be, c, p);
        let q = take_one(&heap, be, c);
        give_one(&heap, be, c, q);
    }
    // The slow start to a batch, then one growth: the allocations before had
    // emptied the list. No growth after.
    assert_eq!(heap.lists[c.index()].max.get(), 2 * batch);
    // SAFETY: the heap is this thread's.
    unsafe {
        heap.validate(be).unwrap();
        heap.flush_all(be);
    }
}

/// A working set (1 MiB) that overflows the heap's budget (64 KiB) round after
/// round borrows room from the pool: the heap then caches more than its own
/// budget, within its cap, and a flush (as at thread exit) gives every byte back.
#[test]
fn an_overflowing_working_set_borrows_room_and_a_flush_gives_it_back() {
    const BASE: usize = 64 << 10;
    let be = backend();
    let heap = live_heap(BASE);
    rounds(&heap, be, 16);
    let borrowed = heap.borrowed_bytes();
    assert!(borrowed > 0, "no room borrowed");
    assert_eq!(be.cache_pool.lent(), borrowed);
    assert!(heap.max_bytes.get() > BASE && heap.budget_bytes() > BASE);
    assert!(heap.cached(class_for(SIZE, 8).unwrap()) * SIZE > BASE);
    assert_eq!(borrowed, BASE * BORROW_CAP_FACTOR, "1 MiB fills the cap");
    // SAFETY: the heap is this thread's.
    unsafe { heap.validate(be) }.unwrap();
    // SAFETY: the heap is this thread's.
    unsafe { heap.flush_all(be) };
    assert_eq!((heap.borrowed_bytes(), be.cache_pool.lent()), (0, 0));
    assert_eq!(heap.budget_bytes(), BASE);
    // SAFETY: the heap is this thread's.
    unsafe { heap.validate(be) }.unwrap();
}

/// Many heaps overflowing at once borrow no more than the pool's total together,
/// and give it all back when flushed.
#[test]
fn many_overflowing_heaps_stay_within_the_pool() {
    const BASE: usize = 64 << 10;
    const TOTAL: usize = 4 * BORROW_STEP;
    let be = backend();
    be.cache_pool.set_total(TOTAL);
    let heaps: Vec<_> = (0..8).map(|_| live_heap(BASE)).collect();
    for h in &heaps {
        rounds(h, be, 16);
    }
    let sum: usize = heaps.iter().map(|h| h.borrowed_bytes()).sum();
    assert_eq!(sum, be.cache_pool.lent());
    assert_eq!(sum, TOTAL, "the pool is spent, not overdrawn");
    for h in &heaps {
        assert!(h.max_bytes.get() <= h.budget_bytes());
        // SAFETY: the heap is this thread's.
        unsafe { h.validate(be) }.unwrap();
        // SAFETY: the heap is this thread's.
        unsafe { h.flush_all(be) };
    }
    assert_eq!(be.cache_pool.lent(), 0);
}

/// A heap whose slow paths keep finding room to spare gives a step back every
/// `CALM_EVENTS` of them, lowering its maxima to fit; a new budget gives back the
/// rest.
#[test]
fn a_calm_heap_gives_back_a_step_at_a_time() {
    const BASE: usize = 64 << 10;
    let be = backend();
    let heap = live_heap(BASE);
    rounds(&heap, be, 16);
    let borrowed = heap.borrowed_bytes();
    assert!(borrowed > BORROW_STEP);
    for _ in 0..CALM_EVENTS {
        heap.tick_calm(be);
    }
    assert_eq!(heap.borrowed_bytes(), borrowed - BORROW_STEP);
    assert_eq!(be.cache_pool.lent(), borrowed - BORROW_STEP);
    assert!(heap.max_bytes.get() <= heap.budget_bytes());
    // SAFETY: the heap is this thread's.
    unsafe { heap.validate(be) }.unwrap();
    // SAFETY: the heap is this thread's, live.
    unsafe { heap.set_budget(BASE, be) };
    assert_eq!((heap.borrowed_bytes(), be.cache_pool.lent()), (0, 0));
    // SAFETY: the heap is this thread's.
    unsafe { heap.flush_all(be) };
}

/// The same working set in a heap that hands out thousands of objects for each
/// miss (calm) neither borrows nor takes room from its other lists: its misses
/// cost it nothing measurable, and the room would only hold objects.
#[test]
fn a_calm_heap_borrows_nothing() {
    const BASE: usize = 64 << 10;
    let be = backend();
    let heap = live_heap(BASE);
    for _ in 0..16 {
        rounds(&heap, be, 1);
        hits(&heap, be, 20_000);
    }
    assert_eq!((heap.borrowed_bytes(), be.cache_pool.lent()), (0, 0));
    assert!(heap.max_bytes.get() <= BASE);
    // SAFETY: the heap is this thread's.
    unsafe {
        heap.validate(be).unwrap();
        heap.flush_all(be);
    }
}

/// A heap that borrowed while hot gives the room back, a step at each measure of
/// its miss rate, once it turns calm.
#[test]
fn a_heap_that_turns_calm_gives_its_room_back() {
    const BASE: usize = 64 << 10;
    let be = backend();
    let heap = live_heap(BASE);
    rounds(&heap, be, 16);
    assert!(heap.borrowed_bytes() > 0);
    for _ in 0..64 {
        rounds(&heap, be, 1);
        hits(&heap, be, 20_000);
    }
    assert_eq!((heap.borrowed_bytes(), be.cache_pool.lent()), (0, 0));
    assert!(heap.max_bytes.get() <= BASE);
    // SAFETY: the heap is this thread's.
    unsafe {
        heap.validate(be).unwrap();
        heap.flush_all(be);
    }
}

/// A heap that frees blocks another heap allocated (a consumer) keeps at most a
/// batch of the class and borrows nothing: the rest goes to the central tier, where
/// the allocating heap refills. Its own allocations then let the list grow again.
#[test]
fn a_heap_that_only_frees_a_class_keeps_a_batch_of_it() {
    let be = backend();
    let producer = live_heap(DEFAULT_CACHE_BUDGET);
    let consumer = live_heap(DEFAULT_CACHE_BUDGET);
    let c = class_for(SIZE, 8).unwrap();
    let batch = CLASS_BATCH[c.index()] as usize;
    let blocks = take(&producer, be, 8 * batch);
    give(&consumer, be, blocks);
    assert!(consumer.cached(c) <= batch, "{} cached", consumer.cached(c));
    assert_eq!(consumer.borrowed_bytes(), 0);
    // SAFETY: the heaps are this thread's.
    unsafe { consumer.validate(be) }.unwrap();
    // Once it allocates the class itself, its list may hold as much as it took.
    let mine = take(&consumer, be, 4 * batch);
    give(&consumer, be, mine);
    assert!(consumer.cached(c) > batch, "{} cached", consumer.cached(c));
    // SAFETY: the heaps are this thread's.
    unsafe {
        consumer.validate(be).unwrap();
        consumer.flush_all(be);
        producer.flush_all(be);
    }
}
