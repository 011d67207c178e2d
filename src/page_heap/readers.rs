//! The page heap's readers for statistics and walks: its counters and a walk over
//! every span, both under the page-heap lock.

use super::{PageHeap, PageHeapStats, for_each_free_span};
use crate::chunk::{HEADER_PAGES, SPAN_ZEROED, Span};
use crate::os::Os;
use crate::size_class::{CHUNK_SIZE, PAGE_SIZE, PAGES_PER_CHUNK};

impl<O: Os> PageHeap<O> {
    /// Bytes purged and unmapped by every purge so far (`stats()`'s two totals
    /// together), read under the lock: what a caller's pass released, including the
    /// purges that page-heap frees run on their own, is the change over the pass.
    pub fn released_total(&self) -> u64 {
        self.with_inner(|h| h.purged_total + h.unmapped_total)
    }

    /// Counters, read under the lock.
    pub fn stats(&self) -> PageHeapStats {
        self.with_inner(|h| {
            let mut zeroed = 0;
            let (mut free_spans, mut largest) = (0, 0);
            for_each_free_span(h, |s| {
                if s.flags() & SPAN_ZEROED != 0 {
                    zeroed += s.bytes();
                }
                free_spans += 1;
                largest = largest.max(s.bytes());
            });
            PageHeapStats {
                chunks: h.nchunks,
                mapped_bytes: h.nchunks * CHUNK_SIZE,
                free_bytes: h.free_pages * PAGE_SIZE,
                free_zeroed_bytes: zeroed,
                purged_bytes_total: h.purged_total,
                unmapped_bytes_total: h.unmapped_total,
                purge_failures: h.purge_failures,
                unmap_failures: h.unmap_failures,
                free_spans,
                largest_free_span_bytes: largest,
            }
        })
    }

    /// Calls `f` on every span of every chunk, under the page-heap lock.
    pub fn for_each_span(&self, mut f: impl FnMut(&Span)) {
        self.with_inner(|h| {
            let mut chunk = h.chunks;
            while !chunk.is_null() {
                // SAFETY: listed chunks are mapped; spans tile them (Span invariant 1),
                // checked by validate() before callers rely on it.
                let c = unsafe { &*chunk };
                let mut p = HEADER_PAGES;
                while p < PAGES_PER_CHUNK {
                    let s = c.span(p);
                    f(s);
                    p += (s.npages() as usize).max(1);
                }
                chunk = c.next();
            }
        });
    }
}
