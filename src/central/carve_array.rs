//! Carving a batch straight into an array, for the per-CPU front end's refill:
//! each object is written once, with the free mark, and its address stored in
//! the array; no chain is linked to be walked again.
//!
//! The class lock is held for the bookkeeping only, as in `carve.rs` (whose
//! reasons apply: no object's memory is touched under it). A chain carve links
//! every object and `chain_to_array` then reads each link back and overwrites it
//! with the mark: two passes and a dependent load an object. Here a run of
//! never-carved objects is addresses computed (one store each, the mark), and a
//! span's free list is walked once (a load and a store each).

use super::{Central, list_push, list_remove};
use crate::chunk::{SPAN_LISTED, Span, SpanKind};
use crate::link::{FreeObj, LinkKey, ensure_key};
use crate::os::Os;
use crate::page_heap::PageHeap;
use crate::size_class::SizeClass;
use core::ptr;

impl Central {
    /// Takes up to a batch of class `c` objects (and at most `out.len()`) from the
    /// class's spans into `out`, each with the free mark (an encoded null link) in
    /// its first word; returns how many (0 only if the OS refuses memory).
    ///
    /// Under the class lock, as `carve` does: a span's free list is detached (its
    /// length is `carved - live`, Span invariant 4) and a run of its never-carved
    /// objects reserved, all counted live at once, so no other thread reaches them
    /// and the span cannot go back to the page heap meanwhile. After the lock: the
    /// objects are marked and their addresses stored; the part of a detached list
    /// past the batch is given back under the lock again.
    pub(super) fn carve_array<O: Os>(
        &self,
        c: SizeClass,
        ph: &PageHeap<O>,
        out: &mut [*mut u8],
    ) -> usize {
        // The mark is an encoded link: the key must be set before the first one.
        ensure_key();
        let want = c.batch().min(out.len());
        let cls = &self.classes[c.index()];
        let mut pieces = [Piece::EMPTY; MAX_PIECES];
        let npieces = cls.with_spans(|cs| {
            let mut count = 0;
            let mut npieces = 0;
            // Each span adds at most two pieces (its list, its tail).
            while count < want && npieces + 2 <= MAX_PIECES {
                let mut span = cs.partial;
                if span.is_null() {
                    span = ph.alloc_span(c.span_pages(), 1, SpanKind::Small, c);
                    if span.is_null() {
                        break;
                    }
                    // SAFETY: a fresh Small span for this class, ours under the lock.
                    unsafe {
                        let s = &*span;
                        s.set_free(ptr::null_mut());
                        s.set_carved(0);
                        s.set_live(0);
                        s.set_capacity(c.objects_per_span() as u32);
                        list_push(&mut cs.partial, span);
                    }
                    cs.nspans += 1;
                }
                // SAFETY: spans on the partial list are Small spans of this class,
                // ours under the lock; their free objects belong to no one else.
                unsafe {
                    let s = &*span;
                    let nfree = (s.carved() - s.live()) as usize;
                    if nfree > 0 {
                        // Detach the whole list, all of it live until the rest past
                        // what is wanted is given back: the walk that fills the
                        // array finds the cut on its way.
                        let take = nfree.min(want - count);
                        pieces[npieces] = Piece {
                            obj: s.free().cast(),
                            n: take,
                            run: false,
                            span,
                            rest: nfree - take,
                        };
                        npieces += 1;
                        s.set_free(ptr::null_mut());
                        s.set_live(s.carved());
                        count += take;
                    }
                    // Then a run of never-carved objects at the tail.
                    let n = (want - count).min((s.capacity() - s.carved()) as usize);
                    if n > 0 {
                        pieces[npieces] = Piece {
                            obj: s.base().add(s.carved() as usize * c.size_bytes()),
                            n,
                            run: true,
                            span,
                            rest: 0,
                        };
                        npieces += 1;
                        s.set_carved(s.carved() + n as u32);
                        s.set_live(s.live() + n as u32);
                        count += n;
                    }
                    if !s.has_free_object() {
                        list_remove(&mut cs.partial, span);
                    }
                }
            }
            npieces
        });
        let key = LinkKey::current();
        let size = c.size_bytes();
        let mut k = 0;
        for p in &pieces[..npieces] {
            let dst = &mut out[k..k + p.n];
            if p.run {
                let mut o = p.obj;
                for slot in dst.iter_mut() {
                    // SAFETY: each object of the run lies inside its span (the run
                    // was cut from `capacity - carved`) and was reserved under the
                    // class lock (counted in `carved` and `live`): ours alone, its
                    // first word free for the mark; the key is set (above).
                    unsafe { FreeObj::set_next_keyed(o.cast(), ptr::null_mut(), key) };
                    *slot = o;
                    // The span holds the run: no pointer past it is formed but the
                    // one after its last object, at most the span's end.
                    o = o.wrapping_add(size);
                }
            } else {
                let mut o = p.obj.cast::<FreeObj>();
                for (j, slot) in dst.iter_mut().enumerate() {
                    // The last kept object's link is null when there is no rest
                    // (the list ends there): it is read only for the rest's head.
                    let next = if j + 1 < p.n || p.rest > 0 {
                        // SAFETY: the piece is the first `n` objects of a free list
                        // detached under the class lock, followed by `rest` more,
                        // all counted live there: ours alone, linked by the list.
                        unsafe { FreeObj::next_keyed(o, c, key) }
                    } else {
                        ptr::null_mut()
                    };
                    // SAFETY: one of the piece's objects, ours alone (detached and
                    // counted live under the lock); its link is spent once `next`
                    // is read; the key is set (above).
                    unsafe { FreeObj::set_next_keyed(o, ptr::null_mut(), key) };
                    *slot = o.cast();
                    o = next;
                }
                if p.rest > 0 {
                    // SAFETY: `o` heads the `rest` objects of the detached list after
                    // the `n` kept, still counted live in the piece's span.
                    unsafe { self.give_back_array_rest(c, p.span, o, p.rest) };
                }
            }
            k += p.n;
        }
        k
    }

    /// Puts back the part of a span's detached free list that `carve_array` did
    /// not keep (as `carve`'s give-back does for chains).
    ///
    /// # Safety
    /// `rest` starts a chain of `n` free objects of Small span `span` of class `c`,
    /// detached by `carve_array` and still counted in the span's `live`, that
    /// nobody uses.
    unsafe fn give_back_array_rest(
        &self,
        c: SizeClass,
        span: *mut Span,
        rest: *mut FreeObj,
        n: usize,
    ) {
        self.classes[c.index()].with_spans(|cs| {
            // SAFETY: `span` is a Small span of class c that stays one (the carve
            // keeps at least one of its objects, counted live); its fields are ours
            // under the class lock, and so are the objects freed to it since the
            // detach (its list now, `carved - live` of them: the rest still counts
            // as live). The rest goes in front of them when there are none, the
            // common case, and else behind them (theirs is the short, warm chain).
            unsafe {
                let s = &*span;
                let newer = (s.carved() - s.live()) as usize;
                if newer == 0 {
                    s.set_free(rest);
                } else {
                    let mut tail = s.free();
                    for _ in 1..newer {
                        tail = FreeObj::next(tail, c);
                    }
                    FreeObj::set_next(tail, rest);
                }
                s.set_live(s.live() - n as u32);
                if s.flags() & SPAN_LISTED == 0 {
                    list_push(&mut cs.partial, span);
                }
            }
        });
    }
}

/// Pieces one carve may take, two at most a span (its detached free list, a run
/// of its never-carved objects); a carve that fills them all returns a shorter
/// batch, which the refill allows.
const MAX_PIECES: usize = 8;

/// Objects `carve_array` took from `span` under the class lock: `n` objects from
/// `obj`, a run of never-carved ones (`run`) or the head of a detached free list
/// followed there by `rest` more to give back.
#[derive(Clone, Copy)]
struct Piece {
    obj: *mut u8,
    n: usize,
    run: bool,
    span: *mut Span,
    rest: usize,
}

impl Piece {
    const EMPTY: Piece = Piece {
        obj: ptr::null_mut(),
        n: 0,
        run: true,
        span: ptr::null_mut(),
        rest: 0,
    };
}
