//! The page heap's return of memory to the OS: purge (`MADV_DONTNEED`) of spans
//! free for longer than the delay, and unmapping of wholly free chunks beyond the
//! reserve. Runs under the page-heap lock, from the page heap's frees
//! (`maybe_purge`), `release_all` and the backend's `purge_due`.

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

    /// Purges spans free for longer than the delay; at most every half delay.
    pub(super) fn maybe_purge(&self, h: &mut Inner, now: u64) {
        if now < h.last_purge_ms.saturating_add(self.purge_delay_ms() / 2) {
            return;
        }
        self.purge_due_locked(h, now);
    }

    /// Unmaps wholly free chunks beyond the reserve and purges dirty spans, of those
    /// free for longer than the delay (`maybe_purge` without its rate limit: the
    /// background purge thread's pass). Returns the bytes unmapped or purged.
    pub fn purge_due(&self) -> usize {
        let now = self.now_ms();
        self.with_inner(|h| {
            let released = self.purge_due_locked(h, now);
            self.note_resident(h);
            released
        })
    }

    /// The purge pass: chunks and spans free since `now - delay` or earlier.
    pub(super) fn purge_due_locked(&self, h: &mut Inner, now: u64) -> usize {
        let delay = self.purge_delay_ms();
        // An unreadable clock (`now_ms`) must not stop later passes for good.
        if now != u64::MAX {
            h.last_purge_ms = now;
        }
        let due = |s: &Span| now >= s.free_since_ms().saturating_add(delay);
        self.unmap_free_chunks(h, CHUNK_RESERVE, due)
            + self.purge_where(h, PURGE_FAILURES_PER_PASS, due)
    }

    /// Unmaps wholly free chunks for which `due` holds, while more than `keep` are
    /// free. Returns the bytes unmapped. The first unmap the OS refuses ends the pass
    /// (the next one tries again): its chunk stays filed as it was, and the purge
    /// that follows in every pass at least returns its pages.
    pub(super) fn unmap_free_chunks(
        &self,
        h: &mut Inner,
        keep: usize,
        due: impl Fn(&Span) -> bool,
    ) -> usize {
        let mut unmapped = 0;
        // Wholly free chunks are the spans of the top bin.
        let mut span = h.bins[USABLE_PAGES];
        while !span.is_null() && h.free_chunks > keep {
            // SAFETY: a bin holds Free spans in mapped chunks, ours under the lock; a
            // span of USABLE_PAGES is a whole chunk with nothing in use.
            unsafe {
                let next = (*span).next();
                if due(&*span) {
                    bin_remove(h, span);
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

    /// Purges every dirty free span for which `due` holds; returns the bytes purged
    /// (whole spans, and the whole OS pages inside spans that are not all whole pages).
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
            if failures < max_failures && s.flags() & SPAN_ZEROED == 0 && due(s) {
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
