//! The lock-free stack of batches between thread caches and the central tier, and
//! the pool of type-stable batch descriptors it is built from.
//!
//! A *batch* is a chain of objects linked through their first word. A descriptor
//! ([`BatchDesc`]) records a batch's head and length; stacks link descriptors by
//! index. Descriptors live in blocks from the metadata arena that are never
//! unmapped (type-stable memory), so a popper that loses a race and reads the `next`
//! of a descriptor someone else already took reads valid memory; the 32-bit tag in
//! the head, bumped on every successful CAS, makes its CAS fail instead of installing
//! that stale `next` (ABA).

use crate::chunk::FreeObj;
use crate::meta::MetaArena;
use crate::os::Os;
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering, RawLock, UnsafeCell};
#[cfg(strata_loom)]
use core::ptr;

/// "No descriptor" in a stack link.
pub const NIL: u32 = u32::MAX;

#[cfg(not(strata_loom))]
const BLOCK_SHIFT: u32 = 12;
#[cfg(strata_loom)]
const BLOCK_SHIFT: u32 = 2;
const BLOCK_LEN: usize = 1 << BLOCK_SHIFT;
#[cfg(not(strata_loom))]
const DIR_LEN: usize = 4096;
#[cfg(strata_loom)]
const DIR_LEN: usize = 4;

/// A batch descriptor.
///
/// Invariant: a descriptor is in at most one place at a time: one stack, or owned by
/// the single thread that popped or allocated it. `head`/`count` are only written by
/// the owner and read by the next owner, after the push/pop pair that hands it over.
pub struct BatchDesc {
    next: AtomicU32,
    head: UnsafeCell<*mut FreeObj>,
    count: UnsafeCell<u32>,
}

impl BatchDesc {
    /// Records the batch (owner only).
    pub fn set(&self, head: *mut FreeObj, count: u32) {
        // SAFETY: only the owning thread touches these cells (invariant above).
        self.head.with_mut(|h| unsafe { *h = head });
        // SAFETY: as above.
        self.count.with_mut(|c| unsafe { *c = count });
    }
    /// Reads the batch (owner only).
    pub fn get(&self) -> (*mut FreeObj, u32) {
        // SAFETY: only the owning thread touches these cells (invariant above).
        let h = self.head.with(|h| unsafe { *h });
        // SAFETY: as above.
        let c = self.count.with(|c| unsafe { *c });
        (h, c)
    }
}

/// Where descriptors come from: a directory of blocks, each published once and never
/// freed, plus a free stack of recycled descriptors.
///
/// Invariants: 1. `dir[i]` is null or points at `BLOCK_LEN` descriptors, forever.
/// 2. every index below `fresh` (and below the capacity) names a descriptor whose
///    block is published, and is in exactly one place (a stack or an owner).
pub struct DescPool {
    dir: [AtomicPtr<BatchDesc>; DIR_LEN],
    fresh: AtomicU32,
    free: TransferStack,
    grow_lock: RawLock,
}

// SAFETY: all shared state is atomics; descriptor contents obey BatchDesc's invariant.
unsafe impl Sync for DescPool {}
// SAFETY: as above.
unsafe impl Send for DescPool {}

impl DescPool {
    crate::sync::loom_const_fn! {
        pub fn new() -> DescPool {
            DescPool {
                dir: crate::sync::null_ptr_array(),
                fresh: AtomicU32::new(0),
                free: TransferStack::new(),
                grow_lock: RawLock::new(),
            }
        }
    }

    /// The descriptor with index `i`.
    #[inline]
    pub fn get(&self, i: u32) -> &BatchDesc {
        // Acquire: pairs with the Release in grow(); the zeroed block is visible.
        let block = self.dir[(i >> BLOCK_SHIFT) as usize].load(Ordering::Acquire);
        debug_assert!(!block.is_null());
        // SAFETY: by invariant 2, i's block is published; by invariant 1 it stays
        // valid forever; the slot index is below BLOCK_LEN.
        unsafe { &*block.add(i as usize & (BLOCK_LEN - 1)) }
    }

    /// Takes a free descriptor; None if the pool is exhausted or the OS refuses.
    pub fn alloc(&self, os: &impl Os, meta: &MetaArena) -> Option<u32> {
        if let Some(i) = self.free.pop(self) {
            return Some(i);
        }
        let i = self.fresh.fetch_add(1, Ordering::Relaxed);
        if i as usize >= DIR_LEN * BLOCK_LEN {
            self.fresh.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let slot = &self.dir[(i >> BLOCK_SHIFT) as usize];
        if slot.load(Ordering::Acquire).is_null() {
            let _g = self.grow_lock.guard();
            if slot.load(Ordering::Relaxed).is_null() {
                let block = meta.alloc(os, BLOCK_LEN * core::mem::size_of::<BatchDesc>(), 64);
                if block.is_null() {
                    // Keep invariant 2: the index was reserved; park it nowhere and
                    // give up (the pool just has one fewer descriptor).
                    return None;
                }
                init_block(block.cast());
                // Release: pairs with the Acquire in get(); publishes the block.
                slot.store(block.cast(), Ordering::Release);
            }
        }
        Some(i)
    }

    /// Returns a descriptor to the pool.
    pub fn free(&self, i: u32) {
        self.free.push(self, i);
    }

    /// Holds the growth lock (fork handlers).
    pub fn lock_growth(&self) {
        self.grow_lock.lock();
    }
    /// Releases `lock_growth`.
    pub fn unlock_growth(&self) {
        self.grow_lock.unlock();
    }

    /// Descriptors ever handed out fresh (for statistics and validation).
    pub fn created(&self) -> u32 {
        self.fresh.load(Ordering::Relaxed)
    }
}

impl Default for DescPool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(strata_loom))]
fn init_block(_block: *mut BatchDesc) {
    // Zeroed memory is a valid array of descriptors (atomics and plain data).
}
#[cfg(strata_loom)]
fn init_block(block: *mut BatchDesc) {
    for i in 0..BLOCK_LEN {
        // SAFETY: the block has room for BLOCK_LEN descriptors and is unpublished.
        unsafe {
            block.add(i).write(BatchDesc {
                next: AtomicU32::new(NIL),
                head: UnsafeCell::new(ptr::null_mut()),
                count: UnsafeCell::new(0),
            })
        };
    }
}

/// A Treiber stack of descriptor indices with a tagged head.
///
/// Invariants: 1. `head` packs `(tag << 32) | index`; every successful CAS adds 1 to
/// the tag, so a head value is never reinstalled by the same CAS twice within 2^32
/// operations. 2. following `next` from the head's index reaches NIL after `len`
/// steps when no push or pop is in flight.
pub struct TransferStack {
    head: AtomicU64,
    len: AtomicU32,
}

impl TransferStack {
    crate::sync::loom_const_fn! {
        pub fn new() -> TransferStack {
            TransferStack { head: AtomicU64::new(NIL as u64), len: AtomicU32::new(0) }
        }
    }

    /// Pushes descriptor `i`, which the caller owns.
    pub fn push(&self, pool: &DescPool, i: u32) {
        let d = pool.get(i);
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            d.next.store(h as u32, Ordering::Relaxed);
            let new = (h & !0xFFFF_FFFF).wrapping_add(1 << 32) | i as u64;
            // Release: pairs with the Acquire in pop(); publishes `d.next` and the
            // batch the caller wrote into `d` (and the objects' links).
            match self
                .head
                .compare_exchange_weak(h, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(cur) => h = cur,
            }
        }
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Pops a descriptor, which the caller then owns.
    pub fn pop(&self, pool: &DescPool) -> Option<u32> {
        // Acquire: pairs with the Release in push(); the pushed descriptor's `next`
        // and contents are visible.
        let mut h = self.head.load(Ordering::Acquire);
        loop {
            let i = h as u32;
            if i == NIL {
                return None;
            }
            // The descriptor may already be popped (and reused) by another thread:
            // it stays mapped (DescPool invariant 1) and the tagged CAS below fails
            // if so, discarding this possibly stale `next`.
            let next = pool.get(i).next.load(Ordering::Relaxed);
            let new = (h & !0xFFFF_FFFF).wrapping_add(1 << 32) | next as u64;
            // Acquire on success: as above, for the descriptor we take.
            match self
                .head
                .compare_exchange_weak(h, new, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return Some(i);
                }
                Err(cur) => h = cur,
            }
        }
    }

    /// Approximate number of descriptors on the stack (exact when quiescent).
    #[inline]
    pub fn len(&self) -> usize {
        // The counter is bumped after the CAS, so it can briefly lag (or read one
        // below zero as a huge value); clamp for the callers' heuristics.
        let n = self.len.load(Ordering::Relaxed);
        if n > u32::MAX / 2 { 0 } else { n as usize }
    }

    /// Whether the stack is empty (approximate, like `len`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts the descriptors reachable from the head (quiescent callers only).
    pub fn count_quiescent(&self, pool: &DescPool) -> usize {
        let mut n = 0;
        let mut i = self.head.load(Ordering::Acquire) as u32;
        while i != NIL {
            n += 1;
            i = pool.get(i).next.load(Ordering::Relaxed);
        }
        n
    }
}

impl Default for TransferStack {
    fn default() -> Self {
        Self::new()
    }
}

/// Walks a chain of `n` objects from `head` and returns its last object.
///
/// # Safety
/// `head` starts a chain of at least `n >= 1` linked free objects owned by the caller.
#[inline]
pub unsafe fn chain_tail(head: *mut FreeObj, n: usize) -> *mut FreeObj {
    let mut t = head;
    for _ in 1..n {
        // SAFETY: per the contract the chain has n objects.
        t = unsafe { (*t).next };
    }
    debug_assert!(!t.is_null());
    t
}

#[cfg(all(test, not(strata_loom)))]
mod tests {
    use super::*;
    use crate::os::SysOs;
    use std::sync::Arc;

    #[test]
    fn concurrent_push_and_pop_lose_no_descriptor_and_duplicate_none() {
        struct Shared {
            pool: DescPool,
            stack: TransferStack,
            meta: MetaArena,
        }
        let sh = Arc::new(Shared {
            pool: DescPool::new(),
            stack: TransferStack::new(),
            meta: MetaArena::new(),
        });
        const PER_THREAD: u32 = 64;
        const THREADS: u32 = 4;
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let sh = sh.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for k in 0..PER_THREAD {
                        let i = sh.pool.alloc(&SysOs, &sh.meta).unwrap();
                        sh.pool
                            .get(i)
                            .set(core::ptr::null_mut(), t * PER_THREAD + k);
                        mine.push(i);
                    }
                    for round in 0..2_000 {
                        for &i in &mine {
                            sh.stack.push(&sh.pool, i);
                        }
                        mine.clear();
                        while mine.len() < PER_THREAD as usize {
                            if let Some(i) = sh.stack.pop(&sh.pool) {
                                mine.push(i);
                            }
                        }
                        if round % 3 == 0 {
                            // Recycle through the pool's own stack too.
                            for &i in &mine {
                                let v = sh.pool.get(i).get().1;
                                sh.pool.free(i);
                                let j = sh.pool.alloc(&SysOs, &sh.meta).unwrap();
                                sh.pool.get(j).set(core::ptr::null_mut(), v);
                            }
                            mine.clear();
                            // The same number of descriptors is back in hand below.
                            while mine.len() < PER_THREAD as usize {
                                mine.push(sh.pool.alloc(&SysOs, &sh.meta).unwrap());
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(sh.stack.count_quiescent(&sh.pool), 0);
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(
            all.len(),
            n,
            "a descriptor was handed to two threads at once"
        );
        assert_eq!(n as u32, THREADS * PER_THREAD);
    }
}
