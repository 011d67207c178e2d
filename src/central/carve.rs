//! Carving a batch from a class's spans: the class lock is held for the
//! bookkeeping only, the objects are walked and linked after it is dropped.

use super::{Batch, Central, list_push, list_remove};
use crate::chunk::{SPAN_LISTED, Span, SpanKind};
use crate::link::{FreeObj, ensure_key};
use crate::os::Os;
use crate::page_heap::PageHeap;
use crate::size_class::{NUM_CLASSES, SizeClass};
use core::ptr;

impl Central {
    /// Takes up to `want` objects from the class's spans (a few more, up to the
    /// batch, where that saves cutting a free list: `whole_list`).
    ///
    /// The class lock is held only for bookkeeping: no object's memory is read or
    /// written under it. A span's free list is detached whole (its length is
    /// `carved - live`, Span invariant 4) and never-carved objects at a span's tail
    /// are reserved as a run; both count as `live` at once, so no other thread
    /// reaches them and the span cannot go back to the page heap meanwhile. The
    /// pieces are walked and linked after the lock is dropped: a free list's objects
    /// are often cold (a cache miss each) and fresh ones often untouched (a page
    /// fault every few objects of the larger classes), and a thread refilling the
    /// same class no longer waits for either. A detached list longer than needed is
    /// cut outside the lock and its rest given back under the lock again.
    /// (The refills call [`Central::carve_within`]; this form, with no room, is the
    /// unit tests'.)
    #[cfg(all(test, not(strata_loom)))]
    pub(super) fn carve<O: Os>(&self, c: SizeClass, ph: &PageHeap<O>, want: usize) -> Batch {
        self.carve_within(c, ph, want, 0)
    }

    /// [`Central::carve`], where a span's whole free list is also taken when the
    /// batch stays within `room` objects (`carve` passes 0): a thread cache whose
    /// list has room for more than a batch takes a long list as it is, with no walk
    /// to a cut and no second lock to give the rest back.
    pub(super) fn carve_within<O: Os>(
        &self,
        c: SizeClass,
        ph: &PageHeap<O>,
        want: usize,
        room: usize,
    ) -> Batch {
        // Every object we link was carved here first (or handed to a live heap):
        // the link key must be set before the first one is linked.
        ensure_key();
        let size = c.size_bytes();
        let mut pieces = [Piece::EMPTY; MAX_PIECES];
        // A list a little longer than needed is taken whole (`whole_list`): cutting
        // it costs a walk to the cut.
        let (count, npieces) = self.take_pieces(c, ph, want, &mut pieces, |count, nfree| {
            if whole_list(count, nfree, want, c.batch(), room) {
                nfree
            } else {
                nfree.min(want - count)
            }
        });
        // Link the pieces into one chain, each in address order: runs are, and a
        // whole detached list is relinked so (`SpanMap`). A list cut short keeps
        // its order (it is walked only to the cut).
        let mut head: *mut FreeObj = ptr::null_mut();
        for p in pieces[..npieces].iter().rev() {
            if !p.run && p.rest == 0 {
                // SAFETY: the piece is a whole free list detached from its span
                // under the class lock and counted live there (`take_pieces`), so
                // ours alone, `n` objects long.
                let map = unsafe { SpanMap::of_list(c, &*p.span, p.obj.cast(), p.n) };
                for o in map.descending() {
                    // SAFETY: one of the piece's objects (ours), linked once.
                    unsafe { FreeObj::set_next(o, head) };
                    head = o;
                }
            } else if p.run {
                for i in (0..p.n).rev() {
                    // SAFETY: object i of the run lies inside its span (the run was
                    // cut from `capacity - carved`); it was reserved under the class
                    // lock (counted in `carved` and `live`), so it is ours alone.
                    unsafe {
                        let o = p.obj.add(i * size).cast::<FreeObj>();
                        FreeObj::set_next(o, head);
                        head = o;
                    }
                }
            } else {
                // A list cut short (`p.rest > 0`): walked to the cut, the rest given
                // back.
                let first = p.obj.cast::<FreeObj>();
                let mut tail = first;
                // SAFETY: the piece is the first `n` objects of a free list detached
                // under the class lock and counted live there, so ours alone; the
                // list holds `n + rest` objects (its length was `carved - live`).
                unsafe {
                    for _ in 1..p.n {
                        tail = FreeObj::next(tail, c);
                    }
                    // The `rest` objects of the detached list after the `n` we keep,
                    // still counted live in the piece's span.
                    let rest = FreeObj::next(tail, c);
                    self.give_back_rest(c, p.span, rest, p.rest);
                    FreeObj::set_next(tail, head);
                }
                head = first;
            }
        }
        Batch { head, count }
    }

    /// The bookkeeping of a carve, under the class lock: up to `want` objects (more
    /// where `take` takes a whole free list) from the class's spans into `pieces`;
    /// returns how many objects and pieces. For each span with free objects, `take`
    /// says how many of its `nfree` the carve keeps (at least one, at most `nfree`)
    /// once it has `count`; its list is detached whole and the rest recorded to
    /// give back. Then a run of never-carved objects at the span's tail. Everything
    /// taken counts as live at once (Span invariant 4), so no other thread reaches
    /// it and the span cannot go back to the page heap; no object's memory is read
    /// or written here. Spans come from the page heap's free spans under the class
    /// lock; when none fits, the class lock is dropped while the page heap maps a
    /// chunk (`make_room`: a system call and page faults another refill of the
    /// class would otherwise wait for), and the carve goes on under it again. A
    /// span thus still passes from the page heap to the class under the class
    /// lock: no walk of the heap meets a Small span that no class lists or counts.
    pub(super) fn take_pieces<O: Os>(
        &self,
        c: SizeClass,
        ph: &PageHeap<O>,
        want: usize,
        pieces: &mut [Piece; MAX_PIECES],
        take: impl Fn(usize, usize) -> usize,
    ) -> (usize, usize) {
        let cls = &self.classes[c.index()];
        let (mut count, mut npieces) = (0, 0);
        // Whether this refill has had the page heap map a chunk for it already.
        let mut room_made = false;
        loop {
            let need_room = cls.with_spans(|cs| {
                // Each span adds at most two pieces (its list, its tail).
                while count < want && npieces + 2 <= MAX_PIECES {
                    let mut span = cs.partial;
                    if span.is_null() {
                        // No mapping under the class lock (a refill of the class
                        // on another thread would wait for the system call and
                        // its page faults): from the free spans, else the lock is
                        // dropped while the page heap maps a chunk. Once it has,
                        // and another thread took the room first, this one maps
                        // under the lock rather than going round again.
                        span = if room_made {
                            ph.alloc_span(c.span_pages(), 1, SpanKind::Small, c)
                        } else {
                            ph.alloc_span_from_free(c.span_pages(), 1, SpanKind::Small, c)
                        };
                        if span.is_null() {
                            return !room_made;
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
                            // Detach the whole list; all of it counts as live until a
                            // rest past what is kept is given back (`give_back_rest`).
                            let n = take(count, nfree).clamp(1, nfree);
                            pieces[npieces] = Piece {
                                obj: s.free().cast(),
                                n,
                                run: false,
                                span,
                                rest: nfree - n,
                            };
                            npieces += 1;
                            s.set_free(ptr::null_mut());
                            s.set_live(s.carved());
                            count += n;
                        }
                        // Then a run of never-carved objects at the tail.
                        let n = want
                            .saturating_sub(count)
                            .min((s.capacity() - s.carved()) as usize);
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
                false
            });
            if !need_room || !ph.make_room(c.span_pages()) {
                return (count, npieces);
            }
            room_made = true;
        }
    }

    /// Puts back the part of a span's detached free list that a carve did not keep.
    ///
    /// # Safety
    /// `rest` starts a chain of `n` free objects of Small span `span` of class `c`,
    /// detached by `take_pieces` and still counted in the span's `live`, that
    /// nobody uses.
    pub(super) unsafe fn give_back_rest(
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
            // as live). The rest is put in front of them when there are none, the
            // common case, and else behind them: their chain was written since the
            // detach and is short, while the rest may be long and cold.
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

/// The most objects a Small span of any class holds.
const MAX_SPAN_OBJECTS: usize = {
    let mut most = 0;
    let mut k = 0;
    while k < NUM_CLASSES {
        let n = SizeClass(k as u8).objects_per_span();
        if n > most {
            most = n;
        }
        k += 1;
    }
    most
};

/// Words of the map of a span's objects that `SpanMap` builds (on the
/// stack: 128 bytes for the 1,024 objects of 8 B of a one-page span).
const MAP_WORDS: usize = MAX_SPAN_OBJECTS.div_ceil(64);
const_assert!(MAP_WORDS <= 64);

/// The objects of a free list detached from a span, as a map of the span: one bit
/// an object, by its index (`SizeClass::object_index`, no division), so that they
/// can be handed out in address order. A span's list is in the order its objects
/// were freed, random after a program drops a large structure; handed out so,
/// consecutive allocations land far apart, and a program that walks what it built
/// one after the other misses in the cache and the TLB on each (jemalloc hands out
/// a slab's lowest free slot for the same reason). Building the map walks the list,
/// reading the links the pops would read anyway; the objects are then written in
/// address order, on the lines the walk just read.
pub(super) struct SpanMap {
    bits: [u64; MAP_WORDS],
    /// The words that cover the span's objects.
    words: usize,
    base: usize,
    size: usize,
}

impl SpanMap {
    /// Maps the `n` objects of the chain at `first`. An address outside the span,
    /// or one the chain holds twice (a cycle written over a free block), stops the
    /// process with a report before the map could go wrong.
    ///
    /// # Safety
    /// `first` starts a chain of at least `n >= 1` free class-`c` objects of Small
    /// span `s` that the caller owns (detached under the class lock and counted
    /// live), each link written by `FreeObj::set_next` (or by a bug this reports).
    pub(super) unsafe fn of_list(c: SizeClass, s: &Span, first: *mut FreeObj, n: usize) -> SpanMap {
        let (base, capacity, size) = (s.base() as usize, s.capacity() as usize, c.size_bytes());
        if n >= 32 && n * 2 >= capacity {
            prefetch_firsts(base, capacity, size);
        }
        let mut bits = [0u64; MAP_WORDS];
        let mut o = first;
        for i in 0..n {
            let slot = c
                .object_index((o as usize).wrapping_sub(base))
                .and_then(|k| Some((bits.get_mut(k / 64)?, 1u64 << (k % 64))));
            match slot {
                Some((word, bit)) if *word & bit == 0 => *word |= bit,
                _ => crate::link::corrupt_span_list(o, c, base),
            }
            if i + 1 < n {
                // SAFETY: `o` is one of the first `n - 1` objects of the chain (the
                // contract), inside `s` (just checked), so it has a next one.
                o = unsafe { FreeObj::next(o, c) };
            }
        }
        SpanMap {
            bits,
            words: capacity.div_ceil(64).min(MAP_WORDS),
            base,
            size,
        }
    }

    /// The mapped objects, the highest address first: each once, `n` in all.
    pub(super) fn descending(&self) -> impl Iterator<Item = *mut FreeObj> + '_ {
        let (base, size) = (self.base, self.size);
        self.bits[..self.words]
            .iter()
            .enumerate()
            .rev()
            .flat_map(move |(w, &word)| {
                let mut bits = word;
                core::iter::from_fn(move || {
                    if bits == 0 {
                        return None;
                    }
                    let j = 63 - bits.leading_zeros() as usize;
                    bits &= !(1u64 << j);
                    Some((base + (w * 64 + j) * size) as *mut FreeObj)
                })
            })
    }
}

/// Prefetches the first word of each of the `capacity` objects of `size` bytes
/// from `base` (every line of them for objects under a line). The caller is about
/// to walk a free list that holds most of them: the walk's loads depend on each
/// other, so it would take the misses one at a time; the prefetches put them all
/// in flight at once.
#[inline]
fn prefetch_firsts(base: usize, capacity: usize, size: usize) {
    #[cfg(all(target_arch = "x86_64", not(strata_loom)))]
    for at in (base..base + capacity * size).step_by(size.max(64)) {
        // SAFETY: a prefetch is a hint: it reads nothing the program sees and
        // faults on no address.
        unsafe {
            core::arch::x86_64::_mm_prefetch(at as *const i8, core::arch::x86_64::_MM_HINT_T0)
        };
    }
    #[cfg(not(all(target_arch = "x86_64", not(strata_loom))))]
    let _ = (base, capacity, size);
}

/// Whether a carve that has `count` of `want` objects takes a span's whole free
/// list of `nfree` objects rather than cutting it: when the list fits what is still
/// wanted, or the batch stays within `room` (a thread cache's list's room,
/// `Central::refill_within`), or the list overshoots what is wanted by at most a
/// quarter of `want` without the batch growing past `batch` (what `Central::refill`
/// gives, so every front end takes it; the per-CPU one caps a batch at `MAX_BATCH`,
/// above every class's batch). A whole list needs no walk to a cut; it is relinked
/// in address order (`SpanMap`).
#[inline]
fn whole_list(count: usize, nfree: usize, want: usize, batch: usize, room: usize) -> bool {
    let total = count + nfree;
    total <= want || total <= room || (total <= batch && total - want <= want / 4)
}

/// Pieces one carve may take: a span's detached free list or a run of its
/// never-carved objects, two at most a span. A batch is never larger than a span's
/// objects, so a batch takes two or three pieces in practice; a carve that fills
/// them all returns a shorter batch, which `refill` allows.
pub(super) const MAX_PIECES: usize = 8;

/// Objects a carve took from `span` under the class lock, linked after it is
/// dropped: `n` objects from `obj`, either a run of never-carved objects (`run`) or
/// the head of a detached free list, followed there by `rest` more objects to give
/// back.
#[derive(Clone, Copy)]
pub(super) struct Piece {
    pub(super) obj: *mut u8,
    pub(super) n: usize,
    pub(super) run: bool,
    pub(super) span: *mut Span,
    pub(super) rest: usize,
}

impl Piece {
    pub(super) const EMPTY: Piece = Piece {
        obj: ptr::null_mut(),
        n: 0,
        run: true,
        span: ptr::null_mut(),
        rest: 0,
    };
}
