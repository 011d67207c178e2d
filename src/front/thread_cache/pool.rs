//! The thread-cache front end's pool of heaps: every heap ever created, the free
//! ones waiting for a new thread, and the byte budget new heaps start with.
//!
//! Called by `global` (thread set-up and tear-down, through [`super::super::Allocator`])
//! and read by `stats` (every heap's counters) from above; calls the backend only
//! for a heap's memory (the metadata arena) and, at retirement, through the heap's
//! flush.

use super::{DEFAULT_CACHE_BUDGET, HeapState, ThreadHeap};
use crate::Violation;
use crate::backend::Backend;
use crate::check::check;
use crate::os::Os;
use crate::sync::{AtomicUsize, LockRank, Ordering, RawLock, UnsafeCell};
use core::marker::PhantomData;
use core::ptr;

/// Invariants: 1. every heap ever created is either live (owned by a thread) or in
/// the `free` list, Pooled and with empty lists: `live + |free| == created`.
/// 2. `all` links (through `all_next`) every heap ever created, `created` of them;
/// heaps are never freed, so statistics may read any of them at any time; under
/// the pool lock, `ThreadCaches::created_copy` equals `created`.
struct HeapPool {
    free: *mut ThreadHeap,
    all: *mut ThreadHeap,
    live: usize,
    created: usize,
}

/// The thread-cache front end's shared state: the pool of heaps under its lock
/// (ranked `HeapPool`, before every backend lock) and the budget of new heaps.
pub struct ThreadCaches {
    pool_lock: RawLock,
    pool: UnsafeCell<HeapPool>,
    /// The budget of new heaps XOR [`DEFAULT_CACHE_BUDGET`], so that the default is
    /// zero bytes and the process's statics stay all zero (in `.bss`, see
    /// `TransferStack`'s invariant 1).
    cache_budget: AtomicUsize,
    /// A copy of the pool's `created`, stored under the pool lock after each
    /// change, for readers that must not take the lock ([`ThreadCaches::heaps_created`]).
    created_copy: AtomicUsize,
}

// SAFETY: `pool` is only touched under `pool_lock` (HeapPool invariants); the heaps
// it links are reached by `&ThreadHeap` only, which is Sync.
unsafe impl Sync for ThreadCaches {}
// SAFETY: `pool` is only touched under `pool_lock` (HeapPool invariants), from
// whichever thread holds it; its raw pointers name metadata-arena memory, which is
// never freed (MetaArena invariant 2), so they stay valid on any thread.
unsafe impl Send for ThreadCaches {}

/// Every heap ever created, from the pool's `all` list (invariant 2: heaps are never
/// freed, and the list only grows at its head under the pool lock), for
/// `Allocator::with_heaps_and_classes_locked`; walk it as often as needed.
#[derive(Clone, Copy)]
pub struct AllHeaps<'a> {
    first: *mut ThreadHeap,
    /// Borrows the pool-lock guard's scope: the list cannot grow while it is walked.
    _pool_held: PhantomData<&'a ThreadHeap>,
}

impl<'a> AllHeaps<'a> {
    /// The heaps, newest first.
    pub fn iter(self) -> impl Iterator<Item = &'a ThreadHeap> {
        let mut h = self.first;
        core::iter::from_fn(move || {
            if h.is_null() {
                return None;
            }
            // SAFETY: by invariant 2 `h` is a heap that is never freed; `&ThreadHeap`
            // is shared (its owner also uses only `&`), and readers use only its
            // atomic counters, which any thread may read.
            let heap = unsafe { &*h };
            // SAFETY: the pool lock is held while this walk lasts (`_pool_held`).
            h = unsafe { heap.all_next() };
            Some(heap)
        })
    }
}

impl ThreadCaches {
    crate::sync::loom_const_fn! {
        /// An empty pool; new heaps get [`DEFAULT_CACHE_BUDGET`].
        pub fn new() -> ThreadCaches {
            ThreadCaches {
                pool_lock: RawLock::new(LockRank::HeapPool),
                pool: UnsafeCell::new(HeapPool {
                    free: ptr::null_mut(),
                    all: ptr::null_mut(),
                    live: 0,
                    created: 0,
                }),
                cache_budget: AtomicUsize::new(0),
                created_copy: AtomicUsize::new(0),
            }
        }
    }

    /// A live thread heap (recycled from the pool when possible); null if the OS
    /// refuses memory.
    pub fn new_thread_heap<O: Os>(&self, be: &Backend<O>) -> *mut ThreadHeap {
        self.new_thread_heap_within(be, usize::MAX)
            .unwrap_or(ptr::null_mut())
    }

    /// As [`ThreadCaches::new_thread_heap`], but only while fewer than `limit`
    /// heaps are live (checked and counted under the pool lock, so never more than
    /// `limit` at once); None otherwise.
    pub fn new_thread_heap_within<O: Os>(
        &self,
        be: &Backend<O>,
        limit: usize,
    ) -> Option<*mut ThreadHeap> {
        let _g = self.pool_lock.guard();
        // SAFETY: pool lock held, and every access to `pool` takes it: the only
        // reference to the pool while it lives (the heaps it links are reached by
        // `&ThreadHeap` only).
        let pool = self.pool.with_mut(|p| unsafe { &mut *p });
        if pool.live >= limit {
            return None;
        }
        let mut h = pool.free;
        if h.is_null() {
            h = be
                .alloc_metadata(core::mem::size_of::<ThreadHeap>(), 64)
                .cast();
            if h.is_null() {
                return Some(h);
            }
            // SAFETY: fresh arena memory sized and aligned for a ThreadHeap.
            unsafe {
                h.write(ThreadHeap::new(HeapState::Pooled));
                (*h).set_all_next(pool.all);
            }
            pool.all = h;
            pool.created += 1;
            // Relaxed: a count for `heaps_created`, which publishes nothing else.
            self.created_copy.store(pool.created, Ordering::Relaxed);
        } else {
            // SAFETY: pooled heaps are ours under the pool lock.
            pool.free = unsafe { (*h).pool_next() };
        }
        pool.live += 1;
        // SAFETY: `h` is a flushed heap that no thread uses (fresh, or just taken off
        // the pool under its lock); the caller becomes its owner.
        unsafe { (*h).activate(self.cache_budget.load(Ordering::Relaxed) ^ DEFAULT_CACHE_BUDGET) };
        Some(h)
    }

    /// Flushes a thread's heap and puts it in the pool for the next thread.
    ///
    /// # Safety
    /// `h` came from `new_thread_heap` and its thread will not use it again.
    pub unsafe fn retire_thread_heap<O: Os>(&self, h: *mut ThreadHeap, be: &Backend<O>) {
        // SAFETY: the caller hands the heap over: until it is pooled below, the
        // calling thread is its owner. Shared (`&`): statistics read its counters
        // through the list of all heaps meanwhile.
        let heap = unsafe { &*h };
        // Flush before pooling: once pooled, the next thread may take the heap.
        // Mutant: the heap goes into the pool (a new thread may be using it) while
        // its old objects are still being flushed.
        let flush_first = !cfg!(strata_mutant = "retire_pools_before_flush");
        let flush = || {
            // The drain lock: no drain may be under way or start (drains are off
            // from here on, before the thread's TLS goes away), and one that
            // happened is settled before the flush counts the lists.
            let _g = heap.lock_for_owner();
            heap.disable_drain();
            // SAFETY: we own the heap (above; the mutant breaks this on purpose)
            // and hold its drain lock; a live heap, not a sentinel.
            unsafe {
                heap.settle();
                heap.flush_all(be);
                heap.retire();
            }
        };
        if flush_first {
            flush();
        }
        let g = self.pool_lock.guard();
        // SAFETY: pool lock held, and every access to `pool` takes it: the only
        // reference to the pool while it lives (the heaps it links are reached by
        // `&ThreadHeap` only).
        let pool = self.pool.with_mut(|p| unsafe { &mut *p });
        // SAFETY: pool lock held, and the heap is still ours (not yet on the list).
        unsafe { heap.set_pool_next(pool.free) };
        pool.free = h;
        pool.live -= 1;
        drop(g);
        if !flush_first {
            flush();
        }
    }

    /// Runs `f` with the pool lock held (the caller takes any backend locks inside,
    /// after it, as the lock order wants), giving it every heap ever created (live
    /// ones are in use by their threads: read only their atomics) and the (live,
    /// created) counts.
    pub fn with_heaps<R>(&self, f: impl FnOnce(AllHeaps<'_>, (usize, usize)) -> R) -> R {
        let _g = self.pool_lock.guard();
        // SAFETY: pool lock held.
        let pool = self.pool.with(|p| unsafe { &*p });
        let heaps = AllHeaps {
            first: pool.all,
            _pool_held: PhantomData,
        };
        f(heaps, (pool.live, pool.created))
    }

    /// Drains the caches of live heaps whose threads left them alone for `passes`
    /// calls in a row and sleep now (`drain`'s protocol, with the `Drained`
    /// sentinel `sentinel` and the OS's view of a thread, `sleeping`); the bytes
    /// moved to the central tier.
    pub fn drain_idle<O: Os>(
        &self,
        be: &Backend<O>,
        sentinel: *mut ThreadHeap,
        passes: u32,
        sleeping: impl Fn(u32) -> Option<bool>,
    ) -> usize {
        self.with_heaps(|heaps, _| {
            heaps
                .iter()
                // SAFETY: the pool lock is held (`with_heaps`); `sentinel` and
                // `be` per this function's callers (`global`).
                .map(|h| unsafe { h.try_drain_idle(sentinel, passes, &sleeping, be) })
                .sum()
        })
    }

    /// Fork child: only the forking thread exists, so only its heap `mine` (null:
    /// none) may be drained, under its new thread id `tid`.
    ///
    /// # Safety
    /// The caller holds the pool lock (the fork handlers' `lock_set`).
    pub unsafe fn forget_drains_after_fork(&self, mine: *const ThreadHeap, tid: u32) {
        // SAFETY: the caller holds the pool lock.
        let pool = self.pool.with(|p| unsafe { &*p });
        let mut h = pool.all;
        while !h.is_null() {
            // SAFETY: heaps on `all` are never freed (invariant 2).
            let heap = unsafe { &*h };
            if ptr::eq(h, mine) {
                heap.set_drain_tid(tid);
            } else {
                heap.disable_drain();
            }
            // SAFETY: pool lock held.
            h = unsafe { heap.all_next() };
        }
    }

    /// Thread heaps ever created (the most live at once: heaps are recycled),
    /// without the pool lock: a recent value, never above the true one.
    pub fn heaps_created(&self) -> usize {
        // Relaxed: see `created_copy`.
        self.created_copy.load(Ordering::Relaxed)
    }

    /// Thread heaps in use, and ever created.
    pub fn thread_heaps(&self) -> (usize, usize) {
        let _g = self.pool_lock.guard();
        // SAFETY: pool lock held.
        self.pool.with(|p| unsafe { ((*p).live, (*p).created) })
    }

    /// The byte budget given to thread caches created from now on.
    pub fn set_cache_budget(&self, bytes: usize) {
        // Relaxed: a setting read when a heap starts; nothing is published with it.
        self.cache_budget
            .store(bytes ^ DEFAULT_CACHE_BUDGET, Ordering::Relaxed);
    }

    /// Takes the pool lock (the fork handlers and multi-lock walks, through
    /// `Allocator::lock_set`, which takes it first, as its rank says).
    pub fn lock(&self) {
        self.pool_lock.lock();
    }

    /// Releases the pool lock taken by [`ThreadCaches::lock`].
    pub fn unlock(&self) {
        self.pool_lock.unlock();
    }

    /// Checks the pool's invariants: pooled heaps are Pooled, valid and empty,
    /// `live + pooled == created`, and the `all` list holds `created` heaps.
    ///
    /// # Safety
    /// The caller holds the pool lock (`Allocator::validate`).
    pub unsafe fn validate_locked<O: Os>(&self, be: &Backend<O>) -> Result<(), Violation> {
        // SAFETY: the caller holds the pool lock.
        let pool = self.pool.with(|p| unsafe { &*p });
        let mut pooled = 0;
        let mut h = pool.free;
        while !h.is_null() {
            // SAFETY: pooled heaps are ours under the pool lock and belong to no thread.
            let heap = unsafe { &*h };
            check(
                heap.state() == HeapState::Pooled,
                "HeapPool",
                1,
                "pooled heap not marked Pooled",
                h as usize,
            )?;
            // SAFETY: a pooled heap, ours under the pool lock.
            unsafe { heap.validate(be) }?;
            check(
                heap.is_empty(),
                "HeapPool",
                1,
                "pooled heap still caches objects",
                h as usize,
            )?;
            pooled += 1;
            // SAFETY: pool lock held; the heap is pooled.
            h = unsafe { heap.pool_next() };
        }
        check(
            pool.live + pooled == pool.created,
            "HeapPool",
            1,
            "live + pooled != created",
            0,
        )?;
        // Invariant 2: the lock-free copy is stored under the lock at each change.
        check(
            // Relaxed: written under the pool lock, which this thread holds.
            self.created_copy.load(Ordering::Relaxed) == pool.created,
            "HeapPool",
            2,
            "created_copy != created",
            0,
        )?;
        // Invariant 2: the `all` list holds every heap ever created, once.
        let mut listed = 0;
        let mut h = pool.all;
        while !h.is_null() && listed <= pool.created {
            listed += 1;
            // SAFETY: heaps on `all` are never freed (invariant 2); `all_next` is
            // written once, under the pool lock we hold.
            h = unsafe { (*h).all_next() };
        }
        check(
            listed == pool.created,
            "HeapPool",
            2,
            "the list of all heaps does not hold `created` heaps",
            listed,
        )
    }
}
