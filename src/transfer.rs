//! The lock-free stack of batches between thread caches and the central tier, and
//! the pool of type-stable batch descriptors it is built from.
//!
//! A *batch* is a chain of objects linked through their first word, or an array of
//! their addresses kept in the descriptor itself. A chain's descriptor
//! ([`BatchDesc`], 16 bytes) records its head and length; an array's
//! ([`ArrayDesc`], 272 bytes) the addresses too: the two kinds come from separate
//! shelves of the pool (`desc.rs`), and the kind is in the index. Stacks link
//! descriptors of both kinds by index. The per-CPU front end flushes and refills
//! arrays, so neither side reads or writes the objects (each one a cache miss: it
//! was freed on another CPU); the thread caches flush chains, and a thread cache
//! that pops an array links it into a chain (stores, not dependent loads). An array
//! batch has no link to check (`link`'s check runs where links are followed): a
//! write after free into one of its objects is not caught while it crosses, as in a
//! CPU's stack. Descriptors live in blocks from the metadata arena that are never
//! unmapped (type-stable memory), so a popper that loses a race and reads the `next`
//! of a descriptor someone else already took reads valid memory, the header of the
//! kind its index names; the 32-bit tag in the head, bumped on every successful
//! CAS, makes its CAS fail instead of installing that stale `next` (ABA).

use crate::link::FreeObj;
use crate::size_class::SizeClass;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use core::ptr;

/// "No descriptor" in a stack link.
pub const NIL: u32 = u32::MAX;

mod desc;
pub use desc::{ArrayDesc, BatchDesc, DESC_SLOTS, DescPool};

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
            d.next().store(head_index(h), Ordering::Relaxed);
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
            // it stays mapped (DescPool invariant 1), its index still names its kind
            // (invariant 3: `get` reads the header of that kind, which both start
            // with), and the tagged CAS below fails if so, discarding this possibly
            // stale `next`. Relaxed: the Acquire that
            // read `h` synchronised with the push that wrote this `next`.
            let next = pool.get(i).next().load(Ordering::Relaxed);
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
        let mut n = 0;
        self.walk_if_stable(pool, |_| {
            n += 1;
            false
        })
        .map(|_| n)
    }

    /// The first index on the stack for which `bad` holds (`Some(None)` if none),
    /// if no push or pop completed during the walk (as for `count_if_stable`), else
    /// None; `bad` may have seen indices of a walk that raced.
    pub fn find_if_stable(&self, pool: &DescPool, bad: impl FnMut(u32) -> bool) -> Option<u32> {
        self.walk_if_stable(pool, bad).flatten()
    }

    /// Walks the stack's indices until `stop` holds for one; Some(that index, or
    /// None at the end) if the head stayed the same, else None.
    fn walk_if_stable(
        &self,
        pool: &DescPool,
        mut stop: impl FnMut(u32) -> bool,
    ) -> Option<Option<u32>> {
        let h = self.version();
        let bound = pool.created() as usize + pool.created_arrays() as usize;
        let mut n = 0;
        let mut i = head_index(h);
        // `issued`: a walk that raced may read a link not yet written (a fresh
        // descriptor's); it must not follow it into an unpublished block.
        while i != NIL && pool.issued(i) {
            if stop(i) {
                return (self.version() == h).then_some(Some(i));
            }
            n += 1;
            // Relaxed: ordered by the Acquire in version() when the result is kept.
            i = pool.get(i).next().load(Ordering::Relaxed);
            if n > bound {
                return None;
            }
        }
        (i == NIL && self.version() == h).then_some(None)
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
    use crate::meta::MetaArena;
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

    #[test]
    fn both_kinds_share_a_stack_and_each_popper_reads_the_batch_of_its_kind() {
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
        // Batch `v` as a chain: head v*64+64, count v; as an array: v, v+1, ...
        let fill = |sh: &Shared, v: u32| -> u32 {
            if v % 2 == 0 {
                let (i, a) = sh.pool.alloc_array(&SysOs, &sh.meta).unwrap();
                let objs: Vec<*mut u8> = (0..DESC_SLOTS)
                    .map(|k| (v as usize + k) as *mut u8)
                    .collect();
                a.set_array(&objs);
                i
            } else {
                let i = sh.pool.alloc(&SysOs, &sh.meta).unwrap();
                sh.pool
                    .get(i)
                    .set((v as usize * 64 + 64) as *mut FreeObj, v);
                i
            }
        };
        let read = |sh: &Shared, i: u32| -> u32 {
            match sh.pool.array(i) {
                Some(a) => {
                    let mut out = [ptr::null_mut(); DESC_SLOTS];
                    assert_eq!(a.copy_array(&mut out), DESC_SLOTS);
                    let v = out[0] as u32;
                    for (k, &o) in out.iter().enumerate() {
                        assert_eq!(o as usize, v as usize + k, "an array batch arrived changed");
                    }
                    assert_eq!(v % 2, 0, "a chain descriptor read as an array");
                    v
                }
                None => {
                    let (h, v) = sh.pool.get(i).get();
                    assert_eq!(
                        h as usize,
                        v as usize * 64 + 64,
                        "a chain batch arrived changed"
                    );
                    assert_eq!(v % 2, 1, "an array descriptor read as a chain");
                    v
                }
            }
        };
        let handles: Vec<_> = (0..4u32)
            .map(|t| {
                let sh = sh.clone();
                std::thread::spawn(move || {
                    let mut mine: Vec<u32> = (0..16).map(|k| fill(&sh, t * 16 + k)).collect();
                    for _ in 0..2_000 {
                        for &i in &mine {
                            sh.stack.push(&sh.pool, i);
                        }
                        let n = mine.len();
                        mine.clear();
                        while mine.len() < n {
                            if let Some(i) = sh.stack.pop(&sh.pool) {
                                // Recycle: the value goes into a descriptor of its
                                // kind, maybe another one.
                                let v = read(&sh, i);
                                sh.pool.free(i);
                                mine.push(fill(&sh, v));
                            }
                        }
                    }
                    mine.iter().map(|&i| read(&sh, i)).collect::<Vec<u32>>()
                })
            })
            .collect();
        let mut all: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..64).collect::<Vec<u32>>(),
            "batches lost or doubled"
        );
        assert_eq!(sh.stack.count_if_stable(&sh.pool), Some(0));
        assert!(sh.pool.validate().is_ok());
        // Each kind's shelf grew only to the descriptors of that kind held at once.
        assert!(sh.pool.created() <= 32 + 4 && sh.pool.created_arrays() <= 32 + 4);
    }
}
