//! Carving a batch straight into an array, for the per-CPU front end's refill:
//! each object is written once, with the free mark, and its address stored in
//! the array; no chain is linked to be walked again.
//!
//! The class lock is held for the bookkeeping only, as in `carve.rs` (whose
//! reasons apply: no object's memory is touched under it). A chain carve links
//! every object and `chain_to_array` then reads each link back and overwrites it
//! with the mark: two passes and a dependent load an object. Here a run of
//! never-carved objects is addresses computed (one store each, the mark), and a
//! span's free list is walked once (a load and a store each; a whole list is
//! mapped first and written in address order, `SpanMap`).

use super::Central;
use super::carve::{MAX_PIECES, Piece, SpanMap};
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
    /// Under the class lock, the bookkeeping every carve shares
    /// ([`Central::take_pieces`]): a span's free list is detached and a run of its
    /// never-carved objects reserved, all counted live at once. After the lock: the
    /// objects are marked and their addresses stored; the part of a detached list
    /// past the batch is given back under the lock again (`give_back_rest`).
    pub(super) fn carve_array<O: Os>(
        &self,
        c: SizeClass,
        ph: &PageHeap<O>,
        out: &mut [*mut u8],
    ) -> usize {
        // The mark is an encoded link: the key must be set before the first one.
        ensure_key();
        let want = c.batch().min(out.len());
        let mut pieces = [Piece::EMPTY; MAX_PIECES];
        // The part of a detached list past the batch is given back: the walk that
        // fills the array finds the cut on its way.
        let (_, npieces) = self.take_pieces(c, ph, want, &mut pieces, |count, nfree| {
            nfree.min(want - count)
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
            } else if p.rest == 0 {
                // A whole list: in address order, as a chain carve hands it out
                // (`SpanMap`; the array filled from its end, so lowest first),
                // each object marked on the line the walk just read.
                // SAFETY: the piece is a whole free list detached from its span
                // under the class lock and counted live there (`take_pieces`), so
                // ours alone, `n` objects long.
                let map = unsafe { SpanMap::of_list(c, &*p.span, p.obj.cast(), p.n) };
                let mut written = 0;
                for (slot, o) in dst.iter_mut().rev().zip(map.descending()) {
                    // SAFETY: one of the piece's objects, ours alone; its link was
                    // read by the map's walk; the key is set (above).
                    unsafe { FreeObj::set_next_keyed(o, ptr::null_mut(), key) };
                    *slot = o.cast();
                    written += 1;
                }
                debug_check!(
                    written == p.n,
                    "carve_array: a span map with fewer objects than its list"
                );
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
                    unsafe { self.give_back_rest(c, p.span, o, p.rest) };
                }
            }
            k += p.n;
        }
        k
    }
}
