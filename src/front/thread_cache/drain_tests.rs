//! The drain of a sleeping thread's heap (`drain`), step by step, with the OS's
//! view of the owner given by the test: a stand-in slot, an owner that sleeps or
//! runs, idle passes, and the owner's settle after.

use super::drain::KEEP;
use super::*;
use crate::backend::Backend;
use crate::os::SysOs;
use crate::sync::AtomicPtr;

fn backend() -> &'static Backend<SysOs> {
    Box::leak(Box::new(Backend::new(SysOs)))
}

static DRAINED_SENTINEL: ThreadHeap = ThreadHeap::new(HeapState::Drained);

fn sentinel() -> *mut ThreadHeap {
    &DRAINED_SENTINEL as *const ThreadHeap as *mut ThreadHeap
}

/// A live heap whose class-`c` list holds `n` objects (allocated through it, then
/// freed into it), drainable with `slot` as its owner's TLS slot.
fn heap_with(
    c: SizeClass,
    n: usize,
    be: &Backend<SysOs>,
    slot: *mut *mut ThreadHeap,
) -> Box<ThreadHeap> {
    let heap = Box::new(ThreadHeap::new(HeapState::Pooled));
    let mut objs = Vec::new();
    // SAFETY: a fresh heap this thread owns; what it hands out comes back to it.
    unsafe {
        heap.activate(DEFAULT_CACHE_BUDGET);
        for _ in 0..n {
            let mut p = heap.pop(c);
            if p.is_null() {
                p = heap.alloc_slow(c, be);
            }
            assert!(!p.is_null());
            objs.push(p);
        }
        for p in objs {
            if !heap.try_push(c, p) {
                heap.free_slow(c, p, be);
            }
        }
        heap.validate(be).unwrap();
    }
    // SAFETY: the caller's slot outlives the heap's use in the test.
    unsafe { *slot = ptr::from_ref(&*heap).cast_mut() };
    heap.enable_drain(4242, slot.cast::<AtomicPtr<ThreadHeap>>());
    heap
}

/// Passes `passes` times over the heap as the purge thread does; the bytes the
/// last one drained.
fn passes(heap: &ThreadHeap, k: u32, asleep: Option<bool>, be: &Backend<SysOs>) -> usize {
    let mut bytes = 0;
    for _ in 0..k {
        // SAFETY: this test is the only drainer (the pool lock's role), the sentinel
        // is a `Drained` one, the heap's objects are `be`'s.
        bytes = unsafe {
            heap.try_drain_idle(
                sentinel(),
                2,
                |tid| {
                    assert_eq!(tid, 4242);
                    asleep
                },
                be,
            )
        };
    }
    bytes
}

#[test]
fn a_sleeping_owners_heap_keeps_two_objects_a_list_and_the_owner_settles() {
    let be = backend();
    let c = SizeClass(3);
    let mut slot: *mut ThreadHeap = ptr::null_mut();
    let heap = heap_with(c, 200, be, &mut slot);
    let cached = heap.cached(c);
    assert!(cached > KEEP as usize, "{cached}");
    let returned = heap.counters().returned as usize;
    // The first pass records the activity, the next two find it unchanged.
    assert_eq!(
        passes(&heap, 2, Some(true), be),
        0,
        "drained before two idle passes"
    );
    let bytes = passes(&heap, 1, Some(true), be);
    assert_eq!(bytes, (cached - KEEP as usize) * c.size_bytes());
    assert_eq!(slot, sentinel(), "the owner's slot points at the sentinel");
    assert_eq!(heap.cached(c), KEEP as usize);
    assert!(heap.was_drained());
    let k = heap.counters();
    assert_eq!(k.returned as usize - returned, cached - KEEP as usize);
    // A drained heap is not drained again until its owner used it.
    assert_eq!(passes(&heap, 3, Some(true), be), 0);
    // The owner (its slow path, with the lock) settles and goes on: both kept
    // objects come out of the fast path, then a refill.
    let _g = heap.lock_for_owner();
    // SAFETY: this thread owns the heap and holds its drain lock.
    unsafe {
        heap.settle();
        assert!(!heap.was_drained());
        heap.validate(be).unwrap();
        let a = heap.pop(c);
        let b = heap.pop(c);
        assert!(!a.is_null() && !b.is_null() && a != b);
        assert!(heap.pop(c).is_null(), "more than two kept");
        let d = heap.alloc_slow(c, be);
        assert!(!d.is_null() && d != a && d != b);
        for p in [a, b, d] {
            if !heap.try_push(c, p) {
                heap.free_slow(c, p, be);
            }
        }
        heap.validate(be).unwrap();
        heap.flush_all(be);
    }
}

#[test]
fn an_owner_that_runs_or_cannot_be_seen_is_not_drained_and_its_slot_comes_back() {
    let be = backend();
    let c = SizeClass(5);
    for asleep in [Some(false), None] {
        let mut slot: *mut ThreadHeap = ptr::null_mut();
        let heap = heap_with(c, 100, be, &mut slot);
        let me = ptr::from_ref(&*heap).cast_mut();
        let cached = heap.cached(c);
        assert_eq!(passes(&heap, 4, asleep, be), 0);
        assert_eq!(slot, me, "the slot was not put back");
        assert_eq!(heap.cached(c), cached);
        assert!(!heap.was_drained());
        // SAFETY: this thread owns the heap.
        unsafe {
            heap.validate(be).unwrap();
            heap.flush_all(be);
        }
    }
}

#[test]
fn a_heap_in_use_between_passes_or_in_a_slow_path_is_left_alone() {
    let be = backend();
    let c = SizeClass(2);
    let mut slot: *mut ThreadHeap = ptr::null_mut();
    let heap = heap_with(c, 100, be, &mut slot);
    let me = ptr::from_ref(&*heap).cast_mut();
    // Used between every two passes: never idle long enough.
    for _ in 0..5 {
        assert_eq!(passes(&heap, 1, Some(true), be), 0);
        // SAFETY: this thread owns the heap; the object goes straight back.
        unsafe {
            let p = heap.pop(c);
            assert!(heap.try_push(c, p));
        }
    }
    // The owner holds the lock (a slow path): skipped, slot untouched.
    {
        let _g = heap.lock_for_owner();
        assert_eq!(passes(&heap, 3, Some(true), be), 0);
        assert_eq!(slot, me);
    }
    // Drains off (the owner's exit): nothing.
    heap.disable_drain();
    assert_eq!(passes(&heap, 3, Some(true), be), 0);
    assert_eq!(slot, me);
    // SAFETY: this thread owns the heap.
    unsafe { heap.flush_all(be) };
}

#[test]
fn the_slot_of_an_exiting_owner_is_not_touched() {
    let be = backend();
    let c = SizeClass(4);
    let mut slot: *mut ThreadHeap = ptr::null_mut();
    let heap = heap_with(c, 100, be, &mut slot);
    // The exit path points the slot at another sentinel before it retires the
    // heap: the swap fails and nothing moves.
    static DEAD_LIKE: ThreadHeap = ThreadHeap::new(HeapState::Dead);
    let dead = &DEAD_LIKE as *const ThreadHeap as *mut ThreadHeap;
    slot = dead;
    let cached = heap.cached(c);
    assert_eq!(passes(&heap, 4, Some(true), be), 0);
    assert_eq!(slot, dead);
    assert_eq!(heap.cached(c), cached);
    // SAFETY: this thread owns the heap.
    unsafe { heap.flush_all(be) };
}

/// Allocates `n` objects of class `c` from the central tier directly and returns
/// them (the caller frees them): after a drain, these come from what it moved.
fn take_from_central(c: SizeClass, n: usize, be: &Backend<SysOs>) -> Vec<*mut u8> {
    (0..n)
        .map(|_| {
            let p = be.alloc_small_direct(c);
            assert!(!p.is_null());
            p
        })
        .collect()
}

/// The module docs' stopped case, a pop: the owner loaded the head `e0` and its
/// link `e1`, then stopped (a signal handler that blocks); the drain runs; the
/// owner resumes and stores the head and clears `e0`, as `pop` does. Neither `e0`
/// (handed out) nor `e1` (the new head) is among what the drain moved, and the
/// owner's settle finds a consistent list.
#[test]
fn a_pop_in_flight_through_a_drain_keeps_what_it_touches() {
    let be = backend();
    let c = SizeClass(3);
    let mut slot: *mut ThreadHeap = ptr::null_mut();
    let heap = heap_with(c, 200, be, &mut slot);
    let cached = heap.cached(c);
    let list = &heap.lists[c.index()];
    // The pop's first half.
    let e0 = list.head.raw();
    // SAFETY: the heap's own list head (invariant 1), decoded as `pop` does.
    let e1 = unsafe { FreeObj::pop_next(e0, c, heap.link_key.get(), heap.link_mask.get()) }
        .expect("a non-empty list");
    let moved = passes(&heap, 3, Some(true), be);
    assert_eq!(moved, (cached - KEEP as usize) * c.size_bytes());
    // The pop's second half, on the real heap, as the stopped owner resumes it.
    list.head.set_raw(e1);
    // SAFETY: `e0` is the object the pop hands out.
    unsafe { FreeObj::clear(e0) };
    list.len.sub(1);
    let from_central = take_from_central(c, cached + 8, be);
    for &p in &from_central {
        assert_ne!(p, e0.cast(), "the object the pop handed out was drained");
        assert_ne!(p, e1.cast(), "the pop's new head was drained");
    }
    heap.with_drain_lock(|| {
        // SAFETY: this thread owns the heap and holds its drain lock.
        unsafe {
            heap.settle();
            heap.validate(be).unwrap();
            assert_eq!(heap.cached(c), 1, "e1 alone");
            assert_eq!(heap.pop(c), e1.cast());
            assert!(heap.pop(c).is_null());
        }
    });
    // SAFETY: every object here is ours and free now.
    unsafe {
        for p in from_central.into_iter().chain([e0.cast(), e1.cast()]) {
            be.free_small_direct(c, p);
        }
        heap.flush_all(be);
    }
    be.validate().unwrap();
}

/// The same for a push: the owner loaded the head `e0` for the new object `x`'s
/// link, stopped, the drain ran, and the push completes: `x` links to `e0` and
/// `e1`, which the drain left, and nothing of the list is in the central tier.
#[test]
fn a_push_in_flight_through_a_drain_links_to_what_the_drain_left() {
    let be = backend();
    let c = SizeClass(3);
    let mut slot: *mut ThreadHeap = ptr::null_mut();
    let heap = heap_with(c, 200, be, &mut slot);
    let cached = heap.cached(c);
    let x = be.alloc_small_direct(c).cast::<FreeObj>();
    assert!(!x.is_null());
    let list = &heap.lists[c.index()];
    // The push's first half: the salt, the head loaded.
    let salt = FreeObj::salt(x, heap.link_key.get());
    let e0 = list.head.raw();
    assert!(passes(&heap, 3, Some(true), be) > 0);
    // The second half: the link, then the head.
    // SAFETY: `x` is the object being freed, ours; the salt is its own.
    unsafe { FreeObj::set_next_salted(x, e0, salt) };
    list.head.set_raw(x);
    list.len.add(1);
    let from_central = take_from_central(c, cached + 8, be);
    heap.with_drain_lock(|| {
        // SAFETY: this thread owns the heap and holds its drain lock.
        unsafe {
            heap.settle();
            heap.validate(be).unwrap();
            assert_eq!(heap.cached(c), 1 + KEEP as usize);
            let kept: Vec<*mut u8> = (0..3).map(|_| heap.pop(c)).collect();
            assert_eq!(kept[0], x.cast());
            assert_eq!(kept[1], e0.cast());
            assert!(heap.pop(c).is_null());
            for p in &kept {
                assert!(!from_central.contains(p), "{p:?} both cached and drained");
            }
            for p in kept {
                be.free_small_direct(c, p);
            }
        }
    });
    // SAFETY: every object here is ours and free now.
    unsafe {
        for p in from_central {
            be.free_small_direct(c, p);
        }
        heap.flush_all(be);
    }
    be.validate().unwrap();
}
