//! The shared tiers as one plain value: central tier, page heap, huge registry,
//! metadata arena and the pool of thread heaps. The process has one (in global.rs);
//! tests and loom models build their own over any [`Os`].
//!
//! Also here: the paths that bypass thread caches (large spans, huge mappings, frees
//! from threads already torn down) and `realloc`'s in-place cases.

use crate::Violation;
use crate::central::{Central, validate_small_span};
use crate::check::check;
use crate::chunk::{ChunkHeader, HEADER_PAGES, SPAN_ZEROED, Span, SpanKind, small_object};
use crate::huge::{self, Evicted, HugeRegistry};
use crate::link::{FreeObj, ensure_key};
use crate::meta::MetaArena;
use crate::os::{OS_PAGE, Os};
use crate::page_heap::PageHeap;
use crate::size_class::{HUGE_ALIGN, HUGE_THRESHOLD, NUM_CLASSES, PAGE_SIZE, SizeClass, class_for};
use crate::sync::{AtomicUsize, LockRank, Ordering, RawLock, UnsafeCell};
use crate::thread_heap::{DEFAULT_CACHE_BUDGET, HeapState, ThreadHeap};
use core::marker::PhantomData;

mod counters;
use core::ptr;
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
    pool_lock: RawLock,
    pool: UnsafeCell<HeapPool>,
    cache_budget: AtomicUsize,
    /// Byte budget of the cache of freed huge mappings (`huge`, "The cache").
    huge_cache_budget: AtomicUsize,
    pub(crate) counters: Counters,
}

/// Invariants: 1. every heap ever created is either live (owned by a thread) or in
/// the `free` list, Pooled and with empty lists: `live + |free| == created`.
/// 2. `all` links (through `all_next`) every heap ever created, `created` of them;
/// heaps are never freed, so statistics may read any of them at any time.
struct HeapPool {
    free: *mut ThreadHeap,
    all: *mut ThreadHeap,
    live: usize,
    created: usize,
}

// SAFETY: `pool` is only touched under `pool_lock`; the parts are Sync themselves.
unsafe impl<O: Os + Sync> Sync for Backend<O> {}
// SAFETY: as above.
unsafe impl<O: Os + Send> Send for Backend<O> {}

/// A set of the backend's locks for [`Backend::lock_set`] and
/// [`Backend::with_locked`], which take them in the lock order whatever the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locks(u8);

impl Locks {
    /// The pool of thread heaps.
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

/// Every heap ever created, from the pool's `all` list (invariant 2: heaps are never
/// freed, and the list only grows at its head under the pool lock), for
/// [`Backend::with_heaps_and_classes_locked`]; walk it as often as needed.
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

impl<O: Os> Backend<O> {
    crate::sync::loom_const_fn! {
        /// A backend over `os` with nothing mapped yet.
        pub fn new(os: O) -> Backend<O> {
            Backend {
                page_heap: PageHeap::new(os),
                central: Central::new(),
                meta: MetaArena::new(),
                huge: HugeRegistry::new(),
                pool_lock: RawLock::new(LockRank::HeapPool),
                pool: UnsafeCell::new(HeapPool {
                    free: ptr::null_mut(),
                    all: ptr::null_mut(),
                    live: 0,
                    created: 0,
                }),
                cache_budget: AtomicUsize::new(DEFAULT_CACHE_BUDGET),
                // Checked builds unmap huge blocks at free, so a late access faults.
                huge_cache_budget: AtomicUsize::new(if cfg!(feature = "checked") {
                    0
                } else {
                    huge::DEFAULT_CACHE_BYTES
                }),
                counters: Counters::new(),
            }
        }
    }

    fn os(&self) -> &O {
        self.page_heap.os()
    }

    // ---- thread heaps -------------------------------------------------------------

    /// A live thread heap (recycled from the pool when possible); null if the OS
    /// refuses memory.
    pub fn new_thread_heap(&self) -> *mut ThreadHeap {
        let _g = self.pool_lock.guard();
        // SAFETY: pool lock held, and every access to `pool` takes it: the only
        // reference to the pool while it lives (the heaps it links are reached by
        // `&ThreadHeap` only).
        let pool = self.pool.with_mut(|p| unsafe { &mut *p });
        let mut h = pool.free;
        if h.is_null() {
            h = self
                .meta
                .alloc(self.os(), core::mem::size_of::<ThreadHeap>(), 64)
                .cast();
            if h.is_null() {
                return h;
            }
            // SAFETY: fresh arena memory sized and aligned for a ThreadHeap.
            unsafe {
                h.write(ThreadHeap::new(HeapState::Pooled));
                (*h).set_all_next(pool.all);
            }
            pool.all = h;
            pool.created += 1;
        } else {
            // SAFETY: pooled heaps are ours under the pool lock.
            pool.free = unsafe { (*h).pool_next() };
        }
        pool.live += 1;
        // SAFETY: `h` is a flushed heap that no thread uses (fresh, or just taken off
        // the pool under its lock); the caller becomes its owner.
        unsafe { (*h).activate(self.cache_budget.load(Ordering::Relaxed)) };
        h
    }

    /// Flushes a thread's heap and puts it in the pool for the next thread.
    ///
    /// # Safety
    /// `h` came from `new_thread_heap` and its thread will not use it again.
    pub unsafe fn retire_thread_heap(&self, h: *mut ThreadHeap) {
        // SAFETY: the caller hands the heap over: until it is pooled below, the
        // calling thread is its owner. Shared (`&`): statistics read its counters
        // through the list of all heaps meanwhile.
        let heap = unsafe { &*h };
        // Flush before pooling: once pooled, the next thread may take the heap.
        #[cfg(not(strata_mutant = "retire_pools_before_flush"))]
        // SAFETY: we own the heap (above); a live heap, not a sentinel.
        unsafe {
            heap.flush_all(self);
            heap.retire();
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
        // Mutant: the heap is in the pool (a new thread may be using it) while its
        // old objects are still being flushed.
        #[cfg(strata_mutant = "retire_pools_before_flush")]
        // SAFETY: none: this mutant breaks the ownership contract on purpose.
        unsafe {
            heap.flush_all(self);
            heap.retire();
        }
    }

    /// Runs `f` with the pool lock and then every class lock held (through
    /// [`Backend::with_locked`]), giving it every heap ever created (live ones are in
    /// use by their threads: read only their atomics) and the (live, created) counts.
    pub fn with_heaps_and_classes_locked<R>(
        &self,
        f: impl FnOnce(AllHeaps<'_>, (usize, usize)) -> R,
    ) -> R {
        self.with_locked(Locks::POOL.and(Locks::CLASSES), || {
            // SAFETY: pool lock held.
            let pool = self.pool.with(|p| unsafe { &*p });
            let heaps = AllHeaps {
                first: pool.all,
                _pool_held: PhantomData,
            };
            f(heaps, (pool.live, pool.created))
        })
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
        self.cache_budget.store(bytes, Ordering::Relaxed);
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

    /// A block of whole pages; zeroed if `zero` (free when the pages are known zero).
    pub fn alloc_large(&self, size: usize, align: usize, zero: bool) -> *mut u8 {
        let npages = size.div_ceil(PAGE_SIZE);
        let align_pages = (align / PAGE_SIZE).max(1);
        let span = self
            .page_heap
            .alloc_span(npages, align_pages, SpanKind::Large, SizeClass(0));
        if span.is_null() {
            return ptr::null_mut();
        }
        Counters::bump(&self.counters.large_allocs);
        // SAFETY: a Large span just given to us.
        unsafe {
            let s = &*span;
            self.counters.flow(s.bytes() as isize);
            let p = s.base();
            if zero && s.flags() & SPAN_ZEROED == 0 {
                ptr::write_bytes(p, 0, size);
            }
            p
        }
    }

    /// Frees a block from `alloc_large`.
    ///
    /// # Safety
    /// `p` came from `alloc_large` of this backend and is not used any more.
    pub unsafe fn free_large(&self, p: *mut u8) {
        // SAFETY: `p` is the base of a live Large span in a mapped chunk.
        unsafe {
            let span = (*ChunkHeader::of(p)).span_of(p);
            debug_check!(
                (*span).kind() == SpanKind::Large && (*span).base() == p,
                "free_large: not the start of a Large span"
            );
            Counters::bump(&self.counters.large_frees);
            self.counters.flow(-((*span).bytes() as isize));
            self.page_heap.free_span(span);
        }
    }

    /// A mapping of its own: from the cache of freed huge mappings if one is there
    /// (see `huge`, "The cache"), else fresh from the OS. Zeroed if `zero`: a fresh
    /// mapping is; a cached one is cleared where it held data (its pages are
    /// resident, so a memset costs less than the page faults of a fresh one). An
    /// over-page-aligned request always gets a fresh mapping.
    pub fn alloc_huge(&self, size: usize, align: usize, zero: bool) -> *mut u8 {
        let Some(len) = size.max(1).checked_next_multiple_of(OS_PAGE) else {
            return ptr::null_mut();
        };
        if len > isize::MAX as usize {
            return ptr::null_mut();
        }
        let (mut p, mut got) = (ptr::null_mut(), len);
        if align <= OS_PAGE {
            let dirty;
            (p, got, dirty) = self.take_cached_huge(len);
            if zero && !p.is_null() {
                // SAFETY: the block is ours, at least `len >= size` bytes; past
                // `dirty` it is fresh (zero) pages.
                unsafe { p.write_bytes(0, dirty.min(size)) };
            }
        }
        if p.is_null() {
            p = self.os().map(len, align.max(OS_PAGE));
            if p.is_null() {
                return p;
            }
            self.page_heap.note_extra_resident(len as isize);
        }
        if !self.huge.insert(self.os(), &self.meta, p, got) {
            // SAFETY: the mapping was never handed out; nothing else names it.
            unsafe { self.unmap_huge(p, got) };
            return ptr::null_mut();
        }
        Counters::bump(&self.counters.huge_allocs);
        self.counters.flow(got as isize);
        p
    }

    /// A cached mapping made into a block of at least `len` bytes, `(address,
    /// length, dirty)`: its first `dirty` bytes hold old data, the rest are fresh
    /// zero pages; null if the cache had none or the resize failed. A mapping up to
    /// a quarter longer than `len` is used whole; from a longer one the block is
    /// split off, and the tail goes back to the cache, still resident, if it is at
    /// least [`HUGE_THRESHOLD`] and fits without pushing anything out (else it is
    /// unmapped); a shorter one is grown by `remap` (which keeps its resident pages).
    ///
    /// Keeping tails: on `malloc-large` (20 blocks of 5-25 MiB replaced at random)
    /// every page a grow adds is a fault, and a model of the cache put them at 825
    /// pages a block when tails were unmapped and 492 when kept, for 10 % more peak
    /// resident memory.
    fn take_cached_huge(&self, len: usize) -> (*mut u8, usize, usize) {
        let now = self.page_heap.now_ms();
        let (got, ev) = self
            .huge
            .take_cached(len, now, self.page_heap.purge_delay_ms());
        self.unmap_evicted(&ev);
        let Some((q, qlen)) = got else {
            return (ptr::null_mut(), len, 0);
        };
        let q = q as *mut u8;
        #[cfg(not(strata_mutant = "huge_cache_takes_short"))]
        let whole = qlen >= len && qlen - len <= len / 4;
        // Mutant: a cached mapping is used as it is, even when it is too short.
        #[cfg(strata_mutant = "huge_cache_takes_short")]
        let whole = qlen.saturating_sub(len) <= len / 4;
        if whole {
            return (q, qlen, qlen);
        }
        if qlen > len {
            let tail = qlen - len;
            // SAFETY: `q` starts a whole mapping of `qlen` bytes that the cache gave
            // us; `len` and `qlen` are multiples of OS_PAGE, `len < qlen`.
            unsafe { self.os().split(q, qlen, len) };
            let t = q as usize + len;
            let budget = self.huge_cache_budget.load(Ordering::Relaxed);
            if tail < HUGE_THRESHOLD || !self.huge.keep_tail(t, tail, now, budget) {
                // SAFETY: the tail is a whole mapping now, ours alone.
                unsafe { self.unmap_huge(t as *mut u8, tail) };
            }
            return (q, len, len);
        }
        // SAFETY: `q` starts a whole mapping of `qlen` bytes that the cache gave us.
        let r = unsafe { self.os().remap(q, qlen, len) };
        if r.is_null() {
            // SAFETY: as above; nothing else names it.
            unsafe { self.unmap_huge(q, qlen) };
            return (ptr::null_mut(), len, 0);
        }
        self.page_heap
            .note_extra_resident(len as isize - qlen as isize);
        (r, len, qlen.min(len))
    }

    /// Unmaps what the huge cache let go; returns the bytes unmapped.
    fn unmap_evicted(&self, ev: &Evicted) -> usize {
        let mut bytes = 0;
        for (p, len) in ev.iter() {
            // SAFETY: an evicted mapping is whole, ours, and named by nothing.
            if unsafe { self.unmap_huge(p as *mut u8, len) } {
                bytes += len;
            }
        }
        bytes
    }

    /// Unmaps a huge mapping that nothing names; true if the OS took it back.
    ///
    /// If the OS refuses (`ENOMEM` at `vm.max_map_count`), the mapping is still ours
    /// and still resident: it goes back into the huge cache (dirty, like any cached
    /// mapping, so a zeroed request clears it) if a slot is free, to be reused or to
    /// expire and be unmapped again after the delay. If the cache has no room, its
    /// pages are purged, so that at worst the address range is lost, not the memory
    /// (and if that fails too, both are: there is nothing left to ask the OS).
    ///
    /// # Safety
    /// `[p, p+len)` is a whole mapping of ours (registry, cache or fresh) that nothing
    /// names and nobody uses.
    unsafe fn unmap_huge(&self, p: *mut u8, len: usize) -> bool {
        // SAFETY: per the contract.
        if unsafe { self.os().unmap(p, len) }.is_ok() {
            self.page_heap.note_extra_resident(-(len as isize));
            return true;
        }
        if self
            .huge
            .keep_refused(p as usize, len, self.page_heap.now_ms())
        {
            return false;
        }
        // SAFETY: the mapping is live and its contents are dead (per the contract).
        if unsafe { self.os().purge(p, len) }.is_ok() {
            self.page_heap.note_extra_resident(-(len as isize));
        }
        false
    }

    /// Frees a block from `alloc_huge`: into the cache of freed huge mappings if it
    /// fits there, else back to the OS.
    ///
    /// # Safety
    /// `p` came from `alloc_huge` (or `realloc_huge`) and is not used any more.
    pub unsafe fn free_huge(&self, p: *mut u8) {
        let (len, ev) = self.huge.retire(
            p,
            self.page_heap.now_ms(),
            self.page_heap.purge_delay_ms(),
            self.huge_cache_budget.load(Ordering::Relaxed),
        );
        if let Some(len) = len {
            Counters::bump(&self.counters.huge_frees);
            self.counters.flow(-(len as isize));
        } else {
            debug_check!(false, "free_huge: a block the huge registry does not know");
        }
        self.unmap_evicted(&ev);
    }

    /// Resizes a huge block with `mremap` (no copy); null, with the block intact, if
    /// the OS refuses.
    ///
    /// The result is page aligned; a caller that needs more (a Rust `Layout` aligned
    /// beyond a page) must not use this.
    ///
    /// # Safety
    /// `p` is a live huge block.
    pub unsafe fn realloc_huge(&self, p: *mut u8, new_size: usize) -> *mut u8 {
        let Some(new_len) = new_size.checked_next_multiple_of(OS_PAGE) else {
            return ptr::null_mut();
        };
        if new_len > isize::MAX as usize {
            return ptr::null_mut();
        }
        let remap = |old_len: usize| {
            if new_len == old_len {
                return p;
            }
            // SAFETY: `p` starts a whole mapping of `old_len` bytes (registry).
            let q = unsafe { self.os().remap(p, old_len, new_len) };
            if !q.is_null() {
                let delta = new_len as isize - old_len as isize;
                self.counters.flow(delta);
                self.page_heap.note_extra_resident(delta);
            }
            q
        };
        // Mutant: the remap runs before the registry lock is taken (the code before
        // the fix), so the OS may hand `p` to another thread's new block, whose
        // record goes in while ours still names `p`.
        let early = if cfg!(strata_mutant = "huge_remap_unlocked") {
            self.huge.lookup(p).map(remap)
        } else {
            None
        };
        // The remap and the record's move happen under the registry lock, so that
        // no other block can be registered at `p` (which the OS may reuse as soon
        // as the remap moved the block) meanwhile: see `HugeRegistry::resize`.
        self.huge
            .resize(p, new_len, |old_len| {
                early.unwrap_or_else(|| remap(old_len))
            })
            .unwrap_or(ptr::null_mut())
    }

    /// Tries to resize a Large block in place to `new_size` bytes.
    ///
    /// # Safety
    /// `p` is a live block from `alloc_large`.
    pub unsafe fn resize_large_in_place(&self, p: *mut u8, new_size: usize) -> bool {
        // SAFETY: `p` is the base of a live Large span.
        unsafe {
            let span: *mut Span = (*ChunkHeader::of(p)).span_of(p);
            let have = (*span).npages() as usize;
            let want = new_size.div_ceil(PAGE_SIZE);
            let delta = (want as isize - have as isize) * PAGE_SIZE as isize;
            let done = if want == have {
                true
            } else if want < have {
                self.page_heap.shrink_in_place(span, want);
                true
            } else {
                self.page_heap.grow_in_place(span, want)
            };
            if done {
                self.counters.flow(delta);
            }
            done
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

    // ---- multi-lock walks ------------------------------------------------------------

    /// Takes the locks in `set` in the lock order (`sync/rank.rs`): heap pool,
    /// central classes (index order), page heap, descriptor growth, huge registry,
    /// metadata arena. The one place that takes several of the backend's locks at
    /// once; [`Backend::unlock_set`] releases them.
    pub fn lock_set(&self, set: Locks) {
        if set.has(Locks::POOL) {
            self.pool_lock.lock();
        }
        if set.has(Locks::CLASSES) {
            self.central.lock_all();
        }
        if set.has(Locks::PAGE_HEAP) {
            self.page_heap.lock();
        }
        if set.has(Locks::DESC_GROWTH) {
            self.central.lock_desc_growth();
        }
        if set.has(Locks::HUGE) {
            self.huge.lock();
        }
        if set.has(Locks::META) {
            self.meta.lock();
        }
    }

    /// Releases what `lock_set(set)` took, in reverse order (in a fork child too: its
    /// only thread is the one that took them).
    pub fn unlock_set(&self, set: Locks) {
        if set.has(Locks::META) {
            self.meta.unlock();
        }
        if set.has(Locks::HUGE) {
            self.huge.unlock();
        }
        if set.has(Locks::DESC_GROWTH) {
            self.central.unlock_desc_growth();
        }
        if set.has(Locks::PAGE_HEAP) {
            self.page_heap.unlock();
        }
        if set.has(Locks::CLASSES) {
            self.central.unlock_all();
        }
        if set.has(Locks::POOL) {
            self.pool_lock.unlock();
        }
    }

    /// Runs `f` with the locks in `set` held ([`Backend::lock_set`]). `f` may take
    /// locks ranked above every one in `set`, one at a time (the page heap's
    /// `for_each_span` does, so walks over spans leave `PAGE_HEAP` out of `set`).
    pub fn with_locked<R>(&self, set: Locks, f: impl FnOnce() -> R) -> R {
        self.lock_set(set);
        let r = f();
        self.unlock_set(set);
        r
    }

    // ---- release and validation ---------------------------------------------------

    /// Moves central batches back to spans and returns every free page to the OS.
    /// Returns the bytes purged or unmapped.
    pub fn release_shared(&self) -> usize {
        for c in 0..NUM_CLASSES {
            self.central.drain(SizeClass(c as u8), &self.page_heap);
        }
        self.unmap_evicted(&self.huge.drain_cache()) + self.page_heap.release_all()
    }

    /// Returns to the OS what has been free for longer than the purge delay: dirty
    /// free pages (purged), wholly free chunks beyond the reserve and cached huge
    /// mappings (unmapped). What a busy heap does on its own at page-heap frees and
    /// huge operations, for the background purge thread to do while the program is
    /// idle. Returns the bytes purged or unmapped.
    pub fn purge_due(&self) -> usize {
        let (now, delay) = (self.page_heap.now_ms(), self.page_heap.purge_delay_ms());
        self.unmap_evicted(&self.huge.expire_cache(now, delay)) + self.page_heap.purge_due()
    }

    /// Moves the batches of every class whose transfer stack has not changed since
    /// the last call (`seen` holds each stack's version then; `u64::MAX` for never)
    /// back to their spans, so that spans left empty go back to the page heap and
    /// are purged after the delay. Batches nobody took for a whole pause of the
    /// background purge thread are memory an idle program would otherwise keep; a
    /// busy class changes its version at every refill or flush and is left alone.
    /// Returns the bytes drained.
    pub fn drain_idle_central(&self, seen: &mut [u64; NUM_CLASSES]) -> usize {
        let mut drained = 0;
        for (ci, last) in seen.iter_mut().enumerate() {
            let c = SizeClass(ci as u8);
            if self.central.stack_version(c) == *last {
                drained += self.central.drain(c, &self.page_heap) * c.size_bytes();
            }
            *last = self.central.stack_version(c);
        }
        drained
    }

    /// Checks every invariant of the shared tiers: the heap pool, the page heap
    /// (chunks, spans, bins), the huge registry, every Small span of every class, and
    /// every class's lists. Blocks allocation while it runs: it holds the pool lock
    /// and every class lock (in that order, as every walk) and takes the page-heap
    /// and huge-registry locks in turn.
    pub fn validate(&self) -> Result<(), Violation> {
        self.with_locked(Locks::POOL.and(Locks::CLASSES), || self.validate_locked())
    }

    /// Checks the heap pool's invariants: pooled heaps are Pooled and empty,
    /// `live + pooled == created`, and the `all` list holds `created` heaps. Called
    /// with the pool lock held (`validate`).
    fn validate_pool(&self) -> Result<(), Violation> {
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
            unsafe { heap.validate(self) }?;
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

    /// `validate` with the pool lock and every class lock held.
    fn validate_locked(&self) -> Result<(), Violation> {
        self.page_heap.validate()?;
        self.huge.validate()?;
        self.validate_pool()?;
        let mut small = [0usize; NUM_CLASSES];
        let mut res = Ok(());
        self.page_heap.for_each_span(|s| {
            if s.kind() == SpanKind::Small && res.is_ok() {
                small[s.class().index()] += 1;
                // SAFETY: the caller holds every class lock.
                res = unsafe { validate_small_span(s) };
            }
        });
        res?;
        // SAFETY: every class lock is held.
        unsafe { self.central.validate_locked(&small) }
    }
}

#[cfg(all(test, not(strata_loom)))]
mod tests;
