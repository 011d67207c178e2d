//! In-place resize of Large spans: growing into the free pages on the right,
//! shrinking by freeing the tail (with coalescing).

use super::*;

impl<O: Os> PageHeap<O> {
    /// Tries to grow the Large span `span` in place to `npages` by taking free pages
    /// on its right.
    ///
    /// # Safety
    /// `span` is a live Large span of this heap owned by the caller.
    pub unsafe fn grow_in_place(&self, span: *mut Span, npages: usize) -> bool {
        self.with_inner(|h| {
            // SAFETY: the caller owns `span`; its right neighbour is in the same
            // mapped chunk and is ours under the lock (shared references only: other
            // threads read the chunk's page entries and span kinds meanwhile).
            unsafe {
                let s = &*span;
                let extra = npages.saturating_sub(s.npages() as usize);
                let r = (s.start() + s.npages()) as usize;
                if extra == 0 || r >= PAGES_PER_CHUNK {
                    return extra == 0;
                }
                let chunk = &*s.chunk();
                let right = ChunkHeader::span_ptr(s.chunk(), r);
                if (*right).kind() != SpanKind::Free || ((*right).npages() as usize) < extra {
                    return false;
                }
                bin_remove(h, right);
                if (*right).npages() as usize > extra {
                    let rest = split(right, extra);
                    bin_insert(h, rest);
                }
                (*right).set_kind(SpanKind::None);
                h.free_pages -= extra;
                chunk.set_first(r + extra - 1, s.start() as usize);
                s.set_npages(s.npages() + extra as u32);
                self.note_resident(h);
                true
            }
        })
    }

    /// Shrinks the Large span `span` in place to `npages`, freeing its tail.
    ///
    /// # Safety
    /// `span` is a live Large span of this heap owned by the caller, and nothing
    /// beyond its first `npages` pages is in use.
    pub unsafe fn shrink_in_place(&self, span: *mut Span, npages: usize) {
        let now = self.now_ms();
        self.with_inner(|h| {
            // SAFETY: the caller owns the span and gives up its tail.
            unsafe {
                if npages >= (*span).npages() as usize {
                    return;
                }
                let tail = split(span, npages);
                let chunk = &*(*span).chunk();
                chunk.set_first(
                    (*span).start() as usize + npages - 1,
                    (*span).start() as usize,
                );
                (*tail).set_kind(SpanKind::Large);
                self.free_locked(h, tail, now);
                self.note_resident(h);
            }
        });
    }
}
