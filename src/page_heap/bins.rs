//! The page heap's bins: best fit over free spans (a bin per page count, a bitmap
//! of non-empty bins), filing and unfiling a free span, and cutting one in two.
//! Plain functions on the locked state, called by the page heap only.

use super::*;

/// Smallest non-empty bin holding at least `need` pages.
pub(super) fn find_bin(h: &Inner, need: usize) -> Option<usize> {
    let mut w = need / 64;
    let mut bits = h.nonempty[w] & (!0u64 << (need % 64));
    loop {
        if bits != 0 {
            return Some(w * 64 + bits.trailing_zeros() as usize);
        }
        w += 1;
        if w == BIN_WORDS {
            return None;
        }
        bits = h.nonempty[w];
    }
}

/// Calls `f` on every binned free span, in bin order, smallest bin first.
pub(super) fn for_each_free_span(h: &Inner, f: impl FnMut(&Span)) {
    for_each_free_span_from(h, 0, f)
}

/// Calls `f` on every binned free span of at least `min_pages` pages, in bin
/// order, smallest bin first (the walk `find_bin`'s bitmap makes cheap).
pub(super) fn for_each_free_span_from(h: &Inner, min_pages: usize, mut f: impl FnMut(&Span)) {
    let mut w = min_pages / 64;
    let mut bits = h.nonempty[w] & (!0u64 << (min_pages % 64));
    loop {
        while bits != 0 {
            let b = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let mut s = h.bins[b];
            while !s.is_null() {
                // SAFETY: binned spans are Free descriptors in mapped chunks, ours
                // under the lock held by the caller of `h` (Span invariant 3;
                // shared: other threads may read the descriptor's kind by address
                // meanwhile).
                let sp = unsafe { &*s };
                s = sp.next();
                f(sp);
            }
        }
        w += 1;
        if w == BIN_WORDS {
            return;
        }
        bits = h.nonempty[w];
    }
}

/// Files a free span in its bin and records its ends in the page map.
///
/// # Safety
/// Lock held; `span` is a Free-to-be descriptor of a mapped chunk, in no list.
pub(super) unsafe fn bin_insert(h: &mut Inner, span: *mut Span) {
    // SAFETY: per the contract.
    unsafe {
        let s = &*span;
        s.set_kind(SpanKind::Free);
        let chunk = &*s.chunk();
        chunk.set_first(s.start() as usize, s.start() as usize);
        chunk.set_first((s.start() + s.npages() - 1) as usize, s.start() as usize);
        let b = s.npages() as usize;
        s.set_prev(ptr::null_mut());
        s.set_next(h.bins[b]);
        if !s.next().is_null() {
            (*s.next()).set_prev(span);
        }
        h.bins[b] = span;
        h.nonempty[b / 64] |= 1 << (b % 64);
        s.set_flags(s.flags() | SPAN_LISTED);
        if s.flags() & SPAN_ZEROED != 0 {
            h.zeroed_pages += b;
        }
    }
}

/// Unlinks a free span from its bin.
///
/// # Safety
/// Lock held; `span` is in bin `span.npages`.
pub(super) unsafe fn bin_remove(h: &mut Inner, span: *mut Span) {
    // SAFETY: per the contract.
    unsafe {
        let s = &*span;
        let b = s.npages() as usize;
        if s.prev().is_null() {
            h.bins[b] = s.next();
        } else {
            (*s.prev()).set_next(s.next());
        }
        if !s.next().is_null() {
            (*s.next()).set_prev(s.prev());
        }
        if h.bins[b].is_null() {
            h.nonempty[b / 64] &= !(1 << (b % 64));
        }
        s.set_prev(ptr::null_mut());
        s.set_next(ptr::null_mut());
        s.set_flags(s.flags() & !SPAN_LISTED);
        if s.flags() & SPAN_ZEROED != 0 {
            h.zeroed_pages -= b;
        }
    }
}

/// Cuts `span` after `n` pages; returns the descriptor of the remainder (same kind
/// Free-to-be, flags and age; not in any list).
///
/// # Safety
/// Lock held; `0 < n < span.npages`; `span` in no list.
pub(super) unsafe fn split(span: *mut Span, n: usize) -> *mut Span {
    // SAFETY: per the contract; the remainder's descriptor slot lies in the same header.
    unsafe {
        let s = &*span;
        debug_check!(
            n > 0 && n < s.npages() as usize,
            "split: the cut is not inside the span"
        );
        let r = ChunkHeader::span_ptr(s.chunk(), s.start() as usize + n);
        (*r).set_start(s.start() + n as u32);
        (*r).set_npages(s.npages() - n as u32);
        (*r).set_flags(s.flags() & SPAN_ZEROED);
        (*r).set_free_since_ms(s.free_since_ms());
        (*r).set_prev(ptr::null_mut());
        (*r).set_next(ptr::null_mut());
        (*r).set_kind(SpanKind::Free);
        s.set_npages(n as u32);
        r
    }
}
