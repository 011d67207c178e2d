//! The lock-free stack of batches between thread caches and the central tier, and
//! the pool of type-stable batch descriptors it is built from.
//!
//! A *batch* is a chain of objects linked through their first word, or an array of
//! their addresses kept in the descriptor itself. A descriptor ([`BatchDesc`])
//! records a chain's head and length, or the array; stacks link descriptors by
//! index. The per-CPU front end flushes and refills arrays, so neither side reads
//! or writes the objects (each one a cache miss: it was freed on another CPU); the
//! thread caches flush chains, and a thread cache that pops an array links it into
//! a chain (stores, not dependent loads). An array batch has no link to check
//! (`link`'s check runs where links are followed): a write after free into one of
//! its objects is not caught while it crosses, as in a CPU's stack. Descriptors live in blocks from the metadata arena that are never
//! unmapped (type-stable memory), so a popper that loses a race and reads the `next`
//! of a descriptor someone else already took reads valid memory; the 32-bit tag in
//! the head, bumped on every successful CAS, makes its CAS fail instead of installing
//! that stale `next` (ABA).

use crate::link::FreeObj;
use crate::meta::MetaArena;
use crate::os::Os;
use crate::size_class::{GEOMETRY, SizeClass};
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, LOOM, LockRank, Ordering, RawLock, UnsafeCell};
use core::ptr;

/// "No descriptor" in a stack link.
pub const NIL: u32 = u32::MAX;

const BLOCK_SHIFT: u32 = GEOMETRY.desc_block_shift;
const BLOCK_LEN: usize = 1 << BLOCK_SHIFT;
const DIR_LEN: usize = GEOMETRY.desc_dir_len;
const_assert!(BLOCK_LEN * core::mem::size_of::<BatchDesc>() <= GEOMETRY.meta_block || LOOM);

/// The most objects a descriptor holds as an array: the largest batch of any class
/// (32 in the shipped geometry, so a descriptor is 272 bytes).
pub const DESC_SLOTS: usize = {
    let mut m = 1;
    let mut k = 0;
    while k < GEOMETRY.num_classes {
        if GEOMETRY.batch(k) > m {
            m = GEOMETRY.batch(k);
        }
        k += 1;
    }
    m
};

/// A batch descriptor.
///
/// Invariants: 1. a descriptor is in at most one place at a time: one stack, or
/// owned by the single thread that popped or allocated it. `head`/`count`/`objs`
/// are only written by the owner and read by the next owner, after the push/pop
/// pair that hands it over.
/// 2. The batch is a chain when `head` is non-null (`count` objects linked from
/// `head`), else an array: `objs[..count]`, `count <= DESC_SLOTS`, distinct
/// objects whose first words the descriptor's writer left as they were (the
/// per-CPU front end's free mark).
pub struct BatchDesc {
    next: AtomicU32,
    count: UnsafeCell<u32>,
    head: UnsafeCell<*mut FreeObj>,
    objs: UnsafeCell<[*mut u8; DESC_SLOTS]>,
}

impl BatchDesc {
    /// Records a chain of `count` objects from `head` (owner only).
    pub fn set(&self, head: *mut FreeObj, count: u32) {
        // SAFETY: only the owning thread touches these cells (invariant 1).
        self.head.with_mut(|h| unsafe { *h = head });
        // SAFETY: only the owning thread touches these cells (invariant 1).
        self.count.with_mut(|c| unsafe { *c = count });
    }
    /// Reads the batch (owner only): a chain's head and length, or null and the
    /// length of an array (invariant 2; [`BatchDesc::copy_array`] reads it).
    pub fn get(&self) -> (*mut FreeObj, u32) {
        // SAFETY: only the owning thread touches these cells (invariant 1).
        let h = self.head.with(|h| unsafe { *h });
        // SAFETY: only the owning thread touches these cells (invariant 1).
        let c = self.count.with(|c| unsafe { *c });
        (h, c)
    }
    /// Records `objs` (at most `DESC_SLOTS`) as an array batch (owner only): the
    /// addresses are copied; the objects are not touched.
    pub fn set_array(&self, objs: &[*mut u8]) {
        let n = objs.len().min(DESC_SLOTS);
        debug_check!(
            n == objs.len(),
            "BatchDesc::set_array: more objects than slots"
        );
        // SAFETY: only the owning thread touches these cells (invariant 1); `n`
        // is at most the array's length.
        self.objs
            .with_mut(|a| unsafe { (&mut *a)[..n].copy_from_slice(&objs[..n]) });
        self.set(ptr::null_mut(), n as u32);
    }
    /// Copies an array batch's objects into `out` and returns how many (owner
    /// only; 0 for a chain, or if `out` is too short, which callers size to the
    /// batch).
    pub fn copy_array(&self, out: &mut [*mut u8]) -> usize {
        let (h, n) = self.get();
        let n = n as usize;
        if !h.is_null() || n > out.len() || n > DESC_SLOTS {
            return 0;
        }
        // SAFETY: only the owning thread touches these cells (invariant 1); `n`
        // is at most both lengths.
        self.objs
            .with(|a| unsafe { out[..n].copy_from_slice(&(&*a)[..n]) });
        n
    }
}

/// Where descriptors come from: a directory of blocks, each published once and never
/// freed, plus a free stack of recycled descriptors.
///
/// Invariants: 1. `dir[i]` is null or points at `BLOCK_LEN` descriptors, forever.
/// 2. every index below `fresh` (and below the capacity) names a descriptor whose
///    block is published, and is in exactly one place (a stack or an owner).
///
/// Memory: a descriptor is `DESC_SLOTS` words of array and two of header (272
/// bytes); a block of `BLOCK_LEN` of them is taken from the metadata arena when the
/// pool first needs it and kept. The pool grows to the most descriptors ever held at
/// once: the batches on the central tier's stacks (at most `max_stacked_batches`
/// per class, 512 at most) plus one per refill or flush in flight.
///
/// Model-checked by `loom-tests/tests/desc_pool.rs` (racing growth, recycling).
pub struct DescPool {
    dir: [AtomicPtr<BatchDesc>; DIR_LEN],
    fresh: AtomicU32,
    free: TransferStack,
    grow_lock: RawLock,
}

// SAFETY: all shared state is atomics; descriptor contents obey BatchDesc's invariant.
unsafe impl Sync for DescPool {}
// SAFETY: the directory's blocks are process-wide and never freed (invariant 1),
// so the pool may move between threads; the rest is atomics.
unsafe impl Send for DescPool {}

impl DescPool {
    crate::sync::loom_const_fn! {
        /// A pool with no descriptor block published yet.
        pub fn new() -> DescPool {
            DescPool {
                dir: crate::sync::null_ptr_array(),
                fresh: AtomicU32::new(0),
                free: TransferStack::new(),
                grow_lock: RawLock::new(LockRank::DescGrowth),
            }
        }
    }

    /// The descriptor with index `i`.
    #[inline]
    pub fn get(&self, i: u32) -> &BatchDesc {
        // Acquire: pairs with the Release in grow(); the zeroed block is visible.
        let block = self.dir[(i >> BLOCK_SHIFT) as usize].load(Ordering::Acquire);
        debug_check!(
            !block.is_null(),
            "DescPool::get: descriptor block not published"
        );
        // SAFETY: by invariant 2, i's block is published; by invariant 1 it stays
        // valid forever; the slot index is below BLOCK_LEN.
        unsafe { &*block.add(i as usize & (BLOCK_LEN - 1)) }
    }

    /// Takes a free descriptor; None if the pool is exhausted or the OS refuses.
    pub fn alloc(&self, os: &impl Os, meta: &MetaArena) -> Option<u32> {
        if let Some(i) = self.free.pop(self) {
            return Some(i);
        }
        // Relaxed: the RMW alone makes indices distinct; the block an index lives in
        // is published through `dir` (Release/Acquire), not through `fresh`.
        let i = self.fresh.fetch_add(1, Ordering::Relaxed);
        if i as usize >= DIR_LEN * BLOCK_LEN {
            self.fresh.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let slot = &self.dir[(i >> BLOCK_SHIFT) as usize];
        if slot.load(Ordering::Acquire).is_null() {
            let _g = self.grow_lock.guard();
            // Re-check under the lock: another thread may have published the block
            // between our load above and taking the lock. Relaxed: the lock's Acquire
            // orders us after that thread's publication.
            #[cfg(not(strata_mutant = "desc_pool_no_recheck"))]
            let vacant = slot.load(Ordering::Relaxed).is_null();
            // Mutant: a second block replaces the first, losing its descriptors.
            #[cfg(strata_mutant = "desc_pool_no_recheck")]
            let vacant = true;
            if vacant {
                let block = meta.alloc(os, BLOCK_LEN * core::mem::size_of::<BatchDesc>(), 64);
                if block.is_null() {
                    // Keep invariant 2: the index was reserved; park it nowhere and
                    // give up (the pool just has one fewer descriptor).
                    return None;
                }
                init_block(block.cast());
                // Release: pairs with the Acquire in get() and the one above;
                // publishes the block's initialised descriptors.
                #[cfg(not(strata_mutant = "desc_pool_publish_relaxed"))]
                slot.store(block.cast(), Ordering::Release);
                // Mutant: the block is published before its contents.
                #[cfg(strata_mutant = "desc_pool_publish_relaxed")]
                slot.store(block.cast(), Ordering::Relaxed);
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

/// Makes a fresh block's descriptors valid. Outside loom zeroed memory already is a
/// valid array of descriptors (atomics and plain data), so this does nothing; loom's
/// atomics and cells are handles into the model's store and are built in place.
fn init_block(block: *mut BatchDesc) {
    if !LOOM {
        return;
    }
    for i in 0..BLOCK_LEN {
        // SAFETY: the block has room for BLOCK_LEN descriptors and is unpublished.
        unsafe {
            block.add(i).write(BatchDesc {
                next: AtomicU32::new(NIL),
                count: UnsafeCell::new(0),
                head: UnsafeCell::new(ptr::null_mut()),
                objs: UnsafeCell::new([ptr::null_mut(); DESC_SLOTS]),
            })
        };
    }
}

/// A Treiber stack of descriptor indices with a tagged head.
///
/// Invariants: 1. `head` packs `(tag << 32) | !index` (the index complemented, so
/// that an empty stack's head, NIL, is 0 and the process's statics, which hold a
/// transfer stack per class, are all zero and live in `.bss`: no page of them is
/// resident, or read from the library's file, until used); every successful CAS adds 1 to
/// the tag, so a head value is never reinstalled by the same CAS twice within 2^32
/// operations. 2. following `next` from the head's index reaches NIL after `len`
/// steps when no push or pop is in flight.
///
/// Orderings: push's successful CAS is Release and pop's loads of the head are
/// Acquire, so whoever pops a descriptor sees its `next` and the batch the pusher
/// wrote into it (and the objects' links). Every write to `head` is a CAS (a
/// read-modify-write), so each push's release sequence runs through every later
/// push and pop: a popper that reads a head value written by some other pop still
/// synchronises with the push of the descriptor now on top. Nothing else is ordered
/// through the stack (`len` is a Relaxed estimate). Model-checked by `loom-tests/tests/transfer_stack.rs` (publication, ABA,
/// conservation) with mutants that weaken each ordering and drop the tag.
pub struct TransferStack {
    head: AtomicU64,
    len: AtomicU32,
}

impl TransferStack {
    crate::sync::loom_const_fn! {
        /// An empty stack.
        pub fn new() -> TransferStack {
            TransferStack { head: AtomicU64::new(0), len: AtomicU32::new(0) }
        }
    }

    /// Pushes descriptor `i`, which the caller owns.
    pub fn push(&self, pool: &DescPool, i: u32) {
        let d = pool.get(i);
        // Relaxed: we only need a guess of the head; the CAS checks it.
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release of the CAS below.
            d.next.store(head_index(h), Ordering::Relaxed);
            let new = next_head(h, i);
            // Release: pairs with the Acquire in pop(); publishes `d.next` and the
            // batch the caller wrote into `d` (and the objects' links).
            match self
                .head
                .compare_exchange_weak(h, new, PUSH_ORDER, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(cur) => h = cur,
            }
        }
        // Relaxed: `len` is an estimate for flush's heuristic; nothing is published
        // with it.
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Pops a descriptor, which the caller then owns.
    pub fn pop(&self, pool: &DescPool) -> Option<u32> {
        // Acquire: pairs with the Release in push(); the pushed descriptor's `next`
        // and contents are visible.
        let mut h = self.head.load(POP_ORDER);
        loop {
            let i = head_index(h);
            if i == NIL {
                return None;
            }
            // The descriptor may already be popped (and reused) by another thread:
            // it stays mapped (DescPool invariant 1) and the tagged CAS below fails
            // if so, discarding this possibly stale `next`. Relaxed: the Acquire that
            // read `h` synchronised with the push that wrote this `next`.
            let next = pool.get(i).next.load(Ordering::Relaxed);
            let new = next_head(h, next);
            // Acquire on success: as above, for the descriptor we take. Acquire on
            // failure: the head we retry with is read like the first one.
            match self
                .head
                .compare_exchange_weak(h, new, POP_ORDER, POP_ORDER)
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

    /// The head word: it changes with every push and pop (the tag, invariant 1), so
    /// two equal readings mean nothing was pushed or popped in between.
    pub fn version(&self) -> u64 {
        // Acquire: pairs with push's Release, so a walk from this head reads the
        // `next` links its pushers wrote.
        self.head.load(Ordering::Acquire)
    }

    /// The number of descriptors on the stack if no push or pop completed while they
    /// were counted (the head word read before and after is the same), else None.
    /// Only the head changes when the stack changes, so a stable head means the walk
    /// followed links no one rewrote; descriptors stay mapped (DescPool invariant 1),
    /// so even a walk that raced is memory-safe, and its result is discarded.
    pub fn count_if_stable(&self, pool: &DescPool) -> Option<usize> {
        let h = self.version();
        let mut n = 0;
        let mut i = head_index(h);
        while i != NIL && i < pool.created() {
            n += 1;
            // Relaxed: ordered by the Acquire in version() when the result is kept.
            i = pool.get(i).next.load(Ordering::Relaxed);
            if n > pool.created() as usize {
                return None;
            }
        }
        (i == NIL && self.version() == h).then_some(n)
    }
}

/// The index on top of a stack whose head word is `h` (NIL if empty): invariant 1
/// stores it complemented.
#[inline(always)]
fn head_index(h: u64) -> u32 {
    !(h as u32)
}
const_assert!(!NIL == 0);

/// The head that replaces `h` when `index` becomes the top: the tag goes up by one
/// (invariant 1), so a stale CAS that read `h` before an intervening pop and push
/// fails even if the same index is on top again.
#[inline(always)]
fn next_head(h: u64, index: u32) -> u64 {
    #[cfg(not(strata_mutant = "transfer_no_tag"))]
    return (h & !0xFFFF_FFFF).wrapping_add(1 << 32) | !index as u64;
    // Mutant: no tag, so the ABA interleaving goes through.
    #[cfg(strata_mutant = "transfer_no_tag")]
    return {
        let _ = h;
        !index as u64
    };
}

/// The success ordering of push's CAS (Release; the mutant weakens it).
#[cfg(not(strata_mutant = "transfer_push_relaxed"))]
const PUSH_ORDER: Ordering = Ordering::Release;
#[cfg(strata_mutant = "transfer_push_relaxed")]
const PUSH_ORDER: Ordering = Ordering::Relaxed;
/// The ordering of pop's loads of the head (Acquire; the mutant weakens it).
#[cfg(not(strata_mutant = "transfer_pop_relaxed"))]
const POP_ORDER: Ordering = Ordering::Acquire;
#[cfg(strata_mutant = "transfer_pop_relaxed")]
const POP_ORDER: Ordering = Ordering::Relaxed;

impl Default for TransferStack {
    fn default() -> Self {
        Self::new()
    }
}

/// Walks a chain of `n` objects from `head` and returns its last object.
///
/// Every link followed is checked (a corrupted one aborts, see `link`).
///
/// # Safety
/// `head` starts a chain of at least `n >= 1` linked free class-`c` objects owned by
/// the caller.
#[inline]
pub unsafe fn chain_tail(head: *mut FreeObj, n: usize, c: SizeClass) -> *mut FreeObj {
    let mut t = head;
    for _ in 1..n {
        // SAFETY: per the contract the chain has n class-c objects.
        t = unsafe { FreeObj::next(t, c) };
    }
    debug_check!(!t.is_null(), "chain_tail: chain shorter than its count");
    t
}

/// Links `objs` into a null-terminated chain in their order and returns its head
/// (null if there are none): one store into each object, no load of one.
///
/// # Safety
/// `objs` are distinct free objects of ours, owned by the caller; the link key is
/// set (`ensure_key`).
pub unsafe fn link_array(objs: &[*mut u8]) -> *mut FreeObj {
    let mut head: *mut FreeObj = ptr::null_mut();
    for &o in objs.iter().rev() {
        let q = o.cast::<FreeObj>();
        // SAFETY: ours by the contract; its first word is free to hold the link.
        unsafe { FreeObj::set_next(q, head) };
        head = q;
    }
    head
}

/// Walks a chain of `n` class-`c` objects from `head` into `out` (`n <= out.len()`),
/// leaving in each object's first word an encoded null link (the per-CPU front
/// end's free mark) in place of the spent link; returns how many it took.
///
/// # Safety
/// `head` starts a chain of at least `n` linked free class-`c` objects owned by the
/// caller.
pub unsafe fn chain_to_array(
    head: *mut FreeObj,
    n: usize,
    c: SizeClass,
    out: &mut [*mut u8],
) -> usize {
    let mut k = 0;
    let mut o = head;
    while !o.is_null() && k < n && k < out.len() {
        let next = if k + 1 < n {
            // SAFETY: `o` is one of the chain's n class-c objects, the caller's,
            // linked to the rest.
            unsafe { FreeObj::next(o, c) }
        } else {
            ptr::null_mut()
        };
        // SAFETY: the caller's; its link is spent once `next` is read.
        unsafe { FreeObj::set_next(o, ptr::null_mut()) };
        out[k] = o.cast();
        k += 1;
        o = next;
    }
    debug_check!(k == n, "chain_to_array: chain shorter than its count");
    k
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
        assert_eq!(sh.stack.count_if_stable(&sh.pool), Some(0));
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
