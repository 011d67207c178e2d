//! A picture of the heap: every chunk, page by page, coloured by what its pages hold
//! (span of class N and how full, Large block, free and resident, free and purged),
//! written as SVG. [`crate::heap_map`] takes the snapshot, [`HeapMap::write_svg`]
//! draws it; the C library writes one at exit with `STRATA_HEAP_MAP=path.svg`.
//!
//! Snapshot first, drawing after, because the walk must not allocate: it holds every
//! class lock and the page-heap lock, and the global allocator may be strata itself,
//! whose next refill would wait on those locks for ever. So `snapshot`
//! 1. counts chunks and spans (under the page-heap lock alone), then, with no lock
//!    held, allocates record buffers for that many plus some slack;
//! 2. takes every class lock (Small spans' `live` and `capacity` are owned under
//!    them) and, through `for_each_span`, the page-heap lock (everything else), in
//!    the lock order of `Backend::validate`, and copies one record per span, pushing
//!    only within the buffers' capacity;
//! 3. if the heap grew past the slack in between, drops the partial copy after
//!    unlocking and starts again with a fresh count and more slack;
//! 4. reads the huge registry's totals (its own lock; not atomic with the chunks).
//!
//! Everything else (summary, sorting, SVG) runs after the locks are released.

use crate::backend::{Backend, Locks};
use crate::chunk::{HEADER_PAGES, SPAN_ZEROED, Span, SpanKind};
use crate::os::Os;
use crate::platform::{self, OsError};
use crate::report::{Buffered, Sink};
use crate::size_class::{NUM_CLASSES, PAGE_SIZE, PAGES_PER_CHUNK, SizeClass};
use alloc::vec::Vec;
use core::ffi::CStr;

/// What one page of a chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// The chunk header: span descriptors and page map.
    Header,
    /// Free pages that are resident (written since they were last purged).
    FreeResident,
    /// Free pages purged with `MADV_DONTNEED` or never touched: no RSS, read as zero.
    FreePurged,
    /// A span of small objects of size class `class` (index); `live` of its
    /// `capacity` objects are handed out (in use, or cached by a thread or the
    /// central tier).
    Small {
        /// Size class index (see [`HeapMapSpan::object_bytes`] for its size).
        class: u8,
        /// Objects handed out of the span.
        live: u32,
        /// Objects the span holds.
        capacity: u32,
    },
    /// One Large block (256 KiB to 1 MiB, or smaller and aligned beyond a page).
    Large,
}

/// A run of pages of one chunk in one state: the header, or one span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapMapSpan {
    /// Index of its first page in the chunk.
    pub first_page: u32,
    /// Pages covered.
    pub npages: u32,
    /// What the pages hold.
    pub state: PageState,
}

impl HeapMapSpan {
    /// Bytes covered.
    pub fn bytes(&self) -> usize {
        self.npages as usize * PAGE_SIZE
    }
    /// Bytes per object, for a Small span.
    pub fn object_bytes(&self) -> Option<usize> {
        match self.state {
            PageState::Small { class, .. } => Some(SizeClass(class).size_bytes()),
            _ => None,
        }
    }
}

/// One chunk of a [`HeapMap`]: its address and its spans, which tile its pages in
/// order, header first.
#[derive(Clone, Copy, Debug)]
pub struct HeapMapChunk<'a> {
    /// The chunk's base address.
    pub base: usize,
    /// Its spans in page order, header first.
    pub spans: &'a [HeapMapSpan],
}

impl HeapMapChunk<'_> {
    /// The state of every page, in order ([`HeapMap::PAGES_PER_CHUNK`] of them).
    pub fn page_states(&self) -> impl Iterator<Item = PageState> + '_ {
        self.spans
            .iter()
            .flat_map(|s| core::iter::repeat_n(s.state, s.npages as usize))
    }
}

/// Spans, pages and objects of one size class, summed over the heap map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapMapClass {
    /// Size class index.
    pub class: usize,
    /// Bytes per object.
    pub object_bytes: usize,
    /// Small spans of the class.
    pub spans: usize,
    /// Pages in those spans.
    pub pages: usize,
    /// Objects handed out of them (in use, or cached by threads or the central tier).
    pub live: usize,
    /// Objects they hold.
    pub capacity: usize,
}

/// The totals of a [`HeapMap`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapMapSummary {
    /// Chunks mapped.
    pub chunks: usize,
    /// Pages of chunk headers.
    pub header_pages: usize,
    /// Free pages that are resident.
    pub free_resident_pages: usize,
    /// Free pages purged or never touched.
    pub free_purged_pages: usize,
    /// Pages in Small spans.
    pub small_pages: usize,
    /// Pages in Large blocks.
    pub large_pages: usize,
    /// Large blocks.
    pub large_spans: usize,
    /// Huge blocks (own mappings, outside the chunks).
    pub huge_blocks: usize,
    /// Bytes mapped for huge blocks.
    pub huge_bytes: usize,
    /// The size classes that have spans, by class index.
    pub classes: Vec<HeapMapClass>,
}

impl HeapMapSummary {
    /// Bytes in free spans (`Stats::page_free_bytes` of the same moment).
    pub fn free_bytes(&self) -> usize {
        (self.free_resident_pages + self.free_purged_pages) * PAGE_SIZE
    }
    /// Bytes in free spans that are purged or untouched (`Stats::page_purged_bytes`).
    pub fn free_purged_bytes(&self) -> usize {
        self.free_purged_pages * PAGE_SIZE
    }
    /// Bytes in free spans that are resident.
    pub fn free_resident_bytes(&self) -> usize {
        self.free_resident_pages * PAGE_SIZE
    }
    /// Small spans of every class.
    pub fn small_spans(&self) -> usize {
        self.classes.iter().map(|c| c.spans).sum()
    }
    /// Objects handed out of Small spans, every class.
    pub fn live_objects(&self) -> usize {
        self.classes.iter().map(|c| c.live).sum()
    }
    /// The entry of the class whose objects are `object_bytes` long, if it has spans
    /// (outside checked mode, `strata::usable_size` of a small block gives its
    /// class's object size; [`HeapMapSpan::object_bytes`] always does).
    pub fn class_of_size(&self, object_bytes: usize) -> Option<&HeapMapClass> {
        self.classes.iter().find(|c| c.object_bytes == object_bytes)
    }
}

/// Where a chunk's spans are in `HeapMap::spans`.
#[derive(Debug)]
struct ChunkRec {
    base: usize,
    first: usize,
    len: usize,
}

/// A snapshot of every chunk, page by page (see [`crate::heap_map`]).
#[derive(Debug)]
pub struct HeapMap {
    chunks: Vec<ChunkRec>,
    spans: Vec<HeapMapSpan>,
    summary: HeapMapSummary,
}

impl HeapMap {
    /// Bytes per page.
    pub const PAGE_BYTES: usize = PAGE_SIZE;
    /// Pages per chunk, header included.
    pub const PAGES_PER_CHUNK: usize = PAGES_PER_CHUNK;

    /// The chunks, by address.
    pub fn chunks(&self) -> impl ExactSizeIterator<Item = HeapMapChunk<'_>> + '_ {
        self.chunks.iter().map(|c| HeapMapChunk {
            base: c.base,
            spans: &self.spans[c.first..c.first + c.len],
        })
    }

    /// The totals.
    pub fn summary(&self) -> &HeapMapSummary {
        &self.summary
    }

    /// Writes the map as one SVG document: a title line with the totals, a legend,
    /// then one grid of 32 x 16 page cells per chunk, by address, labelled with the
    /// chunk's address, each span drawn as one shape with a tooltip. Small spans
    /// take their hue from the size class and their lightness from how full they
    /// are; headers, Large blocks, free resident and free purged pages have fixed
    /// colours. For tools, every chunk is a `<g class="chunk" data-base="0x…">` and
    /// every span a `<path class="header|free|purged|small|large" data-pages="N">`
    /// (Small ones with `data-class`, `data-live` and `data-capacity`).
    #[cfg(any(feature = "std", test))]
    pub fn write_svg(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        use std::io::Write as _;
        /// `fmt::Write` over a buffered `io::Write`, keeping the first error.
        struct Io<W: std::io::Write> {
            w: std::io::BufWriter<W>,
            err: Option<std::io::Error>,
        }
        impl<W: std::io::Write> core::fmt::Write for Io<W> {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                self.w.write_all(s.as_bytes()).map_err(|e| {
                    self.err.get_or_insert(e);
                    core::fmt::Error
                })
            }
        }
        let mut out = Io {
            w: std::io::BufWriter::new(w),
            err: None,
        };
        if svg::write(self, &mut out).is_err() {
            return Err(out
                .err
                .unwrap_or_else(|| std::io::Error::other("formatting failed")));
        }
        out.w.flush()
    }
}

/// A file descriptor written to the end, which keeps the first error.
struct FileSink {
    fd: i32,
    err: Option<OsError>,
}

impl Sink for FileSink {
    fn put(&mut self, mut bytes: &[u8]) {
        while self.err.is_none() && !bytes.is_empty() {
            match platform::write_fd(self.fd, bytes) {
                Ok(0) => self.err = Some(OsError(platform::EIO)),
                Ok(n) => bytes = &bytes[n..],
                Err(e) => self.err = Some(e),
            }
        }
    }
}

/// Writes the process's heap map as SVG to a new file at `path`, through the
/// platform layer (no std): `strata_heap_map_write` of the C library and
/// `STRATA_HEAP_MAP`. The error is the first that opening, writing or closing
/// the file met.
pub(crate) fn write_file(path: &CStr) -> Result<(), OsError> {
    let fd = platform::create_file(path)?;
    let mut out = Buffered::to(FileSink { fd, err: None });
    let drawn = svg::write(&crate::heap_map(), &mut out);
    out.flush();
    let closed = platform::close_fd(fd);
    match out.sink.err {
        Some(e) => Err(e),
        // Formatting fails only where the sink did, which left its error above.
        None if drawn.is_err() => Err(OsError(platform::EIO)),
        None => closed,
    }
}

/// Takes the snapshot of `b` (module docs, steps 1 to 4).
pub(crate) fn snapshot<O: Os>(b: &Backend<O>) -> HeapMap {
    // Spans that may appear between the count and the copy without a retry; four
    // times more after each retry.
    let mut slack = 64;
    loop {
        // Step 1: counted under the page-heap lock alone, allocated with no lock
        // held (the buffers come from the allocator itself).
        let (nchunks, nspans) = count_spans(b);
        let mut chunks = Vec::with_capacity(nchunks + 1 + slack / 64);
        let mut spans = Vec::with_capacity(nspans + nchunks + slack);
        if copy_spans(b, &mut chunks, &mut spans) {
            let (huge_blocks, huge_bytes, _) = b.huge.totals();
            chunks.sort_unstable_by_key(|c: &ChunkRec| c.base);
            let summary = summarize(chunks.len(), &spans, huge_blocks, huge_bytes);
            return HeapMap {
                chunks,
                spans,
                summary,
            };
        }
        // Step 3: the heap grew past the slack; the buffers are freed, no lock held.
        slack *= 4;
    }
}

/// Chunks and spans in the page heap now.
fn count_spans<O: Os>(b: &Backend<O>) -> (usize, usize) {
    let (mut chunks, mut spans, mut last) = (0, 0, 0);
    b.page_heap.for_each_span(|s| {
        spans += 1;
        if s.chunk() as usize != last {
            last = s.chunk() as usize;
            chunks += 1;
        }
    });
    (chunks, spans)
}

/// Step 2: copies one record per span (and one per chunk header) into the buffers
/// under every class lock and the page-heap lock; false if they ran out of room.
/// Never allocates: every push is checked against the capacity first.
fn copy_spans<O: Os>(
    b: &Backend<O>,
    chunks: &mut Vec<ChunkRec>,
    spans: &mut Vec<HeapMapSpan>,
) -> bool {
    let mut fits = true;
    b.with_locked(Locks::CLASSES, || {
        b.page_heap.for_each_span(|s| {
            let base = s.chunk() as usize;
            let new_chunk = chunks.last().map(|c| c.base) != Some(base);
            let need = if new_chunk { 2 } else { 1 };
            fits &= spans.capacity() - spans.len() >= need
                && (!new_chunk || chunks.len() < chunks.capacity());
            if !fits {
                return;
            }
            if new_chunk {
                chunks.push(ChunkRec {
                    base,
                    first: spans.len(),
                    len: 0,
                });
                spans.push(HeapMapSpan {
                    first_page: 0,
                    npages: HEADER_PAGES as u32,
                    state: PageState::Header,
                });
            }
            spans.push(record(s));
            if let Some(c) = chunks.last_mut() {
                c.len = spans.len() - c.first;
            }
        });
    });
    fits
}

/// The record of one span, read with its owner's lock held (the class lock for a
/// Small span's counts, the page-heap lock for the rest).
fn record(s: &Span) -> HeapMapSpan {
    let state = match s.kind() {
        SpanKind::Small => PageState::Small {
            class: s.class().0,
            live: s.live(),
            capacity: s.capacity(),
        },
        SpanKind::Large => PageState::Large,
        _ if s.flags() & SPAN_ZEROED != 0 => PageState::FreePurged,
        _ => PageState::FreeResident,
    };
    HeapMapSpan {
        first_page: s.start(),
        npages: s.npages(),
        state,
    }
}

fn summarize(
    chunks: usize,
    spans: &[HeapMapSpan],
    huge_blocks: usize,
    huge_bytes: usize,
) -> HeapMapSummary {
    let mut sum = HeapMapSummary {
        chunks,
        huge_blocks,
        huge_bytes,
        ..HeapMapSummary::default()
    };
    let mut classes = [HeapMapClass::default(); NUM_CLASSES];
    for s in spans {
        let n = s.npages as usize;
        match s.state {
            PageState::Header => sum.header_pages += n,
            PageState::FreeResident => sum.free_resident_pages += n,
            PageState::FreePurged => sum.free_purged_pages += n,
            PageState::Large => {
                sum.large_pages += n;
                sum.large_spans += 1;
            }
            PageState::Small {
                class,
                live,
                capacity,
            } => {
                sum.small_pages += n;
                let c = &mut classes[class as usize % NUM_CLASSES];
                c.spans += 1;
                c.pages += n;
                c.live += live as usize;
                c.capacity += capacity as usize;
            }
        }
    }
    sum.classes = (0..NUM_CLASSES)
        .filter(|&i| classes[i].spans > 0)
        .map(|i| HeapMapClass {
            class: i,
            object_bytes: SizeClass(i as u8).size_bytes(),
            ..classes[i]
        })
        .collect();
    sum
}

mod svg;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::SysOs;

    #[test]
    fn a_private_heap_maps_page_for_page_with_its_own_counts() {
        let b: Backend<SysOs> = Backend::new(SysOs);
        let c = SizeClass(10);
        let batch = b.central.refill(c, &b.page_heap);
        assert!(batch.count > 0);
        let large = b.alloc_large(300 << 10, 8, false);
        let large2 = b.alloc_large(600 << 10, 8, false);
        // SAFETY: a live Large block, freed once: its pages become free and resident.
        unsafe { b.free_large(large2) };
        let map = snapshot(&b);
        let st = b.page_heap.stats();
        let sum = map.summary();
        assert_eq!(sum.chunks, st.chunks);
        assert_eq!(sum.free_bytes(), st.free_bytes);
        assert_eq!(sum.free_purged_bytes(), st.free_zeroed_bytes);
        assert!(sum.free_resident_pages >= (600 << 10) / PAGE_SIZE);
        assert_eq!(sum.large_spans, 1);
        let cls = sum.class_of_size(c.size_bytes()).expect("class listed");
        assert_eq!((cls.class, cls.spans, cls.live), (10, 1, batch.count));
        assert_eq!(cls.capacity, c.objects_per_span());
        for chunk in map.chunks() {
            assert_eq!(chunk.page_states().count(), PAGES_PER_CHUNK);
            let mut next = 0;
            for s in chunk.spans {
                assert_eq!(s.first_page as usize, next, "spans tile the chunk");
                next += s.npages as usize;
            }
        }
        let mut out = Vec::new();
        map.write_svg(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        assert_eq!(text.matches("<g class=\"chunk\"").count(), st.chunks);
        // SAFETY: live block, freed once.
        unsafe { b.free_large(large) };
    }

    #[test]
    fn a_copy_that_runs_out_of_room_reports_it_and_releases_every_lock() {
        let b: Backend<SysOs> = Backend::new(SysOs);
        let _span = b.alloc_large(300 << 10, 8, false);
        let (mut chunks, mut spans) = (Vec::new(), Vec::with_capacity(1));
        assert!(!copy_spans(&b, &mut chunks, &mut spans));
        assert!(
            chunks.is_empty() && spans.is_empty(),
            "nothing pushed past capacity"
        );
        // Every lock is free again: a snapshot (class locks, page heap) goes through.
        assert_eq!(snapshot(&b).summary().large_spans, 1);
        b.validate().unwrap();
    }
}
