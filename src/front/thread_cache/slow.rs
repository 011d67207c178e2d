//! The thread cache's slow paths: refill from and flush to the backend, the
//! adaptive maxima (grow on overflow, steal under the byte budget), the adaptive
//! budget (borrow room from the backend's `CachePool` on overflow, give it back when
//! calm, flushed or retired), the double-free walk, whole-cache flush and budget
//! changes. Called by `global` on a fast-path
//! miss and at thread exit (through `pool`); calls only the backend's front-end
//! interface.

use super::{HeapState, PUBLISH_BYTES, ThreadHeap};
use crate::backend::Backend;
use crate::link::{self, FreeObj};
use crate::os::Os;
use crate::size_class::{
    CLASS_BATCH, CLASS_CAP, CLASS_FIRST_REFILL, CLASS_SIZE, NUM_CLASSES, SizeClass,
};
use crate::transfer::{DESC_SLOTS, chain_tail, chain_to_array};
use core::ptr;

/// The most a heap borrows, as a multiple of its own budget (2 MiB by default: a
/// thread's cache then holds at most 8 MiB). tcmalloc caps a thread's cache at
/// 4 MiB; rptest (BENCHMARKS.md) keeps gaining up to 8.
pub const BORROW_CAP_FACTOR: usize = 3;

/// The unit of borrowing and giving back (tcmalloc steals 64 KiB at a time; a step
/// here covers a batch of most classes, so one overflow borrows once).
pub const BORROW_STEP: usize = 128 << 10;

/// Slow-path events (refills, and frees that flush) with room to spare in the
/// budget after which a heap gives one step back: a thread whose working set shrank
/// returns what it borrowed a step at a time, while one that still needs it borrows
/// it again at the next overflow. Long, because every give-back lowers maxima and
/// flushes: at 1,024 events a thread that needs the room kept giving it back and
/// taking it again (rptest at 1 thread: 19-28M ops/s, as without borrowing, against
/// 55-65M with no give-back; at 65,536, 58-67M: BENCHMARKS.md).
pub const CALM_EVENTS: u32 = 1 << 16;

/// A list grows past a batch at any overflow while it holds no more than this
/// many bytes; past them only when it swings (`free_slow`). Lists of small
/// objects cost little memory either way, and a thread whose small objects wander
/// through the central tier gets back objects other threads freed, in cache lines
/// other threads write (alloc-test at 2 and 4 threads: 0.86x with the swing rule
/// on every list, BENCHMARKS.md); the memory is in the lists of large objects
/// (the demo's 3.5-8 KiB classes held 190-270 KiB each).
pub const FREE_GROWTH_BYTES: usize = 64 << 10;

/// Slow-path events between two measures of a heap's miss rate (`note_slow`).
pub const RATE_EVENTS: u32 = 256;

/// A heap whose lists hand out fewer objects than this per slow-path event is hot
/// (`note_slow`): its misses cost it measurably, and it may borrow room.
pub const HOT_ALLOCS: u64 = 256;

impl ThreadHeap {
    /// Slow path of alloc on a live heap: refill class `c` from the central tier and
    /// return one object (null if the OS refuses memory).
    ///
    /// # Safety
    /// The heap is live and belongs to the calling thread.
    #[cold]
    #[inline(never)]
    pub unsafe fn alloc_slow<O: Os>(&self, c: SizeClass, be: &Backend<O>) -> *mut u8 {
        #[cfg(strata_loom)]
        self.touch();
        debug_check!(
            self.state() == HeapState::Live,
            "slow path on a heap that is not live"
        );
        self.note_slow(be);
        self.tick_calm(be);
        let list = &self.lists[c.index()];
        // Slow start of the refill size (FreeList::refill_want): the first refill of
        // a class carves what fits in a page, each later one twice as many, up to
        // the batch.
        let ci = c.index();
        let want = match list.refill_want.get() {
            0 => CLASS_FIRST_REFILL[ci] as u32,
            w => w,
        };
        list.refill_want.set((want * 2).min(CLASS_BATCH[ci] as u32));
        list.underflowed.set(true);
        // The list is empty: a span's whole free list is taken, not walked to be
        // cut, when it fits the room the list's max may grow to within the budget
        // (and the class's cap); the max then grows to hold it (tcmalloc grows a
        // list's max on a miss too), so `len <= max` and invariant 3 hold. A thread
        // that only allocates a class (a producer) takes a span's list in one
        // refill instead of cutting a batch off it at a time.
        let max = list.max.get();
        let size = CLASS_SIZE[ci] as usize;
        let headroom = self.budget_bytes().saturating_sub(self.max_bytes.get()) / size;
        let room = (max as usize + headroom).min(CLASS_CAP[ci] as usize);
        self.begin_move();
        let b = be.refill_within(c, want as usize, room);
        if b.count == 0 {
            self.end_move();
            return ptr::null_mut();
        }
        if b.count > CLASS_BATCH[ci] as usize && b.count > max as usize {
            // A whole list longer than a batch: only `room` allows one (a stacked
            // batch or a carve within the batch may still leave `len` above `max`,
            // invariant 2), so it fits the budget and the cap.
            list.max.set(b.count as u32);
            self.max_bytes
                .set(self.max_bytes.get() + (b.count - max as usize) * size);
        }
        self.received.add(b.count as u64);
        list.allocs.add(1);
        self.note_flow((b.count * c.size_bytes()) as isize, be);
        debug_check!(
            list.head.get().is_null() && list.len.get() == 0,
            "alloc_slow: refill into a list that is not empty"
        );
        // SAFETY: the refill gave us a chain of b.count >= 1 class-c objects.
        list.head.set(unsafe { FreeObj::next(b.head, c) });
        list.len.set(b.count as u32 - 1);
        self.end_move();
        // SAFETY: the batch's first object is ours to hand out (see `pop`).
        unsafe { FreeObj::clear(b.head) };
        b.head.cast()
    }

    /// Slow path of free on a live heap: the list is at its max. Grow the max if the
    /// budget allows (past a batch, only up to what the heap handed out of the class
    /// ever, and past 64 KiB only when the list swings; past the budget only for a
    /// hot heap), else flush a batch to the central tier; then cache `p`.
    ///
    /// # Safety
    /// As for `try_push`, and the heap is live (not a sentinel).
    #[cold]
    #[inline(never)]
    pub unsafe fn free_slow<O: Os>(&self, c: SizeClass, p: *mut u8, be: &Backend<O>) {
        #[cfg(strata_loom)]
        self.touch();
        debug_check!(
            self.state() == HeapState::Live,
            "slow path on a heap that is not live"
        );
        let ci = c.index();
        let list = &self.lists[ci];
        // SAFETY: the caller gives up `p`, a class-c block of ours.
        if unsafe { FreeObj::looks_free(p.cast(), self.link_key.get()) } {
            // Already cached here? Then it is a double free; if not, the program's
            // data happened to decode as a link (or the block sits in another cache,
            // which this cannot see), and it goes straight to the central tier below.
            if let Some(depth) = self.position_in_list(ci, p.cast()) {
                link::double_free(p, c, depth);
            }
        }
        self.note_slow(be);
        let (size, batch, cap) = (
            CLASS_SIZE[ci] as usize,
            CLASS_BATCH[ci] as u32,
            CLASS_CAP[ci] as u32,
        );
        let max = list.max.get();
        let mut pressed = false;
        // Past a batch, a list grows only when it ran empty since it last
        // overflowed, or when this overflow continues a run of frees (no object
        // handed out since the last overflow) whose first overflow grew: its length
        // then swings over its whole range, and a longer list saves misses at both
        // ends (a program that frees what it allocated a moment ago, as
        // glibc-simple's rounds do, is served by lists as long as its rounds). A
        // list that overflows again without either holds objects it did not need
        // (a thread that frees more of the class than it allocates, or whose frees
        // and allocations merely wander: a length that drifts up would otherwise
        // grow `max`, and borrow, at every overflow until the cap), so it flushes
        // a batch instead. A class the thread only frees (a consumer's, blocks
        // another thread allocated) never runs empty and keeps a batch to flush.
        // And a list never holds more than this heap has ever handed out of the
        // class. (The slow start below a batch neither needs nor spends the signs.)
        let allocs = list.allocs.get();
        let swung = max >= batch
            && (list.underflowed.replace(false)
                || (list.grew.get() && list.overflow_mark.get() == allocs as u16));
        let grown = (max + batch).min(cap);
        let small = grown as usize * size <= FREE_GROWTH_BYTES;
        if max < cap && (max < batch || ((swung || small) && allocs >= u64::from(max))) {
            let extra = (grown - max) as usize * size;
            // Past the budget, only a heap whose misses cost it (`hot`) takes room:
            // borrowed from the pool, else stolen from its other classes. A calm
            // heap's list stays as it is and the free flushes: borrowed room would
            // only hold objects, and stealing would move them from list to list
            // through the central tier (alloc-test at 1 thread peaked at 6.5 MiB
            // instead of 5.1 when calm heaps stole past a batch). Up to a batch a
            // calm heap steals, or each free of a list held at 0 would be a slow
            // path of its own; it does not borrow, or its other lists would grow
            // into the room.
            if self.max_bytes.get() + extra > self.budget_bytes() {
                pressed = true;
                let hot = self.hot.get();
                if hot {
                    self.borrow(self.max_bytes.get() + extra - self.budget_bytes(), be);
                }
                if (hot || max < batch) && self.max_bytes.get() + extra > self.budget_bytes() {
                    self.steal(extra, ci, be);
                }
            }
            if self.max_bytes.get() + extra <= self.budget_bytes() {
                list.max.set(grown);
                self.max_bytes.set(self.max_bytes.get() + extra);
            }
        }
        if max >= batch {
            list.grew.set(list.max.get() > max);
            list.overflow_mark.set(allocs as u16);
        }
        if !pressed {
            self.tick_calm(be);
        }
        let len = list.len.get();
        let max = list.max.get();
        if len >= max {
            // Flush at least a batch, and enough to get back under max (a refill can
            // leave the list above a max that was since lowered).
            let n = (len + 1 - max.min(len + 1)).max(batch).min(len);
            if n > 0 {
                // SAFETY: the list holds len >= n objects (invariant 1).
                unsafe { self.flush_front(ci, n as usize, be) };
            }
        }
        // SAFETY: forwarded contract; the list now has room or max is 0.
        unsafe {
            if !self.try_push(c, p) {
                // Nothing may be cached (budget exhausted, max 0): straight back.
                FreeObj::set_next(p.cast(), ptr::null_mut());
                self.begin_move();
                self.returned.add(1);
                self.note_flow(-(size as isize), be);
                be.flush(c, p.cast(), 1);
                self.end_move();
            }
        }
    }

    /// Where `obj` is in list `ci`, counted from the head; None if it is not there.
    /// A walk of at most `len` links (each checked), on the free slow path only.
    fn position_in_list(&self, ci: usize, obj: *mut FreeObj) -> Option<usize> {
        let list = &self.lists[ci];
        let mut o = list.head.get();
        for depth in 0..list.len.get() as usize {
            if o.is_null() {
                break;
            }
            if o == obj {
                return Some(depth);
            }
            // SAFETY: a cached object of the class (invariant 1) whose link is
            // followed as `pop` would.
            o = unsafe { FreeObj::next(o, SizeClass(ci as u8)) };
        }
        None
    }

    /// Lowers other classes' max (round robin, a batch at a time) until `need` more
    /// bytes fit the budget or every class was tried once (owner only, as the
    /// callers' contracts say).
    fn steal<O: Os>(&self, need: usize, keep: usize, be: &Backend<O>) {
        for _ in 0..NUM_CLASSES {
            if self.max_bytes.get() + need <= self.budget_bytes() {
                return;
            }
            let v = self.steal_next.get() as usize;
            self.steal_next.set(((v + 1) % NUM_CLASSES) as u8);
            let list = &self.lists[v];
            if v == keep || list.max.get() == 0 {
                continue;
            }
            let cut = (CLASS_BATCH[v] as u32).min(list.max.get());
            list.max.set(list.max.get() - cut);
            self.max_bytes
                .set(self.max_bytes.get() - cut as usize * CLASS_SIZE[v] as usize);
            let excess = list.len.get().saturating_sub(list.max.get());
            if excess > 0 {
                // SAFETY: the list holds len > excess objects.
                unsafe { self.flush_front(v, excess as usize, be) };
            }
        }
    }

    /// Counts a slow-path event (outside any move: a give-back flushes). Every
    /// [`RATE_EVENTS`] of them the heap measures its miss rate: hot when its
    /// lists handed out fewer than [`HOT_ALLOCS`] objects per slow-path event in
    /// that time. Only a hot heap borrows room beyond its budget; a heap that is
    /// not gives a step of what it borrowed back at each measure. A heap that
    /// misses once in thousands of allocations loses nothing measurable to its
    /// misses, and room it borrowed would only hold objects (the demo's request
    /// threads: one miss in ~1,200 allocations, and 2 MiB borrowed each before
    /// this; rptest: one in 30-60).
    fn note_slow<O: Os>(&self, be: &Backend<O>) {
        let n = self.since_rate.get() + 1;
        if n < RATE_EVENTS {
            self.since_rate.set(n);
            return;
        }
        self.since_rate.set(0);
        let allocs = self.allocs_total();
        let handed = allocs.wrapping_sub(self.allocs_mark.get());
        self.allocs_mark.set(allocs);
        let hot = handed < u64::from(RATE_EVENTS) * HOT_ALLOCS;
        self.hot.set(hot);
        if !hot && self.borrowed.get() > 0 {
            self.give_back_step(be);
        }
    }

    /// Starts the miss-rate measure afresh (a heap going live).
    pub(super) fn restart_rate(&self) {
        self.since_rate.set(0);
        self.allocs_mark.set(self.allocs_total());
        self.hot.set(false);
    }

    /// Bytes this heap borrowed from the process-wide pool (any thread may ask).
    pub fn borrowed_bytes(&self) -> usize {
        self.borrowed.get() as usize
    }

    /// The budget the maxima must fit: the heap's own plus what it borrowed
    /// (invariant 8).
    pub(super) fn budget_bytes(&self) -> usize {
        self.base_budget.get() + self.borrowed.get() as usize
    }

    /// Borrows room for at least `short` more bytes of maxima from the pool, a
    /// whole number of steps, within the heap's cap (invariant 8); borrows nothing
    /// if the pool is spent (the caller then steals between its own classes).
    fn borrow<O: Os>(&self, short: usize, be: &Backend<O>) {
        self.calm.set(0);
        let borrowed = self.borrowed.get() as usize;
        let room =
            (self.base_budget.get().saturating_mul(BORROW_CAP_FACTOR)).saturating_sub(borrowed);
        let step = short
            .div_ceil(BORROW_STEP)
            .saturating_mul(BORROW_STEP)
            .min(room);
        if step > 0 && be.cache_pool.borrow(step) {
            self.borrowed.set((borrowed + step) as u64);
        }
    }

    /// Counts a slow-path event with room to spare in the budget; after
    /// [`CALM_EVENTS`] of them in a row, gives a step of borrowed room back, lowering
    /// maxima (and flushing) to fit. Outside any move (`steal` flushes).
    pub(super) fn tick_calm<O: Os>(&self, be: &Backend<O>) {
        let borrowed = self.borrowed.get() as usize;
        if borrowed == 0 {
            return;
        }
        let calm = self.calm.get() + 1;
        if calm < CALM_EVENTS {
            self.calm.set(calm);
            return;
        }
        self.calm.set(0);
        self.give_back_step(be);
    }

    /// Gives a step of borrowed room back to the pool (all of it if less is
    /// borrowed), lowering maxima (and flushing) to fit the smaller budget.
    fn give_back_step<O: Os>(&self, be: &Backend<O>) {
        let borrowed = self.borrowed.get() as usize;
        let back = borrowed.min(BORROW_STEP);
        self.borrowed.set((borrowed - back) as u64);
        self.fit_budget(be);
        be.cache_pool.give_back(back);
    }

    /// Lowers maxima (flushing what they no longer hold) until they fit the budget
    /// again (invariant 3), a batch of every class a round.
    fn fit_budget<O: Os>(&self, be: &Backend<O>) {
        while self.max_bytes.get() > self.budget_bytes() {
            let before = self.max_bytes.get();
            self.steal(0, NUM_CLASSES, be);
            if self.max_bytes.get() == before {
                return;
            }
        }
    }

    /// Hands the first `n` objects of list `ci` to the central tier.
    ///
    /// # Safety
    /// `1 <= n <= lists[ci].len`; the calling thread owns the heap.
    unsafe fn flush_front<O: Os>(&self, ci: usize, n: usize, be: &Backend<O>) {
        self.begin_move();
        let list = &self.lists[ci];
        let head = list.head.get();
        let c = SizeClass(ci as u8);
        // SAFETY: the list has at least n class-ci objects (contract and invariant 1).
        unsafe {
            let tail = chain_tail(head, n, c);
            list.head.set(FreeObj::next(tail, c));
            FreeObj::set_next(tail, ptr::null_mut());
        }
        list.len.sub(n as u32);
        self.returned.add(n as u64);
        self.note_flow(-((n * CLASS_SIZE[ci] as usize) as isize), be);
        if n == c.batch() && n <= DESC_SLOTS && be.arrays_wanted() {
            // Per-CPU caches refill from arrays: this thread walks the chain it
            // has just walked (its objects are in this CPU's cache), marking each
            // object free, so that a CPU's refill copies the addresses without
            // reading an object.
            let mut objs = [ptr::null_mut::<u8>(); DESC_SLOTS];
            // SAFETY: the chain holds n class-ci objects nobody uses, linked and
            // null-terminated (above); `objs` has room for n.
            let k = unsafe { chain_to_array(head, n, c, &mut objs) };
            // SAFETY: k distinct class-ci objects of `be` nobody uses, each with
            // the free mark `chain_to_array` wrote.
            unsafe { be.flush_array(c, &objs[..k]) };
        } else {
            // SAFETY: the chain holds n class-ci objects nobody uses.
            unsafe { be.flush(c, head, n) };
        }
        self.end_move();
    }

    /// Returns every cached object to the central tier and resets the adaptive maxima.
    ///
    /// # Safety
    /// The calling thread owns the heap; it is not a sentinel.
    pub unsafe fn flush_all<O: Os>(&self, be: &Backend<O>) {
        #[cfg(strata_loom)]
        self.touch();
        for (ci, &batch) in CLASS_BATCH.iter().enumerate() {
            let list = &self.lists[ci];
            while list.len.get() > 0 {
                let n = (batch as u32).min(list.len.get());
                // SAFETY: 1 <= n <= len; the contract.
                unsafe { self.flush_front(ci, n as usize, be) };
            }
            list.max.set(0);
            list.forget_growth();
        }
        self.max_bytes.set(0);
        // SAFETY: the calling thread owns the heap, not a sentinel (the contract).
        unsafe { self.give_back_room(be) };
    }

    /// After a whole-heap flush or a drain: the room borrowed goes back to the
    /// pool with the objects (invariant 8), the calm count restarts, and the flow
    /// not yet published is.
    ///
    /// # Safety
    /// The calling thread owns the heap (its owner, or a drainer under its drain
    /// lock); it is not a sentinel.
    pub(super) unsafe fn give_back_room<O: Os>(&self, be: &Backend<O>) {
        be.cache_pool.give_back(self.borrowed.get() as usize);
        self.borrowed.set(0);
        self.calm.set(0);
        be.note_flow(self.unpublished.get());
        self.unpublished.set(0);
    }

    /// `Σ max × size` over the lists (what `max_bytes` holds, invariant 3).
    pub(super) fn lists_max_bytes(&self) -> usize {
        self.lists
            .iter()
            .zip(CLASS_SIZE.iter())
            .map(|(l, &size)| l.max.get() as usize * size as usize)
            .sum()
    }

    /// Sets the byte budget; shrinks maxima now if it dropped.
    ///
    /// # Safety
    /// The calling thread owns the heap; it is not a sentinel.
    pub unsafe fn set_budget<O: Os>(&self, budget_bytes: usize, be: &Backend<O>) {
        #[cfg(strata_loom)]
        self.touch();
        // What was borrowed goes back: the new budget is the heap's own.
        be.cache_pool.give_back(self.borrowed.get() as usize);
        self.borrowed.set(0);
        self.base_budget.set(budget_bytes);
        self.fit_budget(be);
    }

    /// Counts a reallocation (owner only; not on a sentinel).
    pub fn note_realloc(&self, in_place: bool) {
        debug_check!(
            self.state() == HeapState::Live,
            "note_realloc on a heap that is not live"
        );
        self.reallocs.add(1);
        if in_place {
            self.reallocs_in_place.add(1);
        }
    }

    /// Adds `delta` bytes of flow from the central tier; publishes past the threshold
    /// (owner only, as the callers' contracts say).
    #[inline]
    pub(super) fn note_flow<O: Os>(&self, delta: isize, be: &Backend<O>) {
        let unpublished = self.unpublished.get() + delta;
        if unpublished.unsigned_abs() >= PUBLISH_BYTES as usize {
            be.note_flow(unpublished);
            self.unpublished.set(0);
        } else {
            self.unpublished.set(unpublished);
        }
    }
}
