//! Large blocks: runs of whole pages taken from the page heap for requests too big
//! for a size class and up to `HUGE_THRESHOLD`, and their in-place resize for
//! `realloc`. Called by the global allocator (through [`Backend`]); calls the page
//! heap only.

use super::Backend;
use super::counters::Counters;
use crate::chunk::{ChunkHeader, SPAN_ZEROED, Span, SpanKind};
use crate::os::Os;
use crate::size_class::{PAGE_SIZE, SizeClass};
use core::ptr;

impl<O: Os> Backend<O> {
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
}
