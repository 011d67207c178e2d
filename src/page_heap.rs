//! The page heap: spans of pages inside aligned chunks.
//!
//! Best fit over free spans (a bin per page count, a bitmap of non-empty bins) by
//! default, or first or next fit (`placement`, chosen at start-up),
//! coalescing with both neighbours on free, purge (`MADV_DONTNEED`) of spans free for
//! longer than the purge delay, and unmapping of chunks that have been wholly free
//! for longer than the delay, beyond a reserve of [`CHUNK_RESERVE`] (a churn of
//! chunk-sized frees and allocations reuses them instead of paying a fresh mapping
//! and a page fault per page each time). Everything here runs under one lock but
//! the mapping of a fresh chunk and the writing of its header, which no other
//! thread can reach until it is filed under the lock; the central tier calls in
//! once per span, never per object.
//!
//! Lock order: a central class lock may be held while taking the page-heap lock,
//! never the reverse.
//!
//! Who calls whom: the central tier (spans for a class), the backend (Large blocks,
//! purge, release, validation) and, from above, `stats` and `heap_map` (walks) call
//! in; it calls `chunk` and the OS only. Files: this one (the state, span
//! allocation and free with coalescing, walks), `resize` (in-place resize of Large
//! spans), `bins` (best fit and the bin lists), `placement` (the policies), `purge`
//! (purge and unmap), `validate`.

use crate::Violation;
use crate::check::check;
use crate::chunk::{
    CHUNK_MAGIC, ChunkHeader, ChunkMap, HEADER_PAGES, SPAN_LISTED, SPAN_ZEROED, Span, SpanKind,
    USABLE_PAGES,
};
use crate::os::{Os, OsError};
use crate::size_class::{CHUNK_SIZE, NO_CLASS, PAGE_SIZE, PAGES_PER_CHUNK, SizeClass};
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, LockRank, Ordering, RawLock, UnsafeCell};
use core::ptr;

/// Wholly free chunks kept mapped (their pages still purged after the delay), so a
/// program that frees and reallocates a chunk's worth does not pay mmap each time.
pub const CHUNK_RESERVE: usize = 1;
/// Wholly free chunks kept at most while they wait for the delay (1 GiB): beyond
/// that a chunk that becomes wholly free is unmapped at once, so a program that
/// frees more than that and goes idle does not keep it all. Below it, a program that
/// grows a cache and clears it gets the same chunks, still resident, at its next
/// growth within the delay: with 8 (32 MiB) a 512 MiB grow-and-clear cycle unmapped
/// and mapped again ~120 chunks a round and faulted in every page of them
/// (`benches/large_ring/grow_clear.rs`: 202,500 page faults and 1.5 s for three
/// rounds, against 137,900 and 0.9 s with 256; tcmalloc 135,000). The purge pass
/// still unmaps them, beyond the reserve, once free for longer than the delay.
pub const MAX_FREE_CHUNKS: usize = 256;
/// Default delay before a free span's pages are returned with `MADV_DONTNEED`.
pub const DEFAULT_PURGE_DELAY_MS: u64 = 1000;
/// Purges the OS may refuse in one pass before the pass gives up (see `purge_where`).
pub const PURGE_FAILURES_PER_PASS: usize = 2;

const BINS: usize = USABLE_PAGES + 1;
const BIN_WORDS: usize = BINS.div_ceil(64);

/// Byte and page counts of the page heap, read under its lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageHeapStats {
    /// Chunks currently mapped.
    pub chunks: usize,
    /// Bytes of chunks currently mapped.
    pub mapped_bytes: usize,
    /// Bytes in free spans.
    pub free_bytes: usize,
    /// Bytes in free spans whose pages are purged or never touched.
    pub free_zeroed_bytes: usize,
    /// Bytes purged with `MADV_DONTNEED`, ever.
    pub purged_bytes_total: u64,
    /// Bytes of chunks unmapped, ever.
    pub unmapped_bytes_total: u64,
    /// Purges the OS refused, ever (their spans stayed dirty).
    pub purge_failures: u64,
    /// Chunk unmaps the OS refused, ever (their chunks stayed mapped and filed).
    pub unmap_failures: u64,
    /// Free spans (runs of free pages; each is as long as it can be, coalescing
    /// sees to that).
    pub free_spans: usize,
    /// Bytes of the largest free span: the largest Large block served without
    /// mapping a chunk (alignment aside).
    pub largest_free_span_bytes: usize,
}

/// The page heap.
///
/// Invariants (checked by [`PageHeap::validate`]): those of [`Span`] 1–3, 5 and 6 and
/// [`ChunkHeader`] 3, plus
/// 1. bit `b` of `nonempty` is set iff `bins[b]` is non-empty;
/// 2. `free_pages` is the sum of the sizes of all free spans; `free_chunks` counts the
///    chunks whose usable pages form one free span, at most `MAX_FREE_CHUNKS` (those
///    beyond `CHUNK_RESERVE` are unmapped by the purge pass once free for longer than
///    the delay) unless the OS has refused an unmap (`unmap_failures > 0`): a chunk
///    it refused stays filed as wholly free, over the bound, until a pass unmaps it;
/// 3. every mapped chunk is in the chunk list and in the chunk map, but one that
///    `alloc_span` has mapped and not yet filed (`map_chunk` to `file_chunk`): that
///    one is the calling thread's alone, reached through no list, bin or map.
/// 4. `zeroed_pages` is the sum of the sizes of the binned spans with `SPAN_ZEROED`,
///    so `nchunks × CHUNK_SIZE - zeroed_pages × PAGE_SIZE` bounds the resident bytes.
///
/// The placement policy (`placement`) only picks which fitting free span
/// `alloc_span` cuts; every invariant above holds under each.
///
/// Model-checked by `loom-tests/tests/coalescing.rs` (neighbours freed at once) and
/// `purge.rs` (purge racing reuse, "known zero" claims).
pub struct PageHeap<O: Os> {
    lock: RawLock,
    inner: UnsafeCell<Inner>,
    os: O,
    chunk_map: ChunkMap,
    purge_delay_ms: AtomicU64,
    /// Resident bytes outside chunks (huge blocks), kept by the backend.
    extra_resident: AtomicUsize,
    /// Chunk resident bytes as of the last change under the lock (invariant 4).
    chunk_resident: AtomicUsize,
    /// `nchunks × CHUNK_SIZE` as of the last change under the lock, for lock-free
    /// readers (`Backend::gauges`).
    chunk_mapped: AtomicUsize,
    /// High-water mark of `chunk_resident + extra_resident`.
    peak_resident: AtomicUsize,
    /// The process whose own thread does the delayed purge passes (0: none, the
    /// frees do them): `leave_passes_to`.
    passes_by: AtomicU32,
}

struct Inner {
    bins: [*mut Span; BINS],
    nonempty: [u64; BIN_WORDS],
    chunks: *mut ChunkHeader,
    nchunks: usize,
    free_chunks: usize,
    free_pages: usize,
    zeroed_pages: usize,
    last_purge_ms: u64,
    purged_total: u64,
    unmapped_total: u64,
    purge_failures: u64,
    unmap_failures: u64,
    /// The placement policy; changed only while `committed` is false.
    placement: Placement,
    /// Whether the layout may show the policy's choices: set once a span has been
    /// freed, an alignment has left free pages before a span, or a second chunk
    /// has been mapped. Until then there is one chunk, used from its start up with
    /// one free span after, and every policy would have made the same choices.
    committed: bool,
    /// Next fit's roving address: the end of the span handed out last.
    rover: usize,
}

// SAFETY: `inner` and every span and chunk header it reaches are only touched with
// `lock` held (Span invariant 3); the rest is atomics.
unsafe impl<O: Os + Sync> Sync for PageHeap<O> {}
// SAFETY: the raw pointers in `inner` refer to process-wide mappings, touched
// only with `lock` held (Span invariant 3), by whichever thread holds it.
unsafe impl<O: Os + Send> Send for PageHeap<O> {}

impl<O: Os> PageHeap<O> {
    crate::sync::loom_const_fn! {
        /// An empty page heap that maps chunks from `os` on demand.
        pub fn new(os: O) -> PageHeap<O> {
            PageHeap {
                lock: RawLock::new(LockRank::PageHeap),
                inner: UnsafeCell::new(Inner {
                    bins: [ptr::null_mut(); BINS],
                    nonempty: [0; BIN_WORDS],
                    chunks: ptr::null_mut(),
                    nchunks: 0,
                    free_chunks: 0,
                    free_pages: 0,
                    zeroed_pages: 0,
                    last_purge_ms: 0,
                    purged_total: 0,
                    unmapped_total: 0,
                    purge_failures: 0,
                    unmap_failures: 0,
                    placement: Placement::Best,
                    committed: false,
                    rover: 0,
                }),
                os,
                chunk_map: ChunkMap::new(),
                purge_delay_ms: AtomicU64::new(0),
                extra_resident: AtomicUsize::new(0),
                chunk_resident: AtomicUsize::new(0),
                chunk_mapped: AtomicUsize::new(0),
                peak_resident: AtomicUsize::new(0),
                passes_by: AtomicU32::new(0),
            }
        }
    }

    /// The OS layer.
    #[inline]
    pub fn os(&self) -> &O {
        &self.os
    }

    /// The OS clock, for purge delays and the huge cache's ages. If it cannot be
    /// read, `u64::MAX`: every delay counts as over, so free memory goes back at once
    /// (as with a zero delay) rather than never. (A clock that fails and then works
    /// again leaves the spans freed meanwhile to `release_memory`, or to their next
    /// coalescing, which restamps them.)
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.os.now_ms().unwrap_or(u64::MAX)
    }

    /// Whether `p` lies in one of this heap's chunks (never reads through `p`).
    #[inline]
    pub fn owns(&self, p: *const u8) -> bool {
        self.chunk_map.contains(p)
    }

    /// Sets how long a free span stays resident before it is purged.
    pub fn set_purge_delay_ms(&self, ms: u64) {
        // Relaxed: a setting; nothing is published with it.
        // Stored XOR the default, so that the default is zero bytes and the
        // process's statics stay all zero (in `.bss`: TransferStack invariant 1).
        self.purge_delay_ms
            .store(ms ^ DEFAULT_PURGE_DELAY_MS, Ordering::Relaxed);
    }

    /// The purge delay.
    pub fn purge_delay_ms(&self) -> u64 {
        self.purge_delay_ms.load(Ordering::Relaxed) ^ DEFAULT_PURGE_DELAY_MS
    }

    /// Adds `delta` bytes resident outside the chunks (huge blocks mapped or unmapped)
    /// and updates the peak.
    pub fn note_extra_resident(&self, delta: isize) {
        // Relaxed: statistics; nothing is published with them.
        let extra = self
            .extra_resident
            .fetch_add(delta as usize, Ordering::Relaxed)
            .wrapping_add(delta as usize);
        let total = self.chunk_resident.load(Ordering::Relaxed) + extra;
        self.peak_resident.fetch_max(total, Ordering::Relaxed);
    }

    /// High-water mark of the bytes that may be resident (chunks and huge blocks).
    pub fn peak_resident_bytes(&self) -> usize {
        self.peak_resident.load(Ordering::Relaxed)
    }

    /// The bytes that may be resident now, read without the lock: chunks as of the
    /// last change under the lock (minus free pages known purged or untouched) plus
    /// huge blocks, live and cached. What `stats` derives from its walk, in O(1).
    pub fn resident_bytes(&self) -> usize {
        // Relaxed: statistics; each figure is one recent value.
        self.chunk_resident.load(Ordering::Relaxed) + self.extra_resident.load(Ordering::Relaxed)
    }

    /// The bytes mapped now, read without the lock: chunks as of the last change
    /// under the lock plus huge blocks, live and cached (every huge byte is counted
    /// resident, so the huge share is `extra_resident`).
    pub fn mapped_bytes(&self) -> usize {
        // Relaxed: as above.
        self.chunk_mapped.load(Ordering::Relaxed) + self.extra_resident.load(Ordering::Relaxed)
    }

    /// Records the chunk resident bytes after a change (lock held via `h`).
    fn note_resident(&self, h: &Inner) {
        let now = h.nchunks * CHUNK_SIZE - h.zeroed_pages * PAGE_SIZE;
        // Relaxed: statistics, written under the lock, read by anyone.
        self.chunk_resident.store(now, Ordering::Relaxed);
        self.chunk_mapped
            .store(h.nchunks * CHUNK_SIZE, Ordering::Relaxed);
        let total = now + self.extra_resident.load(Ordering::Relaxed);
        self.peak_resident.fetch_max(total, Ordering::Relaxed);
    }

    #[inline]
    fn with_inner<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let _g = self.lock.guard();
        // SAFETY: we hold the lock, so no one else touches `inner` (invariant of Sync):
        // this `&mut` is the only reference to it while it lives. It covers `Inner`
        // alone; chunk headers and span descriptors, which other threads read by
        // address, are reached through `&` and cells.
        self.inner.with_mut(|i| f(unsafe { &mut *i }))
    }

    /// A span of `npages` pages whose base is aligned to `align_pages` pages, marked
    /// `kind` (Small with `class`, or Large); null if the OS refuses memory.
    pub fn alloc_span(
        &self,
        npages: usize,
        align_pages: usize,
        kind: SpanKind,
        class: SizeClass,
    ) -> *mut Span {
        let Some(need) = pages_needed(npages, align_pages) else {
            return ptr::null_mut();
        };
        // A chunk is mapped and its header written outside the lock (a system call
        // and page faults another thread would wait for), then filed under it and
        // cut in the same hold, so a thread that mapped one always gets its span.
        let mut mapped: *mut ChunkHeader = ptr::null_mut();
        loop {
            let (span, unneeded) = self.with_inner(|h| {
                // SAFETY: `mapped` is null or from `map_chunk`, never filed.
                let unneeded = unsafe { self.file_mapped(h, mapped, need) };
                let span = find_free(h, need, h.placement);
                if span.is_null() {
                    if !mapped.is_null() {
                        // A fresh chunk holds any span that fits USABLE_PAGES.
                        fatal!("alloc_span: a fresh chunk has no fitting free span");
                    }
                    return (span, unneeded);
                }
                // SAFETY: a free span from the bins that fits, under the lock.
                let span = unsafe { self.cut_span(h, span, npages, align_pages, kind, class) };
                (span, unneeded)
            });
            if !unneeded.is_null() {
                // SAFETY: mapped by `map_chunk`, never filed, so reached by no one.
                unsafe { self.drop_unfiled_chunk(unneeded) };
            }
            if !span.is_null() {
                return span;
            }
            mapped = self.map_chunk();
            if mapped.is_null() {
                return ptr::null_mut();
            }
        }
    }

    /// [`PageHeap::alloc_span`] from the free spans only: null, with no system
    /// call, where none fits (then [`PageHeap::make_room`] maps a chunk). For a
    /// caller that holds a lock of its own, which must not wait on a mapping.
    pub fn alloc_span_from_free(
        &self,
        npages: usize,
        align_pages: usize,
        kind: SpanKind,
        class: SizeClass,
    ) -> *mut Span {
        let Some(need) = pages_needed(npages, align_pages) else {
            return ptr::null_mut();
        };
        self.with_inner(|h| {
            let span = find_free(h, need, h.placement);
            if span.is_null() {
                return span;
            }
            // SAFETY: a free span from the bins that fits, under the lock.
            unsafe { self.cut_span(h, span, npages, align_pages, kind, class) }
        })
    }

    /// Makes sure a free span of `npages` pages exists, mapping and filing a chunk
    /// if none does (the mapping outside the lock); false if the OS refuses it.
    /// Another thread may take the room before the caller's next allocation.
    pub fn make_room(&self, npages: usize) -> bool {
        let Some(need) = pages_needed(npages, 1) else {
            return false;
        };
        if self.with_inner(|h| !find_free(h, need, h.placement).is_null()) {
            return true;
        }
        let mapped = self.map_chunk();
        if mapped.is_null() {
            return false;
        }
        // SAFETY: from `map_chunk`, never filed.
        let unneeded = self.with_inner(|h| unsafe { self.file_mapped(h, mapped, need) });
        if !unneeded.is_null() {
            // SAFETY: mapped by `map_chunk`, never filed, so reached by no one.
            unsafe { self.drop_unfiled_chunk(unneeded) };
        }
        true
    }

    /// Files `mapped` (null: nothing to do) if no free span fits `need` pages, or
    /// as a spare wholly free chunk if invariant 2 allows one more (another thread
    /// made room while it was mapped, often with a chunk it mapped at the same
    /// time: the next growth takes this one). Returns it if it was not filed,
    /// for the caller to unmap once the lock is dropped; else null.
    ///
    /// # Safety
    /// Lock held (via `h`); `mapped` is null or came from `map_chunk` of this heap
    /// and was never filed.
    unsafe fn file_mapped(
        &self,
        h: &mut Inner,
        mapped: *mut ChunkHeader,
        need: usize,
    ) -> *mut ChunkHeader {
        if mapped.is_null() {
            return mapped;
        }
        if !find_free(h, need, h.placement).is_null() && h.free_chunks >= MAX_FREE_CHUNKS {
            return mapped;
        }
        // Mutant: a chunk mapped while another thread made room is dropped on
        // the floor, still mapped.
        #[cfg(strata_mutant = "unneeded_chunk_leaks")]
        if !find_free(h, need, h.placement).is_null() {
            return ptr::null_mut();
        }
        // SAFETY: per the contract, a mapped, written chunk no other thread reaches.
        unsafe { self.file_chunk(h, mapped) };
        ptr::null_mut()
    }

    /// Cuts `npages` pages aligned to `align_pages` from free span `span` (which
    /// fits them with the alignment), marks them `kind` (and `class`) and files
    /// what is left over; returns the new span.
    ///
    /// # Safety
    /// Lock held (via `h`); `span` is in the bins and holds `npages + align_pages
    /// - 1` pages or more.
    unsafe fn cut_span(
        &self,
        h: &mut Inner,
        mut span: *mut Span,
        npages: usize,
        align_pages: usize,
        kind: SpanKind,
        class: SizeClass,
    ) -> *mut Span {
        // SAFETY: spans in bins are Free descriptors in mapped chunks, owned by us
        // under the lock (Span invariant 3).
        unsafe {
            if (*span).npages() as usize == USABLE_PAGES {
                h.free_chunks -= 1;
            }
            bin_remove(h, span);
            let align_bytes = align_pages * PAGE_SIZE;
            let base = (*span).base() as usize;
            let front = (base.next_multiple_of(align_bytes) - base) / PAGE_SIZE;
            if front > 0 {
                h.committed = true;
                let rest = split(span, front);
                bin_insert(h, span);
                span = rest;
            }
            if (*span).npages() as usize > npages {
                let tail = split(span, npages);
                bin_insert(h, tail);
            }
            h.free_pages -= npages;
            let s = &*span;
            h.rover = s.base() as usize + s.bytes();
            s.set_class(class);
            s.set_kind(kind);
            s.set_flags(s.flags() & SPAN_ZEROED);
            let chunk = &*s.chunk();
            let (first, last) = (s.start() as usize, (s.start() + s.npages() - 1) as usize);
            if kind == SpanKind::Small {
                // Objects live on every page: map them all, and give each the
                // class and base that `free` checks (Span invariants 2 and 6).
                let base = s.base();
                for p in first..=last {
                    chunk.set_first(p, first);
                    chunk.set_small(p, class, base);
                }
            } else {
                // A Large block is found by its start; coalescing needs the end.
                chunk.set_first(first, first);
                chunk.set_first(last, first);
            }
        }
        self.note_resident(h);
        span
    }

    /// Returns a Small or Large span to the heap; its contents are dead.
    ///
    /// # Safety
    /// `span` came from `alloc_span` of this heap and is no longer used by anyone.
    pub unsafe fn free_span(&self, span: *mut Span) {
        let now = self.now_ms();
        self.with_inner_to_free(|h| {
            // SAFETY: the caller gives up the span; we hold the lock.
            unsafe { self.free_locked(h, span, now) };
            // Purge under the same lock: a span being purged is in a bin, so no one
            // can take it meanwhile (no purge/reuse race). One slice of a due pass.
            #[cfg(not(strata_mutant = "purge_unlocked"))]
            self.maybe_purge(h, now);
            self.note_resident(h);
        });
        // Mutant: purge after dropping the lock (to keep madvise out of it), with
        // nothing keeping a concurrent alloc_span off the span being purged.
        #[cfg(strata_mutant = "purge_unlocked")]
        self.with_inner_unlocked(|h| self.maybe_purge(h, now));
    }

    /// `with_inner` for `free_span` (a mutant skips the lock there).
    #[inline(always)]
    fn with_inner_to_free<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        #[cfg(not(strata_mutant = "page_heap_free_unlocked"))]
        return self.with_inner(f);
        // Mutant: the bins and counters without the page-heap lock.
        #[cfg(strata_mutant = "page_heap_free_unlocked")]
        return self.with_inner_unlocked(f);
    }

    /// Mutants only: `with_inner` without the lock.
    #[cfg(any(
        strata_mutant = "page_heap_free_unlocked",
        strata_mutant = "purge_unlocked"
    ))]
    fn with_inner_unlocked<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // SAFETY: none; this is the deliberate fault a loom model must catch.
        self.inner.with_mut(|i| f(unsafe { &mut *i }))
    }

    /// Purges every free span now and unmaps every wholly free chunk (no reserve).
    /// Returns the bytes purged or unmapped.
    pub fn release_all(&self) -> usize {
        self.with_inner(|h| {
            // Wholly free chunks first (no reserve), then every other free span.
            // In one hold of the lock, unlike the delayed passes: no budget.
            let mut unlimited = PurgeBudget::UNLIMITED;
            let mut released = self.unmap_free_chunks(h, 0, &mut unlimited, |_| true);
            debug_check!(
                h.free_chunks == 0 || h.unmap_failures > 0,
                "release_all: a free chunk survived without a refused unmap"
            );
            released += self.purge_where(h, usize::MAX, &mut unlimited, |_| true);
            self.note_resident(h);
            released
        })
    }

    /// Holds the lock (for fork handlers).
    pub fn lock(&self) {
        self.lock.lock();
    }
    /// Releases the lock taken by `lock`.
    pub fn unlock(&self) {
        self.lock.unlock();
    }

    /// Maps one more chunk and writes its header: its usable pages one free span,
    /// no page holding small objects. Called without the lock: until `file_chunk`
    /// links the chunk into the list, the bins and the chunk map, no other thread
    /// can reach it. Null if the OS refuses the mapping.
    fn map_chunk(&self) -> *mut ChunkHeader {
        let base = self.os.map(CHUNK_SIZE, CHUNK_SIZE);
        if base.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: a fresh, zeroed, chunk-aligned mapping; a zeroed header is valid
        // (null links, kind None everywhere) except under loom, whose atomics are
        // built in place first. No other thread can reach it until `file_chunk`
        // publishes it; shared references only, all the same (the header's plain
        // fields are cells).
        unsafe {
            #[cfg(strata_loom)]
            ChunkHeader::init_in_place(base.cast());
            let chunk_ptr = base.cast::<ChunkHeader>();
            let chunk = &*chunk_ptr;
            // Zero would be class 0: no page holds small objects yet (ChunkHeader
            // invariant 3).
            for p in 0..PAGES_PER_CHUNK {
                chunk.clear_small(p);
            }
            chunk.set_magic(CHUNK_MAGIC);
            let span = ChunkHeader::span_ptr(chunk_ptr, HEADER_PAGES);
            (*span).set_start(HEADER_PAGES as u32);
            (*span).set_npages(USABLE_PAGES as u32);
            (*span).set_flags(SPAN_ZEROED);
            (*span).set_kind(SpanKind::Free);
            chunk_ptr
        }
    }

    /// Files a chunk from `map_chunk`: into the chunk list, its free span into the
    /// bins, its address into the chunk map (invariant 3).
    ///
    /// # Safety
    /// Lock held (via `h`); `chunk_ptr` came from `map_chunk` of this heap and was
    /// never filed.
    unsafe fn file_chunk(&self, h: &mut Inner, chunk_ptr: *mut ChunkHeader) {
        h.committed |= h.nchunks > 0;
        // SAFETY: per the contract the chunk is mapped, its header written, and no
        // other thread reaches it; the chunk list's head is ours under the lock.
        unsafe {
            let chunk = &*chunk_ptr;
            chunk.set_next(h.chunks);
            if !h.chunks.is_null() {
                (*h.chunks).set_prev(chunk_ptr);
            }
            h.chunks = chunk_ptr;
            let span = ChunkHeader::span_ptr(chunk_ptr, HEADER_PAGES);
            // Free from now, not since the mapping: the purge pass must not unmap
            // it before the request that mapped it is served.
            (*span).set_free_since_ms(self.now_ms());
            bin_insert(h, span);
        }
        h.nchunks += 1;
        h.free_chunks += 1;
        h.free_pages += USABLE_PAGES;
        self.chunk_map.set(chunk_ptr as usize);
    }

    /// Gives back a chunk from `map_chunk` that was not needed after all (another
    /// thread made room while it was mapped) when as many wholly free chunks as
    /// invariant 2 allows are filed already. If the OS refuses the unmap the chunk
    /// is filed instead, as a wholly free chunk the purge pass retries (invariant 2's
    /// exception for refused unmaps).
    ///
    /// # Safety
    /// `chunk_ptr` came from `map_chunk` of this heap and was never filed; the
    /// page-heap lock is not held.
    unsafe fn drop_unfiled_chunk(&self, chunk_ptr: *mut ChunkHeader) {
        // SAFETY: the mapping is ours alone (never filed, so unreachable by others)
        // and CHUNK_SIZE long.
        if unsafe { self.os.unmap(chunk_ptr.cast(), CHUNK_SIZE) }.is_ok() {
            return;
        }
        self.with_inner(|h| {
            h.unmap_failures += 1;
            // SAFETY: still mapped (the unmap was refused) and never filed.
            unsafe { self.file_chunk(h, chunk_ptr) };
            self.note_resident(h);
        });
    }

    /// Frees `span` into the bins, coalescing; unmaps its chunk if it becomes wholly
    /// free beyond the reserve.
    ///
    /// # Safety
    /// Lock held (via `h`); `span` is a Small or Large span nobody uses.
    unsafe fn free_locked(&self, h: &mut Inner, span: *mut Span, now: u64) {
        // SAFETY: per the contract; neighbours are descriptors of the same chunk.
        unsafe {
            let mut span = span;
            let chunk_ptr = (*span).chunk();
            let chunk = &*chunk_ptr;
            // Mutant: the pages keep their class after the span is gone.
            #[cfg(not(strata_mutant = "span_release_keeps_class"))]
            if (*span).kind() == SpanKind::Small {
                // Its pages hold no objects any more (Span invariant 6); the span may
                // next be cut into Large spans, which map only their ends.
                let start = (*span).start() as usize;
                for p in start..start + (*span).npages() as usize {
                    chunk.clear_small(p);
                }
            }
            h.free_pages += (*span).npages() as usize;
            h.committed = true;
            (*span).set_kind(SpanKind::Free);
            (*span).set_flags(0);
            let start = (*span).start() as usize;
            if start > HEADER_PAGES {
                let left = ChunkHeader::span_ptr(chunk_ptr, chunk.first(start - 1));
                if (*left).kind() == SpanKind::Free {
                    // Mutant: the left neighbour stays in its old bin as well.
                    #[cfg(not(strata_mutant = "coalesce_skips_unlink"))]
                    bin_remove(h, left);
                    (*left).set_npages((*left).npages() + (*span).npages());
                    (*span).set_kind(SpanKind::None);
                    span = left;
                }
            }
            let r = ((*span).start() + (*span).npages()) as usize;
            if r < PAGES_PER_CHUNK {
                let right = ChunkHeader::span_ptr(chunk_ptr, r);
                if (*right).kind() == SpanKind::Free {
                    bin_remove(h, right);
                    (*span).set_npages((*span).npages() + (*right).npages());
                    (*right).set_kind(SpanKind::None);
                }
            }
            // The merged span holds the freed (dirty) pages: whatever a neighbour knew
            // about its own pages being zero no longer holds for the whole (Span
            // invariant 5). A mutant keeps the left neighbour's flag.
            #[cfg(not(strata_mutant = "coalesce_keeps_zeroed"))]
            {
                (*span).set_flags(0);
            }
            #[cfg(strata_mutant = "coalesce_keeps_zeroed")]
            {
                (*span).set_flags((*span).flags() & !SPAN_LISTED);
            }
            (*span).set_free_since_ms(now);
            if (*span).npages() as usize == USABLE_PAGES {
                // Kept mapped for now (`maybe_purge` unmaps it after the delay if it
                // is beyond the reserve), unless that many are kept already.
                // If the unmap fails the chunk stays ours, filed like any other
                // wholly free chunk (one more than the bound of invariant 2 may then
                // be kept until a purge pass unmaps it).
                if h.free_chunks >= MAX_FREE_CHUNKS && self.unmap_chunk(h, chunk_ptr).is_ok() {
                    return;
                }
                h.free_chunks += 1;
            }
            bin_insert(h, span);
        }
    }
}

/// The free pages a span of `npages` aligned to `align_pages` pages needs at worst
/// (the alignment may waste up to `align_pages - 1` in front); None if no chunk
/// holds that many.
fn pages_needed(npages: usize, align_pages: usize) -> Option<usize> {
    debug_check!(
        npages >= 1 && align_pages.is_power_of_two(),
        "alloc_span: no pages or an alignment that is not a power of two"
    );
    npages
        .checked_add(align_pages - 1)
        .filter(|&need| need <= USABLE_PAGES)
}

mod bins;
mod placement;
mod purge;
mod readers;
mod resize;
mod validate;

use bins::{bin_insert, bin_remove, find_bin, for_each_free_span, for_each_free_span_from, split};
use placement::find_free;
pub use placement::{Placement, PlacementError};
use purge::PurgeBudget;

/// Runs each named test, a `fn(Placement)` of the module, under every placement
/// policy: one `#[test]` per policy, in modules `best`, `first` and `next` (so
/// `cargo test --lib page_heap::tests::first::` runs one policy's).
#[cfg(all(test, not(strata_loom)))]
macro_rules! under_every_placement {
    ($($name:ident),* $(,)?) => {
        under_every_placement!(@one best Best $($name),*);
        under_every_placement!(@one first First $($name),*);
        under_every_placement!(@one next Next $($name),*);
    };
    (@one $m:ident $p:ident $($name:ident),*) => {
        mod $m {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::page_heap::Placement::$p)
                }
            )*
        }
    };
}

/// A page heap over `os` under placement policy `p`.
#[cfg(all(test, not(strata_loom)))]
fn placed<O: Os>(p: Placement, os: O) -> PageHeap<O> {
    let ph = PageHeap::new(os);
    ph.set_placement(p).unwrap();
    ph
}

#[cfg(all(test, not(strata_loom)))]
mod big_page_tests;
#[cfg(all(test, not(strata_loom)))]
mod placement_tests;
#[cfg(all(test, not(strata_loom)))]
mod tests;
