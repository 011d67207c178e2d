//! Statistics: [`Stats`], a snapshot of the whole heap assembled on demand, and
//! [`Gauges`], its main byte figures read from counters without a lock.
//!
//! Sits above the tiers and only reads them: the front end's heaps (through
//! `Allocator::with_heaps_and_classes_locked`), the backend's counters
//! (`backend::Counters`, kept where the counted paths are), the central tier's
//! stacks and the page heap's spans. Nothing below imports this module.
//!
//! Nothing here runs on the fast path. The thread heaps count one thing there
//! (`allocs`, one `add` to memory per pop); everything else is counted where objects
//! cross tiers (refill, flush, large and huge paths) or read from the structures
//! themselves when a snapshot is taken:
//! - per class, objects out of spans (`Σ span.live`, under the class locks), minus
//!   those stacked in the central tier, minus those cached in thread heaps, is the
//!   number of live objects;
//! - frees are derived, per heap, from `received + frees == allocs + returned +
//!   cached` (ThreadHeap invariant 4);
//! - bytes by state come from one walk over every span of every chunk.
//!
//! Consistency: the walk holds every class lock and the page-heap lock, so span,
//! page and chunk figures are exact and add up. Thread-cache figures are read from
//! other threads' heaps while they run (atomics, relaxed): exact when the process is
//! quiescent, otherwise off by the batches in flight. Derived figures are clamped so
//! that `allocated ≤ active ≤ mapped` and `resident ≤ mapped` always hold.

// `global` counts reallocations through this path.
pub(crate) use crate::backend::Counters;
use crate::chunk::{HEADER_PAGES, SPAN_ZEROED, SpanKind};
use crate::front::Allocator;
use crate::front::thread_cache::HeapCounters;
use crate::os::Os;
use crate::size_class::{CHUNK_SIZE, CLASS_SIZE, NUM_CLASSES, PAGE_SIZE, SizeClass};
use crate::sync::{Ordering, fence};

/// One size class in a [`Stats`] snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// Object size of the class, bytes.
    pub size: u32,
    /// Objects in use by the program.
    pub live_objects: u64,
    /// Spans of the class.
    pub spans: u64,
    /// Bytes of the pages of the class's spans.
    pub span_bytes: u64,
    /// Objects cached in thread heaps.
    pub thread_cached: u64,
    /// Objects in full batches on the class's central transfer stack.
    pub central_cached: u64,
    /// Objects of the class allocated through thread heaps, ever.
    pub allocs: u64,
}

impl ClassStats {
    /// Object slots in the class's spans that hold nothing (free in their span or
    /// never carved), as bytes, including each span's tail that fits no object.
    pub fn span_free_bytes(&self) -> u64 {
        let out = self.live_objects + self.thread_cached + self.central_cached;
        self.span_bytes.saturating_sub(out * self.size as u64)
    }
}

/// The heap's main byte figures, each one relaxed load (or two) of a counter the
/// tiers keep as they change: see [`crate::gauges`]. No lock, no walk; the figures
/// are not taken at one instant, so they need not add up the way [`Stats`]' do.
///
/// Precision, against a [`Stats`] snapshot of a quiescent program (tested):
/// - `resident_bytes`, `mapped_bytes` and the peaks are the same figures;
/// - `allocated_bytes` is `Stats::allocated_bytes + Stats::thread_cached_bytes` to
///   within 256 KiB per live thread heap (see the field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gauges {
    /// Bytes handed out of the shared tiers: live blocks at their usable size plus
    /// the free objects cached in thread heaps (up to the thread cache budget per
    /// thread, 2 MiB by default), since those left the shared tiers. Each thread
    /// publishes its small-object flow in steps of 256 KiB, so the figure lags by
    /// up to that much per thread; large and huge blocks count at once.
    pub allocated_bytes: u64,
    /// Bytes that may be resident: as [`Stats::resident_bytes`] (chunks minus free
    /// pages known purged or untouched, huge blocks live and cached, metadata).
    pub resident_bytes: u64,
    /// Bytes mapped from the OS: as [`Stats::mapped_bytes`].
    pub mapped_bytes: u64,
    /// High-water mark of `allocated_bytes`: as [`Stats::peak_allocated_bytes`].
    pub peak_allocated_bytes: u64,
    /// High-water mark of `resident_bytes`: as [`Stats::peak_resident_bytes`].
    pub peak_resident_bytes: u64,
}

impl<O: Os> Allocator<O> {
    /// Reads the [`Gauges`]: a handful of relaxed loads, no lock, no allocation.
    pub fn gauges(&self) -> Gauges {
        let meta = self.meta.mapped_bytes() as u64;
        let resident = self.page_heap.resident_bytes() as u64 + meta;
        let allocated = self.counters.out_bytes();
        Gauges {
            allocated_bytes: allocated,
            resident_bytes: resident,
            mapped_bytes: self.page_heap.mapped_bytes() as u64 + meta,
            peak_allocated_bytes: self.counters.peak_out_bytes().max(allocated),
            peak_resident_bytes: (self.page_heap.peak_resident_bytes() as u64 + meta).max(resident),
        }
    }
}

/// A snapshot of the whole heap: see [`crate::stats`].
///
/// Byte identities that hold in every snapshot (tested):
/// - `allocated_bytes = Σ class.live_objects × class.size + large_bytes + huge_bytes`;
/// - `active_bytes = Σ class.span_bytes + large_bytes + huge_bytes`, and
///   `Σ class.span_bytes = Σ (live + thread_cached + central_cached) × size + span_free_bytes`;
/// - `chunks × CHUNK_SIZE = chunk header bytes + Σ class.span_bytes + large_bytes + page_free_bytes`;
/// - `mapped_bytes = chunks × CHUNK_SIZE + huge_bytes + huge_cached_bytes + metadata arena`;
/// - `allocated ≤ active ≤ mapped`, `resident ≤ mapped`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Live blocks, rounded up to their usable size (size class, pages).
    pub allocated_bytes: u64,
    /// Live blocks as requested: exact in checked mode (every block records its
    /// size); `None` in the default build, which does not keep requested sizes.
    pub requested_bytes: Option<u64>,
    /// Pages of spans in use (small and large) plus huge mappings.
    pub active_bytes: u64,
    /// Bytes that may be resident: mapped minus free pages known to be purged or
    /// never touched. An upper bound on strata's share of the RSS.
    pub resident_bytes: u64,
    /// Bytes mapped from the OS: chunks, huge blocks, metadata arena.
    pub mapped_bytes: u64,
    /// Chunk headers (descriptors, page maps) plus the metadata arena.
    pub metadata_bytes: u64,
    /// Objects cached in thread heaps, bytes.
    pub thread_cached_bytes: u64,
    /// Objects in the central tier's batches, bytes.
    pub central_cached_bytes: u64,
    /// Unused object slots inside small spans (fragmentation), bytes.
    pub span_free_bytes: u64,
    /// Free pages in the page heap, bytes.
    pub page_free_bytes: u64,
    /// The free pages that are purged or were never touched (cost no RSS), bytes.
    pub page_purged_bytes: u64,
    /// Free spans in the page heap: runs of free pages between spans in use (the
    /// more for the same `page_free_bytes`, the more fragmented).
    pub free_spans: u64,
    /// The largest free span, bytes: the largest Large block the page heap can
    /// serve without mapping a chunk.
    pub largest_free_span_bytes: u64,
    /// Bytes returned with `MADV_DONTNEED` since start.
    pub purged_bytes_total: u64,
    /// Bytes of chunks unmapped since start.
    pub unmapped_bytes_total: u64,
    /// High-water mark of `resident_bytes` (chunks and huge blocks; the metadata
    /// arena, which only grows, added at its current size).
    pub peak_resident_bytes: u64,
    /// High-water mark of bytes handed out (live plus thread-cached), exact to within
    /// 256 KiB per thread (thread heaps publish their flow in steps of that size).
    pub peak_allocated_bytes: u64,
    /// Allocations since start (`realloc` counts once, as a reallocation, not as
    /// an allocation and a free).
    pub allocs: u64,
    /// Frees since start.
    pub frees: u64,
    /// Reallocations since start.
    pub reallocs: u64,
    /// The reallocations that kept the block where it was.
    pub reallocs_in_place: u64,
    /// Thread heaps in use.
    pub thread_heaps_live: u64,
    /// Thread heaps ever created (a heap is reused through a pool).
    pub thread_heaps_created: u64,
    /// Chunks mapped.
    pub chunks: u64,
    /// Large blocks (whole pages, up to 1 MiB).
    pub large_blocks: u64,
    /// Bytes of the Large blocks.
    pub large_bytes: u64,
    /// Huge blocks (own mappings, above 1 MiB).
    pub huge_blocks: u64,
    /// Bytes of the huge blocks.
    pub huge_bytes: u64,
    /// Freed huge mappings kept resident for reuse (up to `set_huge_cache_bytes`).
    pub huge_cached_bytes: u64,
    /// The per-CPU front end's capacities, all CPUs together (the most its caches
    /// can hold now); 0 while it does not serve (`STRATA_PERCPU=1`).
    pub percpu_capacity_bytes: u64,
    /// The budget those capacities keep to (`set_percpu_cache_bytes`); 0 while the
    /// per-CPU front end does not serve.
    pub percpu_budget_bytes: u64,
    /// The pool thread caches borrow from beyond their own budgets, all together
    /// (`set_thread_cache_pool_bytes`).
    pub thread_cache_pool_bytes: u64,
    /// The bytes of that pool lent to thread caches now.
    pub thread_cache_lent_bytes: u64,
    /// Per size class, smallest first.
    pub classes: [ClassStats; NUM_CLASSES],
}

impl<O: Os> Allocator<O> {
    /// Assembles a [`Stats`] snapshot (takes every class lock, then the page-heap lock,
    /// one after the other; never allocates).
    pub fn stats(&self) -> Stats {
        let mut classes = [ClassStats::default(); NUM_CLASSES];
        for (ci, c) in classes.iter_mut().enumerate() {
            c.size = CLASS_SIZE[ci];
        }
        let mut heaps = HeapCounters::default();
        let mut frees = 0;
        let mut out = [0u64; NUM_CLASSES];
        let (mut large_blocks, mut large_bytes) = (0u64, 0u64);
        // Chunk and free-page figures come from the same walk as the spans, so they
        // add up even while other threads allocate.
        let (mut chunks, mut free, mut zeroed) = (0usize, 0usize, 0usize);
        let (mut free_spans, mut largest_free) = (0usize, 0usize);
        let (mut live_heaps, mut created) = (0, 0);
        // Objects move between a thread heap and the central tier in two steps (out
        // of one, into the other), and a mover may wait for a class lock in between:
        // read meanwhile, its objects would count as live. Every heap marks its moves
        // (a sequence lock, `ThreadHeap::move_seq`): a reading is kept when no heap's
        // sequence was odd or changed across it. The transfer stacks' versions,
        // equal before and after, show that no batch was pushed or popped meanwhile
        // (those need no class lock). Retry, letting the movers finish; after 32
        // tries take the last reading (off by the batches in transit).
        const ATTEMPTS: usize = 32;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                crate::sync::yield_thread();
            }
            let stable = self.with_heaps_and_classes_locked(|all, (live, made)| {
                let (mut seqs, mut moving) = (0u64, false);
                for h in all.iter() {
                    let s = h.move_seq();
                    seqs = seqs.wrapping_add(s);
                    moving |= s % 2 == 1;
                }
                // A move under way fails this reading anyway: skip the walk (it holds
                // every class lock, a millisecond for a few hundred MiB of spans),
                // except on the last try, whose reading is taken as it is.
                if moving && attempt + 1 < ATTEMPTS {
                    return false;
                }
                let mut versions = [0u64; NUM_CLASSES];
                for (ci, v) in versions.iter_mut().enumerate() {
                    *v = self.central.stack_version(SizeClass(ci as u8));
                }
                (heaps, frees, out) = (HeapCounters::default(), 0, [0; NUM_CLASSES]);
                (large_blocks, large_bytes, chunks, free, zeroed) = (0, 0, 0, 0, 0);
                (live_heaps, created) = (live, made);
                for c in classes.iter_mut() {
                    (c.spans, c.span_bytes, c.thread_cached, c.allocs) = (0, 0, 0, 0);
                }
                for h in all.iter() {
                    let k = h.counters();
                    heaps.allocs += k.allocs;
                    heaps.reallocs += k.reallocs;
                    heaps.reallocs_in_place += k.reallocs_in_place;
                    frees += k.frees();
                    for (ci, c) in classes.iter_mut().enumerate() {
                        c.thread_cached += h.cached(SizeClass(ci as u8)) as u64;
                        c.allocs += h.class_allocs(SizeClass(ci as u8));
                    }
                }
                // The per-CPU front end's caches count as front-end caches too.
                for (ci, c) in classes.iter_mut().enumerate() {
                    let (allocs, cpu_frees, cached) = self.cpu_class_counts(SizeClass(ci as u8));
                    heaps.allocs += allocs;
                    frees += cpu_frees;
                    c.allocs += allocs;
                    c.thread_cached += cached;
                }
                self.page_heap.for_each_span(|s| {
                    if s.start() as usize == HEADER_PAGES {
                        chunks += 1;
                    }
                    match s.kind() {
                        SpanKind::Free => {
                            free += s.bytes();
                            free_spans += 1;
                            largest_free = largest_free.max(s.bytes());
                            if s.flags() & SPAN_ZEROED != 0 {
                                zeroed += s.bytes();
                            }
                        }
                        SpanKind::Small => {
                            let c = &mut classes[s.class().index()];
                            c.spans += 1;
                            c.span_bytes += s.bytes() as u64;
                            out[s.class().index()] += s.live() as u64;
                        }
                        SpanKind::Large => {
                            large_blocks += 1;
                            large_bytes += s.bytes() as u64;
                        }
                        SpanKind::None => {}
                    }
                });
                // The reader's half of the sequence lock: the fence keeps every read
                // above before the second reading of the sequences, which (each only
                // grows) sum to the first only if none changed.
                fence(Ordering::Acquire);
                let seqs_again = all
                    .iter()
                    .fold(0u64, |sum, h| sum.wrapping_add(h.move_seq_again()));
                let mut stable = !moving && seqs_again == seqs;
                for (ci, c) in classes.iter_mut().enumerate() {
                    let cls = SizeClass(ci as u8);
                    let n = self.central.stacked_batches(cls);
                    stable &= n.is_some() && self.central.stack_version(cls) == versions[ci];
                    c.central_cached = (n.unwrap_or(0) * cls.batch()) as u64;
                }
                stable
            });
            if stable {
                break;
            }
        }
        let ph = self.page_heap.stats();
        let (huge_blocks, huge_bytes, huge_cached) = self.huge.totals();
        let (huge_blocks, huge_bytes, huge_cached) =
            (huge_blocks as u64, huge_bytes as u64, huge_cached as u64);
        let meta = self.meta.mapped_bytes() as u64;

        let mut allocated = large_bytes + huge_bytes;
        let (mut small_span_bytes, mut thread_cached, mut central_cached, mut span_free) =
            (0, 0, 0, 0);
        for (ci, c) in classes.iter_mut().enumerate() {
            // Stacked and cached figures were read at slightly different moments
            // than the spans: clamp so that the identities hold.
            c.central_cached = c.central_cached.min(out[ci]);
            c.thread_cached = c.thread_cached.min(out[ci] - c.central_cached);
            c.live_objects = out[ci] - c.central_cached - c.thread_cached;
            let size = c.size as u64;
            allocated += c.live_objects * size;
            small_span_bytes += c.span_bytes;
            thread_cached += c.thread_cached * size;
            central_cached += c.central_cached * size;
            span_free += c.span_free_bytes();
        }
        let chunk_bytes = (chunks * CHUNK_SIZE) as u64;
        let mapped = chunk_bytes + huge_bytes + huge_cached + meta;
        let resident = chunk_bytes - zeroed as u64 + huge_bytes + huge_cached + meta;
        let c = &self.counters;
        let allocs = heaps.allocs
            + Counters::get(&c.direct_allocs)
            + Counters::get(&c.large_allocs)
            + Counters::get(&c.huge_allocs);
        let frees = frees
            + Counters::get(&c.direct_frees)
            + Counters::get(&c.large_frees)
            + Counters::get(&c.huge_frees);
        Stats {
            allocated_bytes: allocated,
            requested_bytes: None,
            active_bytes: small_span_bytes + large_bytes + huge_bytes,
            resident_bytes: resident,
            mapped_bytes: mapped,
            metadata_bytes: (chunks * HEADER_PAGES * PAGE_SIZE) as u64 + meta,
            thread_cached_bytes: thread_cached,
            central_cached_bytes: central_cached,
            span_free_bytes: span_free,
            page_free_bytes: free as u64,
            page_purged_bytes: zeroed as u64,
            free_spans: free_spans as u64,
            largest_free_span_bytes: largest_free as u64,
            purged_bytes_total: ph.purged_bytes_total,
            unmapped_bytes_total: ph.unmapped_bytes_total,
            peak_resident_bytes: (self.page_heap.peak_resident_bytes() as u64 + meta).max(resident),
            peak_allocated_bytes: c.peak_out_bytes().max(allocated),
            allocs,
            // Derived from counters another thread may be updating as we read them
            // (relaxed, so each may be a little stale): a process never freed more
            // than it allocated, so clamp. Exact once the threads are quiescent.
            frees: frees.min(allocs),
            reallocs: heaps.reallocs + Counters::get(&c.reallocs),
            reallocs_in_place: heaps.reallocs_in_place + Counters::get(&c.reallocs_in_place),
            thread_heaps_live: live_heaps as u64,
            thread_heaps_created: created as u64,
            chunks: chunks as u64,
            large_blocks,
            large_bytes,
            huge_blocks,
            huge_bytes,
            huge_cached_bytes: huge_cached,
            percpu_capacity_bytes: self.percpu_bytes().0,
            percpu_budget_bytes: self.percpu_bytes().1,
            thread_cache_pool_bytes: self.cache_pool.total() as u64,
            thread_cache_lent_bytes: self.cache_pool.lent() as u64,
            classes,
        }
    }
}

impl<O: Os> Allocator<O> {
    /// The per-CPU front end's capacities and budget, bytes (zeros while off).
    fn percpu_bytes(&self) -> (u64, u64) {
        #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
        if self.cpus.slab_if_on().is_some() {
            return (
                self.cpus.capacity_bytes() as u64,
                self.cpus.budget_bytes() as u64,
            );
        }
        (0, 0)
    }
}

mod format;
// The heap map uses it, which is not built under loom.
#[cfg_attr(strata_loom, allow(unused_imports))]
pub(crate) use format::Bytes;
