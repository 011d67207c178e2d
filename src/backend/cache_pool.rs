//! The process-wide pool of cache room that thread caches borrow beyond their own
//! budget (tcmalloc's "overall thread cache size", with its unclaimed space): a
//! cache whose working set overflows its budget takes a step of room from here, up
//! to a per-thread cap, and gives it back when its flushes show it no longer needs
//! it, when it is flushed and when its thread exits (`front::thread_cache::slow`).
//!
//! Two atomics, no lock: the total (a setting) and the bytes lent now. A borrow is a
//! compare-exchange that never takes `lent` past `total`; a return subtracts.

use crate::sync::{AtomicUsize, Ordering};

/// Default bytes of the pool (`set_thread_cache_pool_bytes`,
/// `STRATA_THREAD_CACHE_POOL_BYTES`): what all thread caches together may hold
/// beyond their own budgets.
pub const DEFAULT_CACHE_POOL: usize = 32 << 20;

/// The pool.
///
/// Invariants: 1. `lent` is the sum of the bytes every thread heap holds borrowed
/// (`ThreadHeap::borrowed`); heaps in the heap pool hold none.
/// 2. a borrow never takes `lent` above `total`; `lent > total` only after the total
///    was lowered, until the borrowers give back.
pub struct CachePool {
    /// The total XOR [`DEFAULT_CACHE_POOL`], so that the default is zero bytes and
    /// the process's statics stay all zero (in `.bss`: TransferStack invariant 1).
    total: AtomicUsize,
    lent: AtomicUsize,
}

impl Default for CachePool {
    fn default() -> Self {
        Self::new()
    }
}

impl CachePool {
    crate::sync::loom_const_fn! {
        /// A pool of [`DEFAULT_CACHE_POOL`] bytes, none lent.
        pub fn new() -> CachePool {
            CachePool {
                total: AtomicUsize::new(0),
                lent: AtomicUsize::new(0),
            }
        }
    }

    /// The bytes all caches together may borrow.
    pub fn total(&self) -> usize {
        // Relaxed: a setting; nothing is published with it.
        self.total.load(Ordering::Relaxed) ^ DEFAULT_CACHE_POOL
    }

    /// Sets the total. Lowered below what is lent, no cache borrows again until the
    /// borrowers have given back enough (each does at its next shrink or exit).
    pub fn set_total(&self, bytes: usize) {
        self.total
            .store(bytes ^ DEFAULT_CACHE_POOL, Ordering::Relaxed);
    }

    /// The bytes lent now (a recent value).
    pub fn lent(&self) -> usize {
        self.lent.load(Ordering::Relaxed)
    }

    /// Takes `bytes` of room if the total allows (invariant 2); whether it did.
    pub fn borrow(&self, bytes: usize) -> bool {
        let total = self.total();
        // Relaxed: the count is the only thing shared; no memory is published by it.
        self.lent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |lent| {
                lent.checked_add(bytes).filter(|&l| l <= total)
            })
            .is_ok()
    }

    /// Returns `bytes` borrowed earlier.
    pub fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            let before = self.lent.fetch_sub(bytes, Ordering::Relaxed);
            debug_check!(before >= bytes, "CachePool: more given back than lent");
        }
    }
}
