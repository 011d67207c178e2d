//! The page heap's return of memory to the OS: purge (`MADV_DONTNEED`) of spans
//! free for longer than the delay, and unmapping of wholly free chunks beyond the
//! reserve. Runs under the page-heap lock, from the page heap's frees
//! (`maybe_purge`), `release_all` and the backend's `purge_due`; the delayed
//! passes in slices of bounded work a hold of the lock ([`PurgeBudget`]).

use super::*;

impl<O: Os> PageHeap<O> {
    /// Unmaps a wholly free chunk whose span is not in any bin; returns the bytes
    /// unmapped. If the OS refuses, the chunk is left as it was (mapped, listed, in
    /// the chunk map, counted) for the caller to file its span again.
    ///
    /// # Safety
    /// Lock held; every usable page of `chunk` is in one free span, not binned.
    pub(super) unsafe fn unmap_chunk(
        &self,
        h: &mut Inner,
        chunk: *mut ChunkHeader,
    ) -> Result<usize, OsError> {
        // SAFETY: per the contract nothing in the chunk is in use or referenced; the
        // header is read before the unmap and written only if the unmap failed.
        unsafe {
            let c = &*chunk;
            let (prev, next) = (c.prev(), c.next());
            // Out of the chunk map before the pages go: a lookup that finds the bit
            // reads the header (a wholly free chunk has no block anyone may free).
            self.chunk_map.clear(chunk as usize);
            c.set_magic(0);
            if let Err(e) = self.os.unmap(chunk.cast(), CHUNK_SIZE) {
                c.set_magic(CHUNK_MAGIC);
                self.chunk_map.set(chunk as usize);
                h.unmap_failures += 1;
                return Err(e);
            }
            // Unlinked through the neighbours only: the chunk's own header is gone
            // (`c` is not used again).
            if prev.is_null() {
                h.chunks = next;
            } else {
                (*prev).set_next(next);
            }
            if !next.is_null() {
                (*next).set_prev(prev);
            }
            h.nchunks -= 1;
            h.free_pages -= USABLE_PAGES;
            h.unmapped_total += CHUNK_SIZE as u64;
        }
        Ok(CHUNK_SIZE)
    }

    /// Purges spans free for longer than the delay; at most every half delay, and
    /// not while a background thread of this process does the passes
    /// ([`PageHeap::leave_passes_to`]). One slice of the pass (see
    /// [`PurgeBudget`]) under the caller's hold of the lock: until the pass is done,
    /// the next frees go on with it, each paying one slice at most.
    pub(super) fn maybe_purge(&self, h: &mut Inner, now: u64) {
        if now < h.last_purge_ms.saturating_add(self.purge_delay_ms() / 2) {
            return;
        }
        // Relaxed: a setting; a stale reading costs one pass done twice or late.
        let background = self.passes_by.load(Ordering::Relaxed);
        if background != 0 && background == crate::platform::process_id() {
            // Looked again after another half delay (`process_id` is a system call).
            if now != u64::MAX {
                h.last_purge_ms = now;
            }
            return;
        }
        self.purge_due_slice(h, now);
    }

    /// Has the process `pid`'s own thread do the delayed purge passes
    /// ([`PageHeap::purge_due`]) instead of the frees that find one due (0: the
    /// frees again). Keyed by process, so that a forked child, which has no such
    /// thread, goes back to passes at its frees.
    pub fn leave_passes_to(&self, pid: u32) {
        // Relaxed: a setting, read as one (`maybe_purge`).
        self.passes_by.store(pid, Ordering::Relaxed);
    }

    /// Unmaps wholly free chunks beyond the reserve and purges dirty spans, of those
    /// free for longer than the delay (`maybe_purge` without its rate limit: the
    /// background purge thread's pass). Returns the bytes unmapped or purged.
    ///
    /// The pass runs in slices (see [`PurgeBudget`]), each under one hold of the
    /// lock, and yields the CPU between them: after a large free, a whole pass
    /// under one hold made every span allocation and free wait for all of it.
    pub fn purge_due(&self) -> usize {
        let now = self.now_ms();
        let mut released = 0;
        loop {
            let (bytes, done, waited) = self.with_inner(|h| {
                let (bytes, done) = self.purge_due_slice(h, now);
                self.note_resident(h);
                (bytes, done, self.lock.has_waiters())
            });
            released += bytes;
            if done {
                return released;
            }
            // A thread slept waiting for this slice: give it the time to wake and
            // take the lock. Yielding is not enough: the waiter wakes on another
            // CPU tens of microseconds later, and this thread, back at once, would
            // take the lock first at every slice, so the waiter would wait for the
            // whole pass after all (measured: ~50 ms after a 512 MiB free,
            // `purge_stall.c`). Loom models yield only.
            if waited {
                #[cfg(not(strata_loom))]
                crate::platform::sleep_ms(1);
                #[cfg(strata_loom)]
                crate::platform::yield_now();
            } else {
                crate::platform::yield_now();
            }
        }
    }

    /// One slice of the purge pass over chunks and spans free since `now - delay`
    /// or earlier (at most one [`PurgeBudget`]). Returns the bytes released and
    /// whether the pass is done (then stamped, for `maybe_purge`'s rate limit).
    /// Every call a slice makes leaves its chunk unmapped or its span purged or
    /// restamped (no longer due), so the slices of a pass end.
    pub(super) fn purge_due_slice(&self, h: &mut Inner, now: u64) -> (usize, bool) {
        let delay = self.purge_delay_ms();
        let due = |s: &Span| now >= s.free_since_ms().saturating_add(delay);
        let mut budget = PurgeBudget::SLICE;
        let released = self.unmap_free_chunks(h, CHUNK_RESERVE, &mut budget, due)
            + self.purge_where(h, PURGE_FAILURES_PER_PASS, &mut budget, due);
        // A slice that spent its whole budget may have left due work.
        let done = !budget.spent();
        // An unreadable clock (`now_ms`) must not stop later passes for good.
        if done && now != u64::MAX {
            h.last_purge_ms = now;
        }
        (released, done)
    }

    /// Unmaps wholly free chunks for which `due` holds, while more than `keep` are
    /// free and `budget` allows. Returns the bytes unmapped.
    /// The first unmap the OS refuses ends the pass (the next one tries again): its
    /// chunk stays filed as it was, and the purge that follows in every pass at
    /// least returns its pages.
    pub(super) fn unmap_free_chunks(
        &self,
        h: &mut Inner,
        keep: usize,
        budget: &mut PurgeBudget,
        due: impl Fn(&Span) -> bool,
    ) -> usize {
        let mut unmapped = 0;
        // Wholly free chunks are the spans of the top bin.
        let mut span = h.bins[USABLE_PAGES];
        while !span.is_null() && h.free_chunks > keep && !budget.spent() {
            // SAFETY: a bin holds Free spans in mapped chunks, ours under the lock; a
            // span of USABLE_PAGES is a whole chunk with nothing in use.
            unsafe {
                let next = (*span).next();
                if due(&*span) {
                    bin_remove(h, span);
                    budget.spend(CHUNK_SIZE);
                    match self.unmap_chunk(h, (*span).chunk()) {
                        Ok(bytes) => {
                            h.free_chunks -= 1;
                            unmapped += bytes;
                        }
                        Err(_) => {
                            bin_insert(h, span);
                            break;
                        }
                    }
                }
                span = next;
            }
        }
        unmapped
    }

    /// Purges every dirty free span for which `due` holds, while `budget` allows;
    /// returns the bytes purged (whole spans, and the whole OS
    /// pages inside spans that are not all whole pages).
    ///
    /// Only a purge the OS confirms marks a span zeroed and counts: a failed one
    /// leaves its span dirty (so `alloc_zeroed` clears it) and restamps it as freed
    /// now, so that the purge passes retry it after another delay rather than at
    /// each pass. After `max_failures` failures the pass stops: a failure such as
    /// `EINVAL` under `mlockall` repeats for every span, and the delayed passes
    /// (given [`PURGE_FAILURES_PER_PASS`]) run at frees, under the lock;
    /// `release_memory` tries every span once.
    pub(super) fn purge_where(
        &self,
        h: &mut Inner,
        max_failures: usize,
        budget: &mut PurgeBudget,
        mut due: impl FnMut(&Span) -> bool,
    ) -> usize {
        let mut purged = 0;
        let mut partial = 0;
        let mut failures = 0;
        let os = &self.os;
        // The OS purges whole OS pages only; they may be larger than ours (16 or
        // 64 KiB kernels): a span purges the OS pages wholly inside it, and is
        // "zeroed" only if that is all of it.
        let os_page = os.page_size();
        for_each_free_span(h, |s| {
            if !budget.spent() && failures < max_failures && s.flags() & SPAN_ZEROED == 0 && due(s)
            {
                let start = s.base() as usize;
                let end = start + s.bytes();
                let lo = start.next_multiple_of(os_page);
                let hi = end & !(os_page - 1);
                if lo >= hi {
                    // No whole OS page inside: nothing to give back until the span
                    // coalesces with a neighbour. Restamped, so that passes skip it
                    // for another delay.
                    // SAFETY: a binned Free span, ours under the page-heap lock
                    // (invariant 3).
                    unsafe { s.set_free_since_ms(self.now_ms()) };
                    return;
                }
                // SAFETY: a Free span's pages hold nothing anyone needs, and
                // `[lo, hi)` lies inside it; the lock keeps it from being handed out
                // while we purge (no purge/reuse race).
                let r = unsafe { os.purge(lo as *mut u8, hi - lo) };
                budget.spend(hi - lo);
                // Mutant: the result dropped, as before OS calls reported failure.
                #[cfg(strata_mutant = "purge_ignores_refusal")]
                let r: Result<(), crate::os::OsError> = r.or(Ok(()));
                match r {
                    Ok(()) if lo == start && hi == end => {
                        // SAFETY: a binned Free span, ours under the page-heap lock
                        // (invariant 3).
                        unsafe { s.set_flags(s.flags() | SPAN_ZEROED) };
                        purged += s.bytes();
                    }
                    Ok(()) => {
                        // Its edges are still dirty: not zeroed, and counted as
                        // resident (an over-estimate); retried after another delay,
                        // or whole once it coalesces.
                        // SAFETY: a binned Free span, ours under the page-heap lock
                        // (invariant 3).
                        unsafe { s.set_free_since_ms(self.now_ms()) };
                        partial += hi - lo;
                    }
                    Err(_) => {
                        // SAFETY: a binned Free span, ours under the page-heap lock
                        // (invariant 3).
                        unsafe { s.set_free_since_ms(self.now_ms()) };
                        failures += 1;
                    }
                }
            }
        });
        h.purged_total += (purged + partial) as u64;
        h.purge_failures += failures as u64;
        // The purged spans stay binned, now zeroed (invariant 4).
        h.zeroed_pages += purged / PAGE_SIZE;
        if purged > 0 {
            self.note_resident(h);
        }
        purged + partial
    }
}

/// What one slice of a delayed purge pass may do under one hold of the page-heap
/// lock: [`PurgeBudget::SLICE`] is 8 system calls or 4 MiB given back, whichever
/// comes first. The kernel's time for an `munmap` or `madvise(MADV_DONTNEED)`
/// grows with the resident pages it drops (~0.3-0.5 ms for a resident 4 MiB
/// chunk here) plus a fixed cost a call, so a slice holds the lock for well under
/// a millisecond. A pass after a 512 MiB free held it for ~50 ms in one piece;
/// in slices of 16 calls or 16 MiB the longest wait of another thread was 2.5-5.9
/// ms, with these 1.6-3.4 ms (`benches/large_ring/purge_stall.c`, BENCHMARKS.md).
#[derive(Clone, Copy, Debug)]
pub struct PurgeBudget {
    calls: usize,
    bytes: usize,
}

impl PurgeBudget {
    /// One slice of a delayed pass.
    pub const SLICE: PurgeBudget = PurgeBudget {
        calls: 8,
        bytes: 4 << 20,
    };
    /// No limit (`release_all`: everything, in one hold of the lock).
    pub const UNLIMITED: PurgeBudget = PurgeBudget {
        calls: usize::MAX,
        bytes: usize::MAX,
    };

    /// Counts one call that gave back `bytes`.
    fn spend(&mut self, bytes: usize) {
        self.calls = self.calls.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Whether nothing is left.
    fn spent(&self) -> bool {
        self.calls == 0 || self.bytes == 0
    }
}
