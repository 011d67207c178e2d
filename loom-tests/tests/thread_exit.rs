//! Thread exit: a thread's heap is flushed (every cached object back to the central
//! tier, in batches) and pooled for the next thread, while another thread frees into
//! and refills the same class through its own cache, frees objects the first thread
//! allocated (remote frees), and takes a heap from the pool.
//!
//! Properties: a heap handed to a new thread holds nothing of its previous owner's;
//! no object is held by two threads, or lost: at the end every page is back in the
//! page heap and every chunk back to the OS, and no thread heap is live.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{FakeOs, assert_all_returned, assert_distinct, assert_objects_of_class, model};
use strata::internals::{Backend, NUM_CLASSES, SizeClass, ThreadHeap};

/// 64-byte objects: four to a span, batches of two.
const C: SizeClass = SizeClass(0);

/// The allocator's own paths: the fast path, and its slow path on a miss.
fn alloc(be: &Backend<FakeOs>, h: &ThreadHeap) -> usize {
    // SAFETY: C is a valid class; the heap is this thread's.
    let p = unsafe { h.pop(C) };
    // SAFETY: the heap is this thread's, and live.
    let p = if p.is_null() {
        unsafe { h.alloc_slow(C, be) }
    } else {
        p
    };
    assert!(!p.is_null());
    p as usize
}

fn free(be: &Backend<FakeOs>, h: &ThreadHeap, p: usize) {
    // SAFETY: a class-C object the caller gives up; the heap is this thread's.
    unsafe {
        if !h.try_push(C, p as *mut u8) {
            h.free_slow(C, p as *mut u8, be);
        }
    }
}

/// A heap for the calling thread, checked to be empty.
fn start_thread(be: &Backend<FakeOs>) -> *mut ThreadHeap {
    let h = be.new_thread_heap();
    assert!(!h.is_null());
    // SAFETY: a live heap given to this thread alone.
    let heap = unsafe { &*h };
    for c in 0..NUM_CLASSES {
        assert_eq!(
            heap.cached(SizeClass(c as u8)),
            0,
            "a new thread's heap still caches its previous owner's objects"
        );
    }
    h
}

#[test]
fn thread_exit_flush_racing_frees_and_refills_keeps_every_object() {
    model(|| {
        let be = Arc::new(Backend::new(FakeOs::new()));
        // Two objects cached per thread at most, so frees overflow into flushes.
        be.set_cache_budget(2 * C.size_bytes());
        // Objects allocated here, freed remotely by the other threads.
        let remote: Vec<usize> = (0..3).map(|_| be.alloc_small_direct(C) as usize).collect();
        let (remote, remote3) = (remote[..2].to_vec(), remote[2]);
        let exiting = {
            let be = be.clone();
            thread::spawn(move || {
                let hp = start_thread(&be);
                // SAFETY: the heap is this thread's alone until it retires it.
                let h = unsafe { &*hp };
                let mine: Vec<usize> = (0..2).map(|_| alloc(&be, h)).collect();
                assert_objects_of_class(&be, C, &mine);
                for p in mine {
                    free(&be, h, p);
                }
                // SAFETY: the heap is ours and this thread is done with it.
                unsafe { be.retire_thread_heap(hp) };
            })
        };
        let other = {
            let be = be.clone();
            thread::spawn(move || {
                let hp = start_thread(&be);
                // SAFETY: the heap is this thread's alone until it retires it.
                let h = unsafe { &*hp };
                for p in remote {
                    free(&be, h, p);
                }
                let mine: Vec<usize> = (0..3).map(|_| alloc(&be, h)).collect();
                assert_distinct("other thread", &mine);
                assert_objects_of_class(&be, C, &mine);
                for p in mine {
                    free(&be, h, p);
                }
                // SAFETY: as above.
                unsafe { be.retire_thread_heap(hp) };
            })
        };
        // A third thread starts, frees one remote object and exits: its heap may be
        // the exiting thread's, and its flush races the other two.
        let third = {
            let be = be.clone();
            thread::spawn(move || {
                let hp = start_thread(&be);
                // SAFETY: the heap is this thread's alone until it retires it.
                let h = unsafe { &*hp };
                free(&be, h, remote3);
                // SAFETY: as above.
                unsafe { be.retire_thread_heap(hp) };
            })
        };
        exiting.join().unwrap();
        other.join().unwrap();
        third.join().unwrap();
        let created = be.thread_heaps().1;
        assert!(
            (1..=3).contains(&created),
            "{created} heaps for three threads"
        );
        assert_all_returned(&be);
    });
}

/// After its heap is retired a thread still frees (glibc frees its own blocks after
/// the key destructors ran): the tear-down points it at the `DEAD` sentinel, whose
/// slow paths go straight to the central tier (`free_small_direct`,
/// `alloc_small_direct`). That direct free races another thread that takes the
/// pooled heap and refills the same class.
///
/// Property: the late free is neither lost nor handed out twice: at the end every
/// page is back in the page heap.
#[test]
fn a_free_after_thread_exit_goes_to_the_central_tier() {
    model(|| {
        let be = Arc::new(Backend::new(FakeOs::new()));
        be.set_cache_budget(2 * C.size_bytes());
        let exiting = {
            let be = be.clone();
            thread::spawn(move || {
                let hp = start_thread(&be);
                // SAFETY: the heap is this thread's alone until it retires it.
                let h = unsafe { &*hp };
                let (a, b) = (alloc(&be, h), alloc(&be, h));
                free(&be, h, a);
                // SAFETY: the heap is ours and this thread is done with it.
                unsafe { be.retire_thread_heap(hp) };
                // What the DEAD sentinel's slow paths do for this thread from now on.
                // SAFETY: a class-C object of ours, given up.
                unsafe { be.free_small_direct(C, b as *mut u8) };
                let late = be.alloc_small_direct(C);
                assert!(!late.is_null());
                // SAFETY: as above.
                unsafe { be.free_small_direct(C, late) };
            })
        };
        let next = {
            let be = be.clone();
            thread::spawn(move || {
                let hp = start_thread(&be);
                // SAFETY: the heap is this thread's alone until it retires it.
                let h = unsafe { &*hp };
                let mine: Vec<usize> = (0..2).map(|_| alloc(&be, h)).collect();
                assert_distinct("next thread", &mine);
                for p in mine {
                    free(&be, h, p);
                }
                // SAFETY: as above.
                unsafe { be.retire_thread_heap(hp) };
            })
        };
        exiting.join().unwrap();
        next.join().unwrap();
        assert_all_returned(&be);
    });
}
