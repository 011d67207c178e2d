//! The backend: the shared tiers below the front end as one plain value (central
//! tier, page heap, huge registry, metadata arena, counters). Each allocator
//! instance (`front::Allocator`) has one; tests and loom models build their own
//! over any [`Os`].
//!
//! Who calls whom: front ends call the narrow interface below (`refill`, `flush`,
//! `note_flow`, `alloc_metadata`, `owns`); `global` calls the paths that bypass
//! thread caches (small objects of threads not set up or torn down, `large`,
//! `huge_blocks`) and `maintenance` (purge, fork locks, validation); `stats` and
//! `heap_map` read it. It calls `central`, `page_heap`, `huge`, `meta` and the OS,
//! and imports nothing above it.
//!
//! Files: this one (the value, the front-end interface, direct small paths,
//! `usable_size`), `large` (whole-page blocks and their in-place resize),
//! `huge_blocks` (own mappings and the policy of the huge cache), `maintenance`
//! (multi-lock walks, release, purge, validation), `counters`.

use crate::central::{Batch, Central};
use crate::chunk::{ChunkHeader, HEADER_PAGES, SpanKind, small_object};
use crate::huge::{self, HugeRegistry};
use crate::link::{FreeObj, ensure_key};
use crate::meta::MetaArena;
use crate::os::Os;
use crate::page_heap::PageHeap;
use crate::size_class::{HUGE_ALIGN, HUGE_THRESHOLD, SizeClass, class_for};
use crate::sync::{AtomicBool, AtomicUsize, Ordering};

use core::ptr;

mod cache_pool;
mod counters;
mod huge_blocks;
mod large;
mod maintenance;

pub use cache_pool::{CachePool, DEFAULT_CACHE_POOL};
pub(crate) use counters::Counters;

/// How a request of a given size and alignment is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// From a thread cache, in this class.
    Small(SizeClass),
    /// A span of whole pages from the page heap.
    Large,
    /// A mapping of its own.
    Huge,
}

/// Where `size` bytes at `align` go. Deterministic, so `dealloc` with the same
/// layout finds the same route with no lookup. A zero size counts as one byte.
#[inline]
pub fn route(size: usize, align: usize) -> Route {
    let size = size.max(1);
    match class_for(size, align) {
        Some(c) => Route::Small(c),
        None if size <= HUGE_THRESHOLD && align <= HUGE_ALIGN => Route::Large,
        None => Route::Huge,
    }
}

/// The shared state of one allocator instance.
pub struct Backend<O: Os> {
    /// Chunks, spans and free pages.
    pub page_heap: PageHeap<O>,
    /// Per-class transfer stacks and spans.
    pub central: Central,
    /// Metadata that is never freed (thread heaps, descriptor blocks, records).
    pub meta: MetaArena,
    /// Blocks with mappings of their own, and the cache of freed ones.
    pub huge: HugeRegistry,
    /// Byte budget of the cache of freed huge mappings (`huge`, "The cache").
    huge_cache_budget: HugeBudget,
    /// Whether the OS refused a move of cached mappings into a new huge block (then
    /// no more are built: `huge_blocks`, `build_huge`): 0 while it has not, so that
    /// the value starts all zero.
    huge_moves_refused: AtomicUsize,
    pub(crate) counters: Counters,
    /// Room thread caches borrow beyond their own budgets (`cache_pool`).
    pub cache_pool: CachePool,
    /// Set once a front end that refills from arrays (the per-CPU caches) serves
    /// some thread: then thread caches flush whole batches as arrays too
    /// ([`Backend::arrays_wanted`]). False (a zero byte) at first, so the value
    /// starts all zero.
    arrays_wanted: AtomicBool,
}

/// The huge-cache budget, stored XOR its default so that the default is zero bytes
/// and the process's statics stay all zero (in `.bss`: TransferStack invariant 1);
/// `load` and `store` as an `AtomicUsize`'s. Checked builds unmap huge blocks at
/// free (so that a late access faults): their default is 0.
struct HugeBudget(AtomicUsize);

impl HugeBudget {
    const DEFAULT: usize = if cfg!(feature = "checked") {
        0
    } else {
        huge::DEFAULT_CACHE_BYTES
    };
    crate::sync::loom_const_fn! {
        fn new() -> HugeBudget {
            HugeBudget(AtomicUsize::new(0))
        }
    }
    #[inline]
    fn load(&self, o: Ordering) -> usize {
        self.0.load(o) ^ Self::DEFAULT
    }
    #[inline]
    fn store(&self, bytes: usize, o: Ordering) {
        self.0.store(bytes ^ Self::DEFAULT, o)
    }
}

/// A set of the backend's locks for [`Backend::lock_set`] and
/// [`Backend::with_locked`], which take them in the lock order whatever the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locks(u8);

impl Locks {
    /// The front end's pool of thread heaps: taken by `Allocator::lock_set` (front
    /// end), first; the backend's own `lock_set` leaves it to that caller.
    pub const POOL: Locks = Locks(1);
    /// Every central class lock.
    pub const CLASSES: Locks = Locks(2);
    /// The page heap.
    pub const PAGE_HEAP: Locks = Locks(4);
    /// Growth of the descriptor pool.
    pub const DESC_GROWTH: Locks = Locks(8);
    /// The huge registry.
    pub const HUGE: Locks = Locks(16);
    /// The metadata arena.
    pub const META: Locks = Locks(32);
    /// Every lock of the backend (the fork handlers).
    pub const ALL: Locks = Locks(63);

    /// Both sets.
    pub const fn and(self, other: Locks) -> Locks {
        Locks(self.0 | other.0)
    }
    /// Whether `self` holds all of `other`.
    pub const fn has(self, other: Locks) -> bool {
        self.0 & other.0 == other.0
    }
}

impl<O: Os> Backend<O> {
    crate::sync::loom_const_fn! {
        /// A backend over `os` with nothing mapped yet.
        pub fn new(os: O) -> Backend<O> {
            Backend {
                page_heap: PageHeap::new(os),
                central: Central::new(),
                meta: MetaArena::new(),
                huge: HugeRegistry::new(),
                // Checked builds unmap huge blocks at free, so a late access faults.
                huge_cache_budget: HugeBudget::new(),
                huge_moves_refused: AtomicUsize::new(0),
                arrays_wanted: AtomicBool::new(false),
                counters: Counters::new(),
                cache_pool: CachePool::new(),
            }
        }
    }

    pub(crate) fn os(&self) -> &O {
        self.page_heap.os()
    }

    // ---- the front ends' interface ---------------------------------------------------

    /// A batch of class-`c` objects from the central tier (`count == 0` if the OS
    /// refuses memory).
    #[inline]
    pub fn refill(&self, c: SizeClass) -> Batch {
        self.central.refill(c, &self.page_heap)
    }

    /// A batch from the transfer stack, or at most `want` (`1..=batch`) objects
    /// carved from spans, a span's whole free list where the batch stays within
    /// `room` objects (`Central::refill_within`); `count == 0` if the OS refuses
    /// memory.
    #[inline]
    pub fn refill_within(&self, c: SizeClass, want: usize, room: usize) -> Batch {
        self.central.refill_within(c, &self.page_heap, want, room)
    }

    /// A batch of class-`c` objects as an array in `out` (at least a batch long),
    /// each with the free mark in its first word (`Central::refill_array`); how
    /// many, 0 if the OS refuses memory.
    #[inline]
    pub fn refill_array(&self, c: SizeClass, out: &mut [*mut u8]) -> usize {
        self.central.refill_array(c, &self.page_heap, out)
    }

    /// Hands `objs`, class-`c` objects of this backend that nobody uses, each with
    /// the free mark in its first word, to the central tier without touching
    /// them when they make a full batch (`Central::flush_array`).
    ///
    /// # Safety
    /// `objs` are distinct class-`c` objects of this backend that nobody uses,
    /// each carrying the free mark (hardened builds).
    #[inline]
    pub unsafe fn flush_array(&self, c: SizeClass, objs: &[*mut u8]) {
        // SAFETY: per the contract.
        unsafe {
            self.central
                .flush_array(c, objs, &self.page_heap, &self.meta)
        }
    }

    /// Says that a front end refilling from arrays serves some thread from now on
    /// (the per-CPU caches, once their slab is built): whole batches flushed by
    /// thread caches then go to the central tier as arrays, converted by the
    /// flushing thread, whose objects are in its cache, rather than walked by a
    /// CPU's refill, whose are not.
    pub fn want_arrays(&self) {
        // Relaxed: a hint read on flushes; nothing is published with it.
        // Tested first so that the line is not written again by every thread.
        if !self.arrays_wanted.load(Ordering::Relaxed) {
            self.arrays_wanted.store(true, Ordering::Relaxed);
        }
    }

    /// Whether [`Backend::want_arrays`] was called.
    #[inline]
    pub fn arrays_wanted(&self) -> bool {
        // Relaxed: as in `want_arrays`.
        self.arrays_wanted.load(Ordering::Relaxed)
    }

    /// Hands a chain of `n` class-`c` objects to the central tier.
    ///
    /// # Safety
    /// `head` starts a chain of exactly `n >= 1` class-`c` objects of this backend,
    /// linked as `FreeObj`s and null-terminated, that nobody uses.
    #[inline]
    pub unsafe fn flush(&self, c: SizeClass, head: *mut FreeObj, n: usize) {
        // SAFETY: per the contract.
        unsafe { self.central.flush(c, head, n, &self.page_heap, &self.meta) }
    }

    /// Adds `delta` bytes to the figure of bytes handed out of the shared tiers
    /// (front ends publish their net refills and flushes here).
    #[inline]
    pub fn note_flow(&self, delta: isize) {
        self.counters.flow(delta);
    }

    /// Memory for a front end's own records (never freed); null if the OS refuses.
    pub fn alloc_metadata(&self, size: usize, align: usize) -> *mut u8 {
        self.meta.alloc(self.os(), size, align)
    }

    /// Whether `p` lies in one of this backend's chunks.
    #[inline]
    pub fn owns(&self, p: *const u8) -> bool {
        self.page_heap.owns(p)
    }

    /// The byte budget of the cache of freed huge mappings (0 turns it off; what
    /// it holds above the new budget goes at the next huge free or `release_memory`).
    pub fn set_huge_cache_budget(&self, bytes: usize) {
        // Relaxed: a setting; nothing is published with it.
        self.huge_cache_budget.store(bytes, Ordering::Relaxed);
    }

    // ---- paths without a thread cache ----------------------------------------------

    /// One class-`c` object straight from the central tier (threads being torn down).
    pub fn alloc_small_direct(&self, c: SizeClass) -> *mut u8 {
        let b = self.central.refill(c, &self.page_heap);
        if b.count == 0 {
            return ptr::null_mut();
        }
        Counters::bump(&self.counters.direct_allocs);
        self.counters.flow(c.size_bytes() as isize);
        if b.count > 1 {
            // SAFETY: the rest of the batch is ours and unused.
            unsafe {
                self.central.release_objects(
                    c,
                    FreeObj::next(b.head, c),
                    b.count - 1,
                    &self.page_heap,
                )
            };
        }
        // SAFETY: the batch's first object is ours to hand out; its link is spent
        // (see `FreeObj::clear`).
        unsafe { FreeObj::clear(b.head) };
        b.head.cast()
    }

    /// Returns one class-`c` object straight to its span.
    ///
    /// # Safety
    /// `p` is a live class-`c` block from this backend that the caller gives up.
    pub unsafe fn free_small_direct(&self, c: SizeClass, p: *mut u8) {
        let obj = p.cast::<FreeObj>();
        Counters::bump(&self.counters.direct_frees);
        self.counters.flow(-(c.size_bytes() as isize));
        // A thread whose heap could not be set up comes here with its first free:
        // the link key may not be set yet.
        ensure_key();
        // SAFETY: the block is ours now; a chain of one.
        unsafe {
            FreeObj::set_next(obj, ptr::null_mut());
            self.central.release_objects(c, obj, 1, &self.page_heap);
        }
    }

    /// Usable bytes of a block of ours, found by address (for `free` without a size,
    /// `malloc_usable_size` and checks); None if `p` is not the start of one of our
    /// blocks.
    pub fn usable_size(&self, p: *const u8) -> Option<usize> {
        if self.page_heap.owns(p) {
            // SAFETY: `p` lies in a mapped chunk (chunk map), so its header is readable;
            // the page map and kinds are atomics, so a stale read is not UB. No lock
            // is held, so no plain field of a span is read unless `p` is the start of
            // a Large span, the caller's own block (`base` comes from the descriptor's
            // address, Span invariant 7).
            unsafe {
                let chunk = &*ChunkHeader::of(p);
                let page = ChunkHeader::page_of(p);
                if page < HEADER_PAGES {
                    return None;
                }
                if let Some(c) = small_object(p as usize) {
                    return Some(c.size_bytes());
                }
                let span = &*chunk.span_of(p);
                // The page map entry may be stale for an interior page of a Large
                // span (Span invariant 2): only the span's own start counts.
                match span.kind() {
                    SpanKind::Large => ptr::eq(span.base(), p).then_some(span.bytes()),
                    _ => None,
                }
            }
        } else {
            self.huge.lookup(p)
        }
    }
}

#[cfg(all(test, not(strata_loom)))]
mod tests;
