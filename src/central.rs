//! The central tier: per size class, a lock-free [`TransferStack`] of full batches,
//! and behind it the spans of that class under a per-class lock.
//!
//! Refill (a thread cache ran dry): pop a batch (one CAS); if none, carve a batch
//! from the class's partial spans, taking a new span from the page heap when none
//! has room (the class lock held for the bookkeeping only, `carve.rs`). Flush (a thread cache overflowed): push the batch
//! (one CAS) unless the stack already holds enough; then return the objects to their
//! spans under the class lock; a span whose `live` count reaches 0 goes back to the
//! page heap.
//!
//! The per-CPU front end flushes and refills arrays (`flush_array`,
//! `refill_array`): a whole batch goes on the stack as the addresses in its
//! descriptor, and comes off it into a CPU's stack, without an object being read or
//! written; a thread cache that pops such a batch links it (`refill_within`).

use crate::Violation;
use crate::check::check;
use crate::chunk::{ChunkHeader, SPAN_LISTED, Span, SpanKind};
use crate::link::FreeObj;
use crate::meta::MetaArena;
use crate::os::Os;
use crate::page_heap::PageHeap;
use crate::size_class::{NUM_CLASSES, SizeClass};
use crate::sync::{LockRank, RawLock, UnsafeCell};
use crate::transfer::{DESC_SLOTS, DescPool, TransferStack, chain_to_array, link_array};
use core::ptr;
use crossbeam_utils::CachePadded;

mod carve;
mod carve_array;
#[cfg(all(test, not(strata_loom)))]
mod tests;

/// Bytes of full batches a class's transfer stack may hold before flushes go to the
/// spans (so that a burst of frees in one class cannot pin unbounded memory).
const STACK_BYTES: usize = 1 << 20;

/// One size class of the central tier.
///
/// Invariants: 1. every batch on `stack` holds exactly `class.batch()` objects of
/// this class, owned by no front end: linked (a thread cache's flush) or as an
/// array in its descriptor (the per-CPU front end's flush; BatchDesc invariant 2).
/// 2. `spans` (under `lock`): `partial` lists exactly the Small spans of this class
/// that have an object to give and `live > 0`; `nspans` counts all Small spans of
/// this class (Span invariant 4).
///
/// Model-checked by `loom-tests/tests/flush_refill.rs` (flush racing refill) and
/// `span_release.rs` (a span's last object returned while the class refills).
pub struct CentralClass {
    stack: TransferStack,
    lock: RawLock,
    spans: UnsafeCell<ClassSpans>,
}

struct ClassSpans {
    partial: *mut Span,
    nspans: usize,
}

/// The central tier: one `CentralClass` per size class and the descriptor pool.
pub struct Central {
    classes: [CachePadded<CentralClass>; NUM_CLASSES],
    descs: DescPool,
}

// SAFETY: `spans` is only touched under `lock`; everything else is atomics.
unsafe impl Sync for CentralClass {}
// SAFETY: the raw span pointers in `spans` name process-wide mappings, not
// thread-local memory, and are only touched under `lock`, whichever thread holds it.
unsafe impl Send for CentralClass {}

impl CentralClass {
    crate::sync::loom_const_fn! {
        fn new() -> CentralClass {
            CentralClass {
                stack: TransferStack::new(),
                lock: RawLock::new(LockRank::CentralClass),
                spans: UnsafeCell::new(ClassSpans { partial: ptr::null_mut(), nspans: 0 }),
            }
        }
    }

    fn with_spans<R>(&self, f: impl FnOnce(&mut ClassSpans) -> R) -> R {
        let _g = self.lock.guard();
        // SAFETY: the lock is held (invariant of Sync), and every access to `spans`
        // takes it, so this `&mut` is the only reference to the lists while it lives
        // (the span descriptors they link are reached through `&Span` only).
        self.spans.with_mut(|s| f(unsafe { &mut *s }))
    }

    /// `with_spans` for returning objects (a mutant skips the lock there).
    #[inline(always)]
    fn with_spans_to_release<R>(&self, f: impl FnOnce(&mut ClassSpans) -> R) -> R {
        #[cfg(not(strata_mutant = "central_release_unlocked"))]
        return self.with_spans(f);
        // Mutant: the span lists without the class lock.
        // SAFETY: none; this is the deliberate fault a loom model must catch.
        #[cfg(strata_mutant = "central_release_unlocked")]
        return self.spans.with_mut(|s| f(unsafe { &mut *s }));
    }
}

/// What a refill returned: a chain of `count` objects (null when 0).
pub struct Batch {
    /// The first object of the chain (links through `FreeObj`).
    pub head: *mut FreeObj,
    /// Objects in the chain.
    pub count: usize,
}

impl Central {
    /// Empty transfer stacks and span lists for every class.
    #[cfg(not(strata_loom))]
    pub const fn new() -> Central {
        Central {
            classes: [const { CachePadded::new(CentralClass::new()) }; NUM_CLASSES],
            descs: DescPool::new(),
        }
    }
    /// Empty transfer stacks and span lists for every class.
    #[cfg(strata_loom)]
    pub fn new() -> Central {
        Central {
            classes: core::array::from_fn(|_| CachePadded::new(CentralClass::new())),
            descs: DescPool::new(),
        }
    }

    /// Up to one batch of class `c` objects for a thread cache; an empty batch only
    /// if the OS refuses memory.
    pub fn refill<O: Os>(&self, c: SizeClass, ph: &PageHeap<O>) -> Batch {
        self.refill_within(c, ph, c.batch(), 0)
    }

    /// As [`Central::refill`], but carves at most `want` objects (`1..=batch`) when
    /// no batch waits on the transfer stack (a stacked batch is given whole: its
    /// objects are already touched). A carve takes a span's whole free list, not
    /// walked to be cut, when it is up to a quarter longer than `want` within the
    /// batch, or when the batch stays within `room` objects (a thread cache passes
    /// its list's room; 0 for none: `Central::carve_within`). A thread cache asks
    /// for few at first, so that a class used a little touches little of its span.
    pub fn refill_within<O: Os>(
        &self,
        c: SizeClass,
        ph: &PageHeap<O>,
        want: usize,
        room: usize,
    ) -> Batch {
        debug_check!(
            want >= 1 && want <= c.batch(),
            "refill_within: want outside 1..=batch"
        );
        let cls = &self.classes[c.index()];
        if let Some(i) = cls.stack.pop(&self.descs) {
            let (mut head, count) = self.descs.get(i).get();
            if let Some(a) = self.descs.array(i) {
                // An array batch (a per-CPU flush, or a thread cache's once some
                // thread is served per CPU: `Backend::want_arrays`): linked here,
                // one store into each object; the thread cache reads each link
                // when it hands the object out, which touches the object anyway.
                let mut objs = [ptr::null_mut(); DESC_SLOTS];
                let n = a.copy_array(&mut objs);
                // SAFETY: the batch's objects are ours now (popped, invariant 1),
                // distinct and free; they carry the free mark, so the key is set.
                head = unsafe { link_array(&objs[..n]) };
            }
            self.descs.free(i);
            return Batch {
                head,
                count: count as usize,
            };
        }
        self.carve_within(c, ph, want, room)
    }

    /// Up to one batch of class `c` objects as an array, for the per-CPU front end:
    /// written into `out` (at least `c.batch()` long), each object with the free
    /// mark (an encoded null link) in its first word; returns how many (0 only if
    /// the OS refuses memory). An array batch from the transfer stack is copied
    /// from its descriptor without touching an object; a chain (a thread cache's
    /// flush while no thread was served per CPU) is walked; with neither, a batch is carved straight into `out`
    /// (`carve_array.rs`: each object written once, no chain linked and walked).
    pub fn refill_array<O: Os>(
        &self,
        c: SizeClass,
        ph: &PageHeap<O>,
        out: &mut [*mut u8],
    ) -> usize {
        debug_check!(
            out.len() >= c.batch(),
            "refill_array: room for less than a batch"
        );
        let cls = &self.classes[c.index()];
        let Some(i) = cls.stack.pop(&self.descs) else {
            return self.carve_array(c, ph, out);
        };
        if let Some(a) = self.descs.array(i) {
            let n = a.copy_array(out);
            self.descs.free(i);
            debug_check!(
                n == c.batch(),
                "refill_array: a stacked array batch that is not a whole batch"
            );
            return n;
        }
        let (head, count) = self.descs.get(i).get();
        self.descs.free(i);
        // SAFETY: a chain of `count` class-c objects, ours (popped: invariant 1).
        unsafe { chain_to_array(head, count as usize, c, out) }
    }

    /// Takes back a chain of `count` class `c` objects from a thread cache.
    ///
    /// # Safety
    /// `head` starts a chain of `count` objects of class `c`, given out by this
    /// central tier, that nobody uses any more.
    pub unsafe fn flush<O: Os>(
        &self,
        c: SizeClass,
        head: *mut FreeObj,
        count: usize,
        ph: &PageHeap<O>,
        meta: &MetaArena,
    ) {
        let cls = &self.classes[c.index()];
        if count == c.batch() && cls.stack.len() < max_stacked_batches(c) {
            if let Some(i) = self.descs.alloc(ph.os(), meta) {
                self.descs.get(i).set(head, count as u32);
                cls.stack.push(&self.descs, i);
                return;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.release_objects(c, head, count, ph) };
    }

    /// Takes back `objs`, class `c` objects from the per-CPU front end: a full batch
    /// goes on the transfer stack as an array in its descriptor (no object read or
    /// written: they keep the free mark they carry), anything else to the spans.
    ///
    /// # Safety
    /// `objs` are distinct class `c` objects, given out by this central tier, that
    /// nobody uses any more, each with the free mark in its first word (hardened
    /// builds).
    pub unsafe fn flush_array<O: Os>(
        &self,
        c: SizeClass,
        objs: &[*mut u8],
        ph: &PageHeap<O>,
        meta: &MetaArena,
    ) {
        let cls = &self.classes[c.index()];
        if objs.len() == c.batch() && cls.stack.len() < max_stacked_batches(c) {
            if let Some((i, a)) = self.descs.alloc_array(ph.os(), meta) {
                a.set_array(objs);
                cls.stack.push(&self.descs, i);
                return;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.release_array(c, objs, ph) };
    }

    /// Returns objects to their spans; spans left with no live object go back to the
    /// page heap.
    ///
    /// # Safety
    /// As for [`Central::flush`].
    pub unsafe fn release_objects<O: Os>(
        &self,
        c: SizeClass,
        head: *mut FreeObj,
        count: usize,
        ph: &PageHeap<O>,
    ) {
        self.classes[c.index()].with_spans_to_release(|cs| {
            let mut obj = head;
            for _ in 0..count {
                // SAFETY: the chain has `count` objects (contract), ours.
                let next = unsafe { FreeObj::next(obj, c) };
                // SAFETY: a class-c object given out and not returned, and the
                // class lock is held (we are in `with_spans_to_release`).
                unsafe { release_one(cs, obj, c, ph) };
                obj = next;
            }
        });
    }

    /// [`Central::release_objects`] for an array of objects.
    ///
    /// # Safety
    /// As for [`Central::flush_array`], less the free mark.
    pub unsafe fn release_array<O: Os>(&self, c: SizeClass, objs: &[*mut u8], ph: &PageHeap<O>) {
        self.classes[c.index()].with_spans_to_release(|cs| {
            for &o in objs {
                // SAFETY: a class-c object given out and not returned (contract),
                // and the class lock is held (we are in `with_spans_to_release`).
                unsafe { release_one(cs, o.cast(), c, ph) };
            }
        });
    }

    /// Moves every batch of class `c` from the transfer stack back to the spans;
    /// returns the objects moved.
    pub fn drain<O: Os>(&self, c: SizeClass, ph: &PageHeap<O>) -> usize {
        let cls = &self.classes[c.index()];
        let mut moved = 0;
        while let Some(i) = cls.stack.pop(&self.descs) {
            let (head, count) = self.descs.get(i).get();
            moved += count as usize;
            if let Some(a) = self.descs.array(i) {
                let mut objs = [ptr::null_mut(); DESC_SLOTS];
                let n = a.copy_array(&mut objs);
                self.descs.free(i);
                // SAFETY: by invariant 1 the array holds `n` class-c objects that
                // no one uses.
                unsafe { self.release_array(c, &objs[..n], ph) };
            } else {
                self.descs.free(i);
                // SAFETY: by invariant 1 the batch holds `count` class-c objects
                // that no one uses.
                unsafe { self.release_objects(c, head, count as usize, ph) };
            }
        }
        moved
    }

    /// The version of class `c`'s transfer stack (see `TransferStack::version`).
    pub fn stack_version(&self, c: SizeClass) -> u64 {
        self.classes[c.index()].stack.version()
    }

    /// Full batches on class `c`'s transfer stack, if no refill or flush moved one
    /// while they were counted (see `TransferStack::count_if_stable`).
    pub fn stacked_batches(&self, c: SizeClass) -> Option<usize> {
        self.classes[c.index()].stack.count_if_stable(&self.descs)
    }

    /// Locks every class (in index order, which is address order: the lock-order
    /// rule for locks of one rank) for a consistent view or a fork. Only
    /// `Backend::lock_set` calls it, which puts it in the order of the other locks.
    pub(crate) fn lock_all(&self) {
        for cls in &self.classes {
            cls.lock.lock();
        }
    }
    /// Unlocks what `lock_all` locked.
    pub(crate) fn unlock_all(&self) {
        for cls in self.classes.iter().rev() {
            cls.lock.unlock();
        }
    }
    /// Holds the descriptor pool's growth lock (fork handlers).
    pub fn lock_desc_growth(&self) {
        self.descs.lock_growth();
    }
    /// Releases `lock_desc_growth`.
    pub fn unlock_desc_growth(&self) {
        self.descs.unlock_growth();
    }

    /// Checks invariant 2 and Span invariant 4 for every partial span, and that
    /// `nspans` matches `counted`, the Small spans per class found by a walk of the
    /// chunks; and the descriptor pool (`DescPool::validate`). Call with every class
    /// lock held (`Backend::lock_set`).
    ///
    /// # Safety
    /// The caller holds every class lock.
    pub unsafe fn validate_locked(
        &self,
        small_spans: &[usize; NUM_CLASSES],
    ) -> Result<(), Violation> {
        self.descs.validate()?;
        for (ci, cls) in self.classes.iter().enumerate() {
            // SAFETY: the caller holds this class's lock.
            let cs = cls.spans.with(|s| unsafe { &*s });
            check(
                cs.nspans == small_spans[ci],
                "CentralClass",
                2,
                "span count differs from the chunks",
                ci,
            )?;
            let mut span = cs.partial;
            while !span.is_null() {
                // SAFETY: partial spans are Small spans of this class, ours under lock.
                let s = unsafe { &*span };
                check(
                    s.kind() == SpanKind::Small && s.class().index() == ci,
                    "CentralClass",
                    2,
                    "foreign span on the partial list",
                    span as usize,
                )?;
                check(
                    s.has_free_object() && s.live() > 0,
                    "Span",
                    4,
                    "partial span is full or empty",
                    s.base() as usize,
                )?;
                span = s.next();
            }
        }
        Ok(())
    }
}

impl Default for Central {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks Span invariant 4 for one Small span: `live + |free| + (capacity - carved)
/// == capacity`, every free object inside the span on an object boundary.
///
/// # Safety
/// The caller holds the lock of the span's class.
pub unsafe fn validate_small_span(s: &Span) -> Result<(), Violation> {
    let c = s.class();
    let at = s.base() as usize;
    check(
        s.capacity() as usize == c.objects_per_span(),
        "Span",
        4,
        "capacity differs from the class",
        at,
    )?;
    check(
        s.carved() <= s.capacity() && s.live() <= s.carved(),
        "Span",
        4,
        "carved/live out of range",
        at,
    )?;
    let mut n = 0u32;
    let mut o = s.free();
    while !o.is_null() {
        let off = o as usize - at;
        check(
            o as usize >= at && off < s.carved() as usize * c.size_bytes(),
            "Span",
            4,
            "free object outside the carved part",
            o as usize,
        )?;
        check(
            off % c.size_bytes() == 0,
            "Span",
            4,
            "free object not on a boundary",
            o as usize,
        )?;
        n += 1;
        check(
            n <= s.carved(),
            "Span",
            4,
            "free list longer than carved (cycle?)",
            at,
        )?;
        // SAFETY: `o` is a free object of this span (checked above), ours under the lock.
        let next = unsafe { FreeObj::try_next(o) };
        check(
            next.is_some(),
            "Span",
            4,
            "free object's link does not decode (overwritten)",
            o as usize,
        )?;
        o = next.unwrap_or(ptr::null_mut());
    }
    check(
        s.live() + n == s.carved(),
        "Span",
        4,
        "live + free != carved",
        at,
    )?;
    let listed = s.flags() & SPAN_LISTED != 0;
    check(
        listed == (s.has_free_object() && s.live() > 0),
        "Span",
        4,
        "partial-list membership wrong",
        at,
    )
}

/// Returns `obj` to its span's free list; a span left with no live object goes
/// back to the page heap (unlisted first), one that had no free object is listed.
///
/// # Safety
/// `obj` is a class-`c` object given out by the central tier and not returned,
/// that nobody uses; `cs` is its class's span lists, whose lock the caller holds.
#[inline(always)]
unsafe fn release_one<O: Os>(
    cs: &mut ClassSpans,
    obj: *mut FreeObj,
    c: SizeClass,
    ph: &PageHeap<O>,
) {
    // SAFETY: `obj` lies in a live Small span of class c (it was given out and not
    // returned), whose descriptor the page map finds; the class lock makes the span
    // ours.
    unsafe {
        let span = (*ChunkHeader::of(obj.cast())).span_of(obj.cast());
        let s = &*span;
        debug_check!(
            s.kind() == SpanKind::Small && s.class() == c,
            "release_objects: object's span is not a Small span of its class"
        );
        FreeObj::set_next(obj, s.free());
        s.set_free(obj);
        s.set_live(s.live() - 1);
        if s.live() == 0 {
            // Unlist before the page heap takes it: a listed span is one the class
            // may carve from (Span invariant 4).
            #[cfg(not(strata_mutant = "central_empty_span_stays_listed"))]
            if s.flags() & SPAN_LISTED != 0 {
                list_remove(&mut cs.partial, span);
            }
            cs.nspans -= 1;
            ph.free_span(span);
        } else if s.flags() & SPAN_LISTED == 0 {
            list_push(&mut cs.partial, span);
        }
    }
}

fn max_stacked_batches(c: SizeClass) -> usize {
    (STACK_BYTES / (c.batch() * c.size_bytes())).clamp(4, 512)
}

/// Pushes `span` on the front of a doubly linked span list.
///
/// # Safety
/// The list's lock is held and `span` is in no list.
unsafe fn list_push(head: &mut *mut Span, span: *mut Span) {
    // SAFETY: per the contract.
    unsafe {
        (*span).set_prev(ptr::null_mut());
        (*span).set_next(*head);
        if !head.is_null() {
            (**head).set_prev(span);
        }
        *head = span;
        (*span).set_flags((*span).flags() | SPAN_LISTED);
    }
}

/// Unlinks `span` from the list at `head`.
///
/// # Safety
/// The list's lock is held and `span` is in that list.
unsafe fn list_remove(head: &mut *mut Span, span: *mut Span) {
    // SAFETY: per the contract.
    unsafe {
        let s = &*span;
        if s.prev().is_null() {
            *head = s.next();
        } else {
            (*s.prev()).set_next(s.next());
        }
        if !s.next().is_null() {
            (*s.next()).set_prev(s.prev());
        }
        s.set_prev(ptr::null_mut());
        s.set_next(ptr::null_mut());
        s.set_flags(s.flags() & !SPAN_LISTED);
    }
}
