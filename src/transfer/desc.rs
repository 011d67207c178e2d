//! Batch descriptors and the pool they come from: two kinds, sized by the batch
//! they describe.
//!
//! A chain batch (a thread cache's flush, a carve) needs only its head and length:
//! a [`BatchDesc`] of 16 bytes. An array batch (the per-CPU front end's flush)
//! keeps its objects' addresses: an [`ArrayDesc`], the same header followed by
//! `DESC_SLOTS` slots (272 bytes). Each kind has its own shelf of blocks and its
//! own free stack, so the chain batches of the thread caches, the common case, pay
//! 16 bytes a batch, not 272.
//!
//! The kind is in the index (`ARRAY_BIT`), fixed for the index's lifetime: a
//! popper that races and reads a descriptor someone else already took (type-stable
//! memory, see `TransferStack::pop`) reads the header of the kind its index names,
//! inside that kind's block; it never takes a chain descriptor for an array one or
//! reads past it. The alternative, a small header pointing at a slot block from a
//! second pool, would cost an array batch two pool operations (two more CASes on
//! each per-CPU flush and refill) and a pointer chase; the two shelves cost one
//! more directory of block pointers (zero, in `.bss`, until used).

use crate::Violation;
use crate::check::check;
use crate::link::FreeObj;
use crate::meta::MetaArena;
use crate::os::Os;
use crate::size_class::GEOMETRY;
use crate::sync::{AtomicPtr, AtomicU32, LOOM, LockRank, Ordering, RawLock, UnsafeCell};
use core::ptr;

use super::{NIL, TransferStack};

/// Chain descriptors in a block: 512 in the shipped geometry (8 KiB).
const CHAIN_SHIFT: u32 = GEOMETRY.desc_block_shift;
/// Array descriptors in a block: 64 in the shipped geometry (17 KiB), so that a
/// process whose per-CPU front end stacks a few array batches maps a small block;
/// all of a small geometry's block in the loom models.
const ARRAY_SHIFT: u32 = if CHAIN_SHIFT > 6 { 6 } else { CHAIN_SHIFT };
const DIR_LEN: usize = GEOMETRY.desc_dir_len;
/// Set in the index of an array descriptor (invariant 3 of [`DescPool`]).
pub const ARRAY_BIT: u32 = 1 << 31;

const_assert!(
    (1usize << CHAIN_SHIFT) * core::mem::size_of::<BatchDesc>() <= GEOMETRY.meta_block || LOOM
);
const_assert!(
    (1usize << ARRAY_SHIFT) * core::mem::size_of::<ArrayDesc>() <= GEOMETRY.meta_block || LOOM
);
// Every index of either shelf is below ARRAY_BIT, and no array index is NIL.
const_assert!(DIR_LEN << CHAIN_SHIFT <= ARRAY_BIT as usize);
const_assert!(DIR_LEN << ARRAY_SHIFT < (NIL - ARRAY_BIT) as usize);

/// The most objects an array descriptor holds: the largest batch of any class (32
/// in the shipped geometry, so an [`ArrayDesc`] is 272 bytes).
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

/// A batch descriptor's header: the whole of a chain descriptor, the start of an
/// array one (16 bytes).
///
/// Invariants: 1. a descriptor is in at most one place at a time: one stack, or
/// owned by the single thread that popped or allocated it. `head`/`count` (and an
/// array descriptor's `objs`) are only written by the owner and read by the next
/// owner, after the push/pop pair that hands it over.
/// 2. The kind is the index's (DescPool invariant 3): a chain descriptor's batch is
/// `count` objects linked from `head`; an array descriptor's `head` is null and its
/// batch is `objs[..count]`, `count <= DESC_SLOTS`, distinct objects whose first
/// words its writer left as they were (the per-CPU front end's free mark).
pub struct BatchDesc {
    next: AtomicU32,
    count: UnsafeCell<u32>,
    head: UnsafeCell<*mut FreeObj>,
}

/// An array batch's descriptor: the header, then the objects' addresses.
pub struct ArrayDesc {
    desc: BatchDesc,
    objs: UnsafeCell<[*mut u8; DESC_SLOTS]>,
}

impl BatchDesc {
    /// Records a chain of `count` objects from `head` (owner only; `head` is null
    /// only for an array descriptor's header, invariant 2).
    pub fn set(&self, head: *mut FreeObj, count: u32) {
        // SAFETY: only the owning thread touches these cells (invariant 1).
        self.head.with_mut(|h| unsafe { *h = head });
        // SAFETY: only the owning thread touches these cells (invariant 1).
        self.count.with_mut(|c| unsafe { *c = count });
    }
    /// Reads the batch (owner only): a chain's head and length, or null and the
    /// length of an array (invariant 2; [`ArrayDesc::copy_array`] reads it).
    pub fn get(&self) -> (*mut FreeObj, u32) {
        // SAFETY: only the owning thread touches these cells (invariant 1).
        let h = self.head.with(|h| unsafe { *h });
        // SAFETY: only the owning thread touches these cells (invariant 1).
        let c = self.count.with(|c| unsafe { *c });
        (h, c)
    }
    /// The stack link (`TransferStack` only).
    #[inline(always)]
    pub(super) fn next(&self) -> &AtomicU32 {
        &self.next
    }
}

impl ArrayDesc {
    /// The header (`count`; `head` is null, BatchDesc invariant 2).
    pub fn desc(&self) -> &BatchDesc {
        &self.desc
    }
    /// Records `objs` (at most `DESC_SLOTS`) as the batch (owner only): the
    /// addresses are copied; the objects are not touched.
    pub fn set_array(&self, objs: &[*mut u8]) {
        let n = objs.len().min(DESC_SLOTS);
        debug_check!(
            n == objs.len(),
            "ArrayDesc::set_array: more objects than slots"
        );
        // SAFETY: only the owning thread touches these cells (BatchDesc invariant
        // 1); `n` is at most the array's length.
        self.objs
            .with_mut(|a| unsafe { (&mut *a)[..n].copy_from_slice(&objs[..n]) });
        self.desc.set(ptr::null_mut(), n as u32);
    }
    /// Copies the batch's objects into `out` and returns how many (owner only; 0
    /// if `out` is too short, which callers size to the batch).
    pub fn copy_array(&self, out: &mut [*mut u8]) -> usize {
        let (h, n) = self.desc.get();
        let n = n as usize;
        debug_check!(h.is_null(), "ArrayDesc::copy_array: a head in an array");
        if n > out.len() || n > DESC_SLOTS {
            return 0;
        }
        // SAFETY: only the owning thread touches these cells (BatchDesc invariant
        // 1); `n` is at most both lengths.
        self.objs
            .with(|a| unsafe { out[..n].copy_from_slice(&(&*a)[..n]) });
        n
    }
}

/// A descriptor kind a shelf holds: how loom builds one in place (outside loom a
/// zeroed block is already valid descriptors: atomics and plain data).
trait Desc: Sized {
    fn empty() -> Self;
}
impl Desc for BatchDesc {
    fn empty() -> Self {
        BatchDesc {
            next: AtomicU32::new(NIL),
            count: UnsafeCell::new(0),
            head: UnsafeCell::new(ptr::null_mut()),
        }
    }
}
impl Desc for ArrayDesc {
    fn empty() -> Self {
        ArrayDesc {
            desc: BatchDesc::empty(),
            objs: UnsafeCell::new([ptr::null_mut(); DESC_SLOTS]),
        }
    }
}

/// The blocks of one kind of descriptor: a directory of blocks of `1 << SHIFT`,
/// each published once and never freed (DescPool invariants 1 and 2).
struct Shelf<D, const SHIFT: u32> {
    dir: [AtomicPtr<D>; DIR_LEN],
    fresh: AtomicU32,
}

impl<D: Desc, const SHIFT: u32> Shelf<D, SHIFT> {
    const LEN: usize = 1 << SHIFT;

    crate::sync::loom_const_fn! {
        fn new() -> Self {
            Shelf { dir: crate::sync::null_ptr_array(), fresh: AtomicU32::new(0) }
        }
    }

    /// The descriptor with (shelf) index `i`, whose block is published.
    #[inline(always)]
    fn get(&self, i: u32) -> &D {
        // Acquire: pairs with the Release in take_fresh(); the block's contents
        // are visible.
        let block = self.dir[(i >> SHIFT) as usize].load(Ordering::Acquire);
        debug_check!(
            !block.is_null(),
            "DescPool::get: descriptor block not published"
        );
        // SAFETY: by DescPool invariant 2, i's block is published; by invariant 1
        // it stays valid forever; the slot index is below LEN.
        unsafe { &*block.add(i as usize & (Self::LEN - 1)) }
    }

    /// Whether `i` was handed out (a sanity bound for racing walks).
    fn issued(&self, i: u32) -> bool {
        i < self.fresh.load(Ordering::Relaxed)
    }

    /// A never-used index, its block published; None if the shelf is full or the
    /// OS refuses.
    fn take_fresh(&self, os: &impl Os, meta: &MetaArena, grow_lock: &RawLock) -> Option<u32> {
        // Relaxed: the RMW alone makes indices distinct; the block an index lives in
        // is published through `dir` (Release/Acquire), not through `fresh`.
        let i = self.fresh.fetch_add(1, Ordering::Relaxed);
        if i as usize >= DIR_LEN * Self::LEN {
            self.fresh.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let slot = &self.dir[(i >> SHIFT) as usize];
        if slot.load(Ordering::Acquire).is_null() {
            let _g = grow_lock.guard();
            // Re-check under the lock: another thread may have published the block
            // between our load above and taking the lock. Relaxed: the lock's Acquire
            // orders us after that thread's publication.
            #[cfg(not(strata_mutant = "desc_pool_no_recheck"))]
            let vacant = slot.load(Ordering::Relaxed).is_null();
            // Mutant: a second block replaces the first, losing its descriptors.
            #[cfg(strata_mutant = "desc_pool_no_recheck")]
            let vacant = true;
            if vacant {
                let block = meta.alloc(os, Self::LEN * core::mem::size_of::<D>(), 64);
                if block.is_null() {
                    // Keep invariant 2: the index was reserved; park it nowhere and
                    // give up (the pool just has one fewer descriptor).
                    return None;
                }
                init_block::<D>(block.cast(), Self::LEN);
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
}

/// Makes a fresh block's `len` descriptors valid. Outside loom zeroed memory
/// already is, so this does nothing; loom's atomics and cells are handles into the
/// model's store and are built in place.
fn init_block<D: Desc>(block: *mut D, len: usize) {
    if !LOOM {
        return;
    }
    for i in 0..len {
        // SAFETY: the block has room for `len` descriptors and is unpublished.
        unsafe { block.add(i).write(D::empty()) };
    }
}

/// Where descriptors come from: per kind, a shelf of blocks published once and
/// never freed, and a free stack of recycled descriptors.
///
/// Invariants: 1. each shelf's `dir[k]` is null or points at a block of that
///    shelf's kind and length, forever.
/// 2. every index a shelf issued (below its `fresh` and its capacity) names a
///    descriptor whose block is published, and is in exactly one place (a stack
///    or an owner).
/// 3. an index with `ARRAY_BIT` names the array shelf's descriptor `i & !ARRAY_BIT`,
///    any other the chain shelf's: the kind of an index never changes. `free_chains`
///    holds chain indices only, `free_arrays` array ones.
///
/// Memory: a chain descriptor is 16 bytes, taken 512 at a time (8 KiB blocks); an
/// array descriptor 272 bytes, 64 at a time (17 KiB), from the metadata arena when
/// the pool first needs them, and kept. Each kind grows to the most of it ever held
/// at once: the batches on the central tier's stacks (at most
/// `max_stacked_batches` per class, 512 at most; 8,366 for all the classes
/// together, 131 KiB as chains, 2.2 MiB as arrays) plus one per refill or flush in
/// flight. A process whose front ends are thread caches has no array descriptor.
///
/// Model-checked by `loom-tests/tests/desc_pool.rs` (racing growth, recycling) and
/// `transfer_stack.rs` (both kinds on one stack).
pub struct DescPool {
    chains: Shelf<BatchDesc, CHAIN_SHIFT>,
    arrays: Shelf<ArrayDesc, ARRAY_SHIFT>,
    free_chains: TransferStack,
    free_arrays: TransferStack,
    grow_lock: RawLock,
}

// SAFETY: all shared state is atomics; descriptor contents obey BatchDesc's
// invariant 1 (one owner at a time).
unsafe impl Sync for DescPool {}
// SAFETY: the shelves' blocks are process-wide and never freed (invariant 1), so
// the pool may move between threads; the rest is atomics.
unsafe impl Send for DescPool {}

impl DescPool {
    crate::sync::loom_const_fn! {
        /// A pool with no descriptor block published yet.
        pub fn new() -> DescPool {
            DescPool {
                chains: Shelf::new(),
                arrays: Shelf::new(),
                free_chains: TransferStack::new(),
                free_arrays: TransferStack::new(),
                grow_lock: RawLock::new(LockRank::DescGrowth),
            }
        }
    }

    /// Whether `i` names an array descriptor (invariant 3).
    #[inline(always)]
    pub fn is_array(i: u32) -> bool {
        i & ARRAY_BIT != 0
    }

    /// The header of descriptor `i`, of either kind.
    #[inline]
    pub fn get(&self, i: u32) -> &BatchDesc {
        if Self::is_array(i) {
            // Invariant 3: the array shelf's; its header is its start.
            &self.arrays.get(i & !ARRAY_BIT).desc
        } else {
            self.chains.get(i)
        }
    }

    /// Descriptor `i` with its slots, if it is an array descriptor (invariant 3).
    #[inline]
    pub fn array(&self, i: u32) -> Option<&ArrayDesc> {
        Self::is_array(i).then(|| self.arrays.get(i & !ARRAY_BIT))
    }

    /// Takes a free chain descriptor; None if the pool is exhausted or the OS
    /// refuses.
    pub fn alloc(&self, os: &impl Os, meta: &MetaArena) -> Option<u32> {
        if let Some(i) = self.free_chains.pop(self) {
            return Some(i);
        }
        self.chains.take_fresh(os, meta, &self.grow_lock)
    }

    /// Takes a free array descriptor: its index and itself; None if the pool is
    /// exhausted or the OS refuses.
    pub fn alloc_array(&self, os: &impl Os, meta: &MetaArena) -> Option<(u32, &ArrayDesc)> {
        let i = match self.free_arrays.pop(self) {
            Some(i) => i & !ARRAY_BIT,
            None => self.arrays.take_fresh(os, meta, &self.grow_lock)?,
        };
        // Invariant 3: `free_arrays` holds array indices; a fresh one gets the bit.
        Some((i | ARRAY_BIT, self.arrays.get(i)))
    }

    /// Returns a descriptor of either kind to the pool.
    pub fn free(&self, i: u32) {
        if Self::is_array(i) {
            self.free_arrays.push(self, i);
        } else {
            self.free_chains.push(self, i);
        }
    }

    /// Holds the growth lock (fork handlers).
    pub fn lock_growth(&self) {
        self.grow_lock.lock();
    }
    /// Releases `lock_growth`.
    pub fn unlock_growth(&self) {
        self.grow_lock.unlock();
    }

    /// Chain descriptors ever handed out fresh (for statistics and validation).
    pub fn created(&self) -> u32 {
        self.chains.fresh.load(Ordering::Relaxed)
    }
    /// Array descriptors ever handed out fresh.
    pub fn created_arrays(&self) -> u32 {
        self.arrays.fresh.load(Ordering::Relaxed)
    }

    /// Whether `i` is an index the pool handed out (invariants 2 and 3): a bound
    /// for walks that may race (`TransferStack::count_if_stable`).
    pub fn issued(&self, i: u32) -> bool {
        if Self::is_array(i) {
            self.arrays.issued(i & !ARRAY_BIT)
        } else {
            self.chains.issued(i)
        }
    }

    /// Checks invariant 3 on the free stacks (each holds its own kind, issued
    /// indices only), when no descriptor was freed or taken while they were walked
    /// (else there is nothing to check: the walk is discarded).
    pub fn validate(&self) -> Result<(), Violation> {
        for (stack, arrays) in [(&self.free_chains, false), (&self.free_arrays, true)] {
            let bad = stack.find_if_stable(self, |i| Self::is_array(i) != arrays);
            check(
                bad.is_none(),
                "DescPool",
                3,
                "a descriptor on the other kind's free stack",
                bad.unwrap_or(0) as usize,
            )?;
        }
        Ok(())
    }
}

impl Default for DescPool {
    fn default() -> Self {
        Self::new()
    }
}
