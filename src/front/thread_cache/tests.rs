//! The thread heap's sharing: sentinels and counter readers.

use super::*;

static SENTINEL: ThreadHeap = ThreadHeap::new(HeapState::Empty);

/// A raw pointer handed to a scoped thread, provenance kept (Miri checks it).
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: the tests say who may use the pointee when.
unsafe impl<T> Send for SendPtr<T> {}

/// Invariant 7: threads running both fast paths on one shared sentinel, through
/// a `*mut` as the TLS slot holds it (as `global` does), only read it: every pop
/// misses, every push is refused, the object pushed is not written, and the
/// sentinel is still empty with `max == 0` after. Under Miri
/// (`cargo +nightly miri test --lib sentinel`) this is also the check that no
/// `&mut` is made of the shared static: with `pop(&mut self)` Miri reports the
/// retag of a shared-read-only static as `Unique`.
#[test]
fn sentinel_fast_paths_only_read_the_shared_sentinel() {
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(move || {
                let h = &SENTINEL as *const ThreadHeap as *mut ThreadHeap;
                let mut block = [0x5au8; 64];
                for ci in 0..NUM_CLASSES {
                    let c = SizeClass(ci as u8);
                    // SAFETY: a valid class; a sentinel, which the fast paths only
                    // read (invariant 7); the block is ours and large enough.
                    unsafe {
                        assert!((*h).pop(c).is_null());
                        assert!(!(*h).try_push(c, block.as_mut_ptr()));
                    }
                }
                assert!(block.iter().all(|&b| b == 0x5a), "refused push wrote");
            });
        }
    });
    assert!(SENTINEL.is_empty());
    assert_eq!(SENTINEL.state(), HeapState::Empty);
    assert_eq!(SENTINEL.counters(), HeapCounters::default());
    assert_eq!(SENTINEL.max_bytes.get(), 0);
}

/// The owner pushes and pops through its fast paths while another thread reads
/// the heap's counters, as `stats()` does through the list of all heaps: the
/// reader sees at most the objects the list can hold, and the counters add up at
/// the end. Under Miri this is the check that the owner's accesses and the
/// reader's shared reference may coexist (no `&mut ThreadHeap`).
#[test]
fn owner_fast_paths_and_a_counter_reader_share_one_heap() {
    const N: usize = 4;
    let heap = Box::new(ThreadHeap::new(HeapState::Pooled));
    // SAFETY: a fresh heap this thread owns until the scope below.
    unsafe { heap.activate(DEFAULT_CACHE_BUDGET) };
    let c = SizeClass(0);
    heap.lists[0].max.set(N as u32);
    let mut blocks = [[0u64; 4]; N];
    let bp = SendPtr(blocks.as_mut_ptr());
    let rounds = if cfg!(miri) { 8 } else { 10_000 };
    let h = &*heap;
    std::thread::scope(|s| {
        s.spawn(move || {
            let bp = bp;
            for _ in 0..rounds {
                for i in 0..N {
                    // SAFETY: i < N, inside `blocks`.
                    let p = unsafe { bp.0.add(i) }.cast::<u8>();
                    // SAFETY: the heap is this thread's (the main thread only
                    // reads atomics meanwhile); the blocks are free and ours.
                    assert!(unsafe { h.try_push(c, p) });
                }
                for _ in 0..N {
                    // SAFETY: the heap is this thread's (the main thread only
                    // reads atomics meanwhile); c is a valid class.
                    assert!(!unsafe { h.pop(c) }.is_null());
                }
            }
        });
        for _ in 0..rounds {
            let k = h.counters();
            assert!(k.cached <= N as u64 && h.cached(c) <= N);
            assert!(k.allocs <= (rounds * N) as u64);
        }
    });
    let k = heap.counters();
    assert_eq!(
        (k.allocs, k.cached, k.received),
        ((rounds * N) as u64, 0, 0)
    );
}

/// Slow start of refills (`FreeList::refill_want`): a heap's first refill of a class
/// of 2 KiB objects carves what fits in `FIRST_REFILL_BYTES` (two objects, not the
/// batch of 32), and each later refill twice as many, up to the batch; a flushed
/// heap starts small again.
#[test]
fn first_refills_are_small_and_double_up_to_the_batch() {
    use crate::backend::Backend;
    use crate::os::SysOs;
    use crate::size_class::{FIRST_REFILL_BYTES, class_for};
    let be: &'static Backend<SysOs> = Box::leak(Box::new(Backend::new(SysOs)));
    let heap = Box::new(ThreadHeap::new(HeapState::Pooled));
    // SAFETY: a fresh heap this thread owns.
    unsafe { heap.activate(DEFAULT_CACHE_BUDGET) };
    let c = class_for(2048, 8).unwrap();
    let ci = c.index();
    assert_eq!(c.size_bytes(), 2048);
    let mut want = FIRST_REFILL_BYTES / 2048;
    let mut held = Vec::new();
    for _ in 0..7 {
        // SAFETY: a live heap this thread owns, its class-c list empty.
        let p = unsafe { heap.alloc_slow(c, be) };
        assert!(!p.is_null());
        held.push(p);
        assert_eq!(heap.cached(c), want - 1, "refill of {want} objects");
        // Take the rest, so that the next call refills again.
        for _ in 1..want {
            // SAFETY: the heap is this thread's and c a valid class; the list
            // holds objects.
            held.push(unsafe { heap.pop(c) });
        }
        want = (want * 2).min(c.batch());
    }
    assert_eq!(heap.lists[ci].refill_want.get() as usize, c.batch());
    for p in held {
        // SAFETY: blocks of class c this heap handed out, given back once.
        unsafe { heap.free_slow(c, p, be) };
    }
    // SAFETY: the heap is this thread's.
    unsafe { heap.flush_all(be) };
    assert_eq!(heap.lists[ci].refill_want.get(), 0);
}
