//! `PageHeap::validate`: every numbered invariant of the page heap, its chunks and
//! their spans, checked under the lock.

use super::*;

impl<O: Os> PageHeap<O> {
    /// Checks the invariants of the page heap and of every span in its chunks.
    pub fn validate(&self) -> Result<(), Violation> {
        self.with_inner(|h| {
            let mut free_pages = 0;
            let mut free_chunks = 0;
            let mut nchunks = 0;
            let mut chunk = h.chunks;
            while !chunk.is_null() {
                nchunks += 1;
                // SAFETY: chunks in the list are mapped (invariant 3) and their
                // headers are ours under the lock.
                let c = unsafe { &*chunk };
                let at = chunk as usize;
                check(
                    c.magic() == CHUNK_MAGIC,
                    "PageHeap",
                    3,
                    "chunk without magic",
                    at,
                )?;
                check(
                    self.chunk_map.contains(c.base()),
                    "PageHeap",
                    3,
                    "chunk not in the chunk map",
                    at,
                )?;
                for q in 0..HEADER_PAGES {
                    check(
                        c.page_class(q) == NO_CLASS,
                        "ChunkHeader",
                        3,
                        "a header page's entry names a class",
                        at,
                    )?;
                }
                let mut p = HEADER_PAGES;
                let mut prev_free = false;
                while p < PAGES_PER_CHUNK {
                    let s = c.span(p);
                    let at = s.base() as usize;
                    check(
                        s.kind() != SpanKind::None,
                        "Span",
                        1,
                        "pages covered by no span",
                        at,
                    )?;
                    check(s.npages() >= 1, "Span", 1, "span start/size wrong", at)?;
                    check(
                        s.start() as usize == p,
                        "Span",
                        7,
                        "descriptor not in the slot of its first page",
                        at,
                    )?;
                    let end = p + s.npages() as usize;
                    check(
                        end <= PAGES_PER_CHUNK,
                        "Span",
                        1,
                        "span runs past its chunk",
                        at,
                    )?;
                    check(
                        c.first(p) == p && c.first(end - 1) == p,
                        "Span",
                        2,
                        "page map does not point at span",
                        at,
                    )?;
                    for q in p..end {
                        let small = s.kind() == SpanKind::Small;
                        let class = if small { s.class().0 } else { NO_CLASS };
                        check(
                            c.page_class(q) == class,
                            "Span",
                            6,
                            "page entry's class differs from the span's",
                            at,
                        )?;
                        check(
                            !small || c.page_base_low32(q) == s.base() as usize as u32,
                            "Span",
                            6,
                            "page entry's base differs from the span's",
                            at,
                        )?;
                    }
                    if s.kind() == SpanKind::Free {
                        check(
                            !prev_free,
                            "Span",
                            3,
                            "two adjacent free spans (not coalesced)",
                            at,
                        )?;
                        check(
                            s.flags() & SPAN_LISTED != 0,
                            "Span",
                            3,
                            "free span not in a bin",
                            at,
                        )?;
                        free_pages += s.npages() as usize;
                        if s.npages() as usize == USABLE_PAGES {
                            free_chunks += 1;
                        }
                        prev_free = true;
                    } else {
                        if s.kind() == SpanKind::Small {
                            for q in p..end {
                                check(
                                    c.first(q) == p,
                                    "Span",
                                    2,
                                    "interior page map entry wrong",
                                    at,
                                )?;
                            }
                        }
                        prev_free = false;
                    }
                    p = end;
                }
                chunk = c.next();
            }
            check(nchunks == h.nchunks, "PageHeap", 3, "chunk count", 0)?;
            check(
                free_pages == h.free_pages,
                "PageHeap",
                2,
                "free page count",
                0,
            )?;
            check(
                free_chunks == h.free_chunks,
                "PageHeap",
                2,
                "wholly free chunk count",
                0,
            )?;
            check(
                free_chunks <= MAX_FREE_CHUNKS || h.unmap_failures > 0,
                "PageHeap",
                2,
                "more wholly free chunks than MAX_FREE_CHUNKS",
                0,
            )?;
            let mut binned = 0;
            let mut zeroed = 0;
            for b in 0..BINS {
                let bit = h.nonempty[b / 64] >> (b % 64) & 1 == 1;
                check(
                    bit != h.bins[b].is_null(),
                    "PageHeap",
                    1,
                    "bin bitmap out of date",
                    b,
                )?;
                let mut s = h.bins[b];
                while !s.is_null() {
                    // SAFETY: binned spans are Free descriptors in mapped chunks.
                    let sp = unsafe { &*s };
                    check(
                        sp.kind() == SpanKind::Free && sp.npages() as usize == b,
                        "Span",
                        3,
                        "span in the wrong bin",
                        s as usize,
                    )?;
                    binned += b;
                    if sp.flags() & SPAN_ZEROED != 0 {
                        zeroed += b;
                    }
                    s = sp.next();
                }
            }
            check(
                binned == h.free_pages,
                "PageHeap",
                2,
                "binned pages differ from free pages",
                0,
            )?;
            check(
                zeroed == h.zeroed_pages,
                "PageHeap",
                4,
                "zeroed page count differs from the bins",
                zeroed,
            )
        })
    }
}
