//! Unit tests of the chunk header, its page entries and the object check, at the
//! shipped geometry and (page entries, object check) at the loom models' one.

use super::*;
use crate::size_class::{GEOMETRY, Geometry, NUM_CLASSES, ObjectChecks};
use std::alloc::{Layout, alloc_zeroed, dealloc};

/// A zeroed, chunk-aligned header on the heap (a zeroed header is a valid one).
struct TestChunk(*mut ChunkHeader);

impl TestChunk {
    fn new() -> TestChunk {
        let layout = Layout::from_size_align(CHUNK_SIZE, CHUNK_SIZE).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { alloc_zeroed(layout) }.cast::<ChunkHeader>();
        assert!(!p.is_null());
        // SAFETY: fresh memory, ours alone.
        unsafe { ChunkHeader::init_in_place(p) };
        TestChunk(p)
    }
    fn header(&self) -> &ChunkHeader {
        // SAFETY: a live allocation of a whole chunk.
        unsafe { &*self.0 }
    }
}

impl Drop for TestChunk {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(CHUNK_SIZE, CHUNK_SIZE).unwrap();
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.0.cast(), layout) };
    }
}

/// `small_object` (the skewed entry address, no masking) against the page
/// entries a Small span's set-up writes: object starts accepted with their
/// class, interiors, the tail, header pages and cleared pages rejected.
#[test]
fn small_object_finds_the_class_of_every_object_start_and_nothing_else() {
    // The chunk is not in the process's map: fill the checks beside it as the
    // first chunk of the process would.
    map::fill_checks_for_tests();
    let chunk = TestChunk::new();
    let h = chunk.header();
    let base_page = HEADER_PAGES + 3;
    for c in [0usize, 17, NUM_CLASSES - 1] {
        let cls = SizeClass(c as u8);
        let npages = cls.span_pages().min(PAGES_PER_CHUNK - base_page);
        let base = h.base() as usize + (base_page << PAGE_SHIFT);
        for p in 0..PAGES_PER_CHUNK {
            h.clear_small(p);
        }
        for p in base_page..base_page + npages {
            h.set_small(p, cls, base as *const u8);
        }
        let size = cls.size_bytes();
        let n = (npages << PAGE_SHIFT) / size;
        for k in 0..n {
            let a = base + k * size;
            // SAFETY: inside the test chunk, whose header is readable.
            let got = unsafe { small_object(a) };
            assert_eq!(got, Some(cls), "class {c} object {k}");
            if size > 8 {
                // SAFETY: inside the test chunk, whose header is readable.
                assert_eq!(unsafe { small_object(a + 8) }, None, "interior");
            }
        }
        // SAFETY: inside the test chunk, whose header is readable (the header's
        // first page; the page before the span).
        unsafe {
            assert_eq!(small_object(h.base() as usize), None, "header page");
            assert_eq!(small_object(base - PAGE_SIZE), None, "page before the span");
        }
        for p in base_page..base_page + npages {
            h.clear_small(p);
        }
        // SAFETY: inside the test chunk, whose header is readable.
        assert_eq!(unsafe { small_object(base) }, None, "cleared span");
    }
}

/// The page entries and the object check at the loom models' geometry, outside
/// loom: a one-page span of each tiny class, entries as `set_small` writes them.
#[test]
fn tiny_geometry_page_entries_accept_exactly_the_object_starts() {
    static TINY_CHECKS: ObjectChecks = ObjectChecks::new(&Geometry::TINY);
    let g = Geometry::TINY;
    let chunk_base = 0x7f00_0000_0000usize; // any tiny-chunk-aligned address
    for c in 0..g.num_classes {
        let e = PageEntry::empty();
        let base = chunk_base + 9 * g.page_size();
        e.set_small(page_code(c), (base as u32).wrapping_neg());
        let size = g.class_size(c);
        for off in 0..2 * g.page_size() {
            let want = (off % size == 0 && off / size < g.objects_per_span(c))
                .then_some(SizeClass(c as u8));
            assert_eq!(
                object_class(&e, &TINY_CHECKS, base + off),
                want,
                "offset {off}"
            );
        }
        e.set_small(NO_CLASS, 0);
        assert_eq!(object_class(&e, &TINY_CHECKS, base), None);
    }
}

#[test]
fn header_layout_follows_the_geometry() {
    assert_eq!(PAGES_PER_CHUNK, GEOMETRY.pages_per_chunk());
    assert_eq!(HEADER_PAGES + USABLE_PAGES, PAGES_PER_CHUNK);
    let chunk = TestChunk::new();
    let h = chunk.header();
    for p in 0..PAGES_PER_CHUNK {
        h.set_first(p, PAGES_PER_CHUNK - 1 - p);
    }
    for p in 0..PAGES_PER_CHUNK {
        assert_eq!(h.first(p), PAGES_PER_CHUNK - 1 - p);
        let at = (h.base() as usize + (p << PAGE_SHIFT)) as *const u8;
        assert_eq!(ChunkHeader::page_of(at), p);
        assert_eq!(ChunkHeader::of(at), chunk.0);
        assert_eq!(
            h.span_of(at),
            h.span(PAGES_PER_CHUNK - 1 - p) as *const Span as *mut Span
        );
    }
    for i in [0, HEADER_PAGES, PAGES_PER_CHUNK - 1] {
        let s = h.span(i);
        assert_eq!(s.chunk(), chunk.0);
        assert_eq!(s.base() as usize, h.base() as usize + (i << PAGE_SHIFT));
        // SAFETY: i < PAGES_PER_CHUNK.
        let slot = unsafe { ChunkHeader::span_ptr(chunk.0, i) };
        assert_eq!(slot, s as *const Span as *mut Span);
    }
}
