//! A sleeping thread's cache drained by another thread (`front::thread_cache::drain`):
//! the drainer swaps the owner's slot to the `Drained` sentinel, fences, reads the
//! owner's scheduler state and, if it sleeps, moves the heap's lists to the central
//! tier; the owner, awake again, finds the sentinel and takes its slow path (the
//! heap's drain lock, `settle`, the slot put back).
//!
//! What loom cannot run is stood in for: the kernel's view of the owner is an
//! atomic the owner stores before it blocks (Release: its operations before) and
//! after it wakes (then a SeqCst fence, as the context switch gives), read by the
//! drainer's `sleeping` closure; the owner's TLS slot is a loom atomic the owner
//! loads at every operation, as `global` loads its slot; `global::take_back_drained_heap`'s
//! recovery (lock, settle, slot back) is mirrored in `op_slow`. The drain itself is
//! the shipped `ThreadHeap::try_drain_idle`. Not modelled: an operation in flight
//! while the owner shows asleep (a blocking signal handler; the two objects each
//! list keeps are for that), the /proc read, several heaps.
//!
//! Property: the owner's fast paths never run beside the drain (loom would report
//! the heap's owner cell written by both), no object is lost or handed out twice:
//! at the end every page is back in the page heap.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicPtr, AtomicU8, Ordering, fence};
use loom::thread;
use loom_tests::{FakeOs, assert_all_returned, assert_distinct, model};
use strata::internals::{Backend, HeapState, SizeClass, ThreadHeap};

/// 64-byte objects: four to a span, batches of two.
const C: SizeClass = SizeClass(0);

const AWAKE: u8 = 0;
const ASLEEP: u8 = 1;

/// The `Drained` sentinel the owner's slot is pointed at.
fn sentinel() -> *mut ThreadHeap {
    // Leaked: loom's cells cannot live in a static; one per execution is fine.
    Box::leak(Box::new(ThreadHeap::new(HeapState::Drained)))
}

/// The owner's side: its heap, its slot.
struct Owner {
    be: Arc<Backend<FakeOs>>,
    heap: usize,
    slot: Arc<AtomicPtr<ThreadHeap>>,
}

impl Owner {
    fn h(&self) -> &ThreadHeap {
        // SAFETY: the heap outlives the model (never freed: metadata arena).
        unsafe { &*(self.heap as *const ThreadHeap) }
    }

    /// The slow path as `global::own_heap` and `take_back_drained_heap` take it: the drain lock, `settle`, the
    /// slot back at the heap if it held the sentinel, then `f`.
    fn op_slow<R>(&self, saw_sentinel: bool, f: impl FnOnce(&ThreadHeap) -> R) -> R {
        let h = self.h();
        h.with_drain_lock(|| {
            // SAFETY: the heap is this thread's and its drain lock is held.
            unsafe { h.settle() };
            if saw_sentinel {
                self.slot
                    .store(self.heap as *mut ThreadHeap, Ordering::Relaxed);
            }
            f(h)
        })
    }

    fn alloc(&self) -> usize {
        let cur = self.slot.load(Ordering::Relaxed);
        let mine = cur as usize == self.heap;
        if mine {
            // SAFETY: the slot holds this thread's heap: the fast path.
            let p = unsafe { self.h().pop(C) };
            if !p.is_null() {
                return p as usize;
            }
        }
        let p = self.op_slow(!mine, |h| {
            // SAFETY: this thread's live heap, its drain lock held; the fast path
            // first where it was the sentinel's that missed.
            unsafe {
                let p = if mine {
                    core::ptr::null_mut()
                } else {
                    h.pop(C)
                };
                if p.is_null() {
                    h.alloc_slow(C, &self.be)
                } else {
                    p
                }
            }
        });
        assert!(!p.is_null());
        p as usize
    }

    fn free(&self, p: usize) {
        let cur = self.slot.load(Ordering::Relaxed);
        let mine = cur as usize == self.heap;
        // SAFETY: the slot holds this thread's heap; a class-C object given up.
        if mine && unsafe { self.h().try_push(C, p as *mut u8) } {
            return;
        }
        self.op_slow(!mine, |h| {
            // SAFETY: this thread's live heap, its drain lock held; a class-C
            // object given up.
            unsafe {
                if mine || !h.try_push(C, p as *mut u8) {
                    h.free_slow(C, p as *mut u8, &self.be);
                }
            }
        });
    }
}

#[test]
fn a_drain_of_a_sleeping_owner_never_meets_its_fast_paths() {
    model(|| {
        let be = Arc::new(Backend::new(FakeOs::new()));
        // Room for four objects: the list holds more than the two a drain keeps.
        be.set_cache_budget(4 * C.size_bytes());
        let hp = be.new_thread_heap();
        assert!(!hp.is_null());
        let slot = Arc::new(AtomicPtr::new(hp));
        // SAFETY: the heap is live (above); the slot outlives the model's threads.
        unsafe { (*hp).enable_drain(1, Arc::as_ptr(&slot)) };
        let state = Arc::new(AtomicU8::new(AWAKE));
        let sentinel = sentinel() as usize;
        let owner = {
            let o = Owner {
                be: be.clone(),
                heap: hp as usize,
                slot: slot.clone(),
            };
            let state = state.clone();
            thread::spawn(move || {
                let mine: Vec<usize> = (0..4).map(|_| o.alloc()).collect();
                assert_distinct("before the sleep", &mine);
                for p in mine {
                    o.free(p);
                }
                // Blocks in the kernel: everything before is the drainer's to see.
                state.store(ASLEEP, Ordering::Release);
                // Wakes: the context switch is a full barrier.
                state.store(AWAKE, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                let again: Vec<usize> = (0..3).map(|_| o.alloc()).collect();
                assert_distinct("after the sleep", &again);
                for p in again {
                    o.free(p);
                }
                // Exit: the slot leaves the heap (DEAD), then the heap retires
                // (drain lock, drains off, settle, flush).
                o.slot.store(core::ptr::null_mut(), Ordering::Relaxed);
                // SAFETY: the heap is this thread's and it is done with it.
                unsafe { o.be.retire_thread_heap(o.heap as *mut ThreadHeap) };
            })
        };
        let drainer = {
            let be = be.clone();
            let state = state.clone();
            thread::spawn(move || {
                // SAFETY: the only drainer (the pool lock's role); a `Drained`
                // sentinel; the heap's objects are `be`'s; the heap is never freed.
                unsafe {
                    (*hp).try_drain_idle(
                        sentinel as *mut ThreadHeap,
                        0,
                        |_| Some(state.load(Ordering::Acquire) == ASLEEP),
                        &be,
                    )
                }
            })
        };
        owner.join().unwrap();
        if drainer.join().unwrap() > 0 {
            DRAINS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        EXECUTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert_all_returned(&be);
    });
    let (drains, runs) = (
        DRAINS.load(std::sync::atomic::Ordering::Relaxed),
        EXECUTIONS.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!("{drains} of {runs} executions drained the heap");
    assert!(drains > 0, "no execution drained: the model checks nothing");
}

/// Executions, and those in which the drainer drained (outside loom: counted
/// across the model's executions).
static EXECUTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static DRAINS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
