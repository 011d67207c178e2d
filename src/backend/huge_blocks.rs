//! Huge blocks (above `HUGE_THRESHOLD`, or aligned beyond what a chunk offers): a
//! mapping of their own, recorded in the huge registry, and the policy of the cache
//! of freed huge mappings (when a cached mapping is reused whole, split or grown,
//! what is unmapped, what happens when the OS refuses an unmap). Called by the
//! global allocator through [`Backend`] and by `maintenance` (eviction); calls the
//! huge registry, the metadata arena and the OS.

use super::Backend;
use super::counters::Counters;
use crate::huge::{Evicted, Piece, Vmas};
use crate::os::{OS_PAGE, Os};
use crate::size_class::HUGE_THRESHOLD;
use crate::sync::Ordering;
use core::ptr;

impl<O: Os> Backend<O> {
    /// A mapping of its own: from the cache of freed huge mappings if one is there
    /// (see `huge`, "The cache"), else fresh from the OS. Zeroed if `zero`: a fresh
    /// mapping is; a cached one is cleared where it held data (its pages are
    /// resident, so a memset costs less than the page faults of a fresh one). An
    /// over-page-aligned request always gets a fresh mapping.
    pub fn alloc_huge(&self, size: usize, align: usize, zero: bool) -> *mut u8 {
        // Lengths are whole OS pages (the page size read at start-up), so that every
        // mapping, split and purge of a huge block is page aligned on any kernel.
        let os_page = self.os().page_size();
        let Some(len) = size.max(1).checked_next_multiple_of(os_page) else {
            return ptr::null_mut();
        };
        if len > isize::MAX as usize {
            return ptr::null_mut();
        }
        let (mut p, mut got, mut vmas) = (ptr::null_mut(), len, Vmas::ONE);
        // A cached mapping may have come from `mremap`, which aligns to the OS page
        // only: reuse one for alignments every mapping has (`OS_PAGE`).
        if align <= OS_PAGE {
            let dirty;
            (p, got, dirty, vmas) = self.take_cached_huge(len);
            if zero && !p.is_null() {
                // SAFETY: the block is ours, at least `len >= size` bytes; past
                // `dirty` it is fresh (zero) pages.
                unsafe { p.write_bytes(0, dirty.min(size)) };
            }
        }
        if p.is_null() {
            (got, vmas) = (len, Vmas::ONE);
            p = self.os().map(len, align.max(os_page));
            if p.is_null() {
                return p;
            }
            self.page_heap.note_extra_resident(len as isize);
        }
        if !self.huge.insert(self.os(), &self.meta, p, got, &vmas) {
            // SAFETY: the mapping was never handed out; nothing else names it.
            unsafe { self.unmap_huge(p, got, vmas.count()) };
            return ptr::null_mut();
        }
        Counters::bump(&self.counters.huge_allocs);
        self.counters.flow(got as isize);
        p
    }

    /// Cached mappings made into a block of at least `len` bytes, `(address,
    /// length, dirty, vmas)`: its first `dirty` bytes hold old data, the rest are
    /// fresh zero pages, and it spans the OS mappings `vmas`; null if the cache
    /// had none or the OS refused. A mapping up to a quarter longer than `len` is
    /// used whole; from a longer one the block is split off, and the tail goes back
    /// to the cache, still resident, if it is at least [`HUGE_THRESHOLD`] and fits
    /// without pushing anything out (else it is unmapped). If none is long enough,
    /// the largest are moved into a fresh mapping ([`Backend::build_huge`]); a
    /// single one that is a single OS mapping is grown by `remap` instead (which
    /// keeps its resident pages too).
    ///
    /// Keeping tails: on `malloc-large` (20 blocks of 5-25 MiB replaced at random)
    /// every page a grow adds is a fault, and a model of the cache put them at 825
    /// pages a block when tails were unmapped and 492 when kept, for 10 % more peak
    /// resident memory.
    fn take_cached_huge(&self, len: usize) -> (*mut u8, usize, usize, Vmas) {
        let now = self.page_heap.now_ms();
        // A block whose length in OS pages overflows a `Vmas` boundary (16 TiB) is
        // not built.
        let build = self.os().can_move()
            && self.huge_moves_refused.load(Ordering::Relaxed) == 0
            && Vmas::ONE.can_append(len, 1);
        let (got, ev) = self
            .huge
            .take_cached(len, now, self.page_heap.purge_delay_ms(), build);
        self.unmap_evicted(&ev);
        let pieces = got.as_slice();
        let Some(&Piece {
            ptr: q,
            len: qlen,
            vmas: qv,
        }) = pieces.first()
        else {
            return (ptr::null_mut(), len, 0, Vmas::ONE);
        };
        let q = q as *mut u8;
        #[cfg(not(strata_mutant = "huge_cache_takes_short"))]
        let whole = qlen >= len && qlen - len <= len / 4;
        // Mutant: a cached mapping is used as it is, even when it is too short.
        #[cfg(strata_mutant = "huge_cache_takes_short")]
        let whole = qlen.saturating_sub(len) <= len / 4;
        if whole {
            return (q, qlen, qlen, qv);
        }
        if qlen > len {
            // SAFETY: `q` starts a cached mapping of `qlen` bytes, ours now;
            // `len < qlen`, both multiples of the OS page.
            let head = unsafe { self.keep_or_unmap_tail(q, qlen, len, &qv, now) };
            return (q, len, len, head);
        }
        if pieces.len() == 1 && qv.count() == 1 {
            // SAFETY: `q` starts a whole mapping of `qlen` bytes that the cache gave
            // us, one OS mapping (`remap` takes no other).
            let r = unsafe { self.os().remap(q, qlen, len) };
            if r.is_null() {
                // SAFETY: the remap failed, so `q` is still the whole `qlen`-byte
                // mapping the cache gave us, and nothing else names it.
                unsafe { self.unmap_huge(q, qlen, 1) };
                return (ptr::null_mut(), len, 0, Vmas::ONE);
            }
            self.page_heap
                .note_extra_resident(len as isize - qlen as isize);
            return (r, len, qlen, Vmas::ONE);
        }
        // Several pieces (or one that spans several OS mappings, which `remap`
        // refuses): a fresh mapping, and the pieces moved into it.
        let r = self.os().map(len, self.os().page_size());
        if r.is_null() {
            // SAFETY: cached mappings the cache gave us, named by nothing.
            unsafe {
                for e in pieces {
                    self.unmap_huge(e.ptr as *mut u8, e.len, e.vmas.count());
                }
            }
            return (ptr::null_mut(), len, 0, Vmas::ONE);
        }
        self.page_heap.note_extra_resident(len as isize);
        // SAFETY: `r` is a fresh mapping of `len` bytes, ours; the pieces are
        // cached mappings the cache gave us, disjoint from it.
        unsafe { self.build_huge(r, len, pieces, now) }
    }

    /// Moves the cached mappings `pieces` (largest first) into the fresh mapping
    /// `[r, r+len)`, one after the other from its start; returns the block as
    /// `take_cached_huge` does, null if a move failed (the block and every piece
    /// are given back to the OS then, and no block is built again).
    ///
    /// A page moved by `mremap` keeps its contents and stays resident: no page
    /// fault, no zeroing by the kernel. On `malloc-large` (20 blocks of 5-25 MiB,
    /// each new one allocated before the old is freed), with the cache budget at a
    /// third of the live bytes, 8 cached mappings of which the largest was grown
    /// faulted in 463,000 pages in 1,000 replacements, 32 built from up to four
    /// 403,000 while every split left both parts the whole count of OS mappings,
    /// and 134,000 with each part's own ([`Vmas`]; 5,000 replacements: 386,000,
    /// against 1.97 M, and tcmalloc's 387,000). A part of less than
    /// [`HUGE_THRESHOLD`] is left to fresh pages rather than moved, so that every
    /// mapping a block adds is at least that long; the block spans the OS mappings
    /// of the parts of its pieces that it took, each starting one of its own, and
    /// one more for fresh pages at its end.
    ///
    /// # Safety
    /// `[r, r+len)` is a fresh mapping of ours that nobody else uses; `pieces` are
    /// cached mappings the cache gave us, disjoint from it.
    unsafe fn build_huge(
        &self,
        r: *mut u8,
        len: usize,
        pieces: &[Piece],
        now: u64,
    ) -> (*mut u8, usize, usize, Vmas) {
        let (mut filled, mut vmas) = (0, Vmas::ONE);
        for (i, e) in pieces.iter().enumerate() {
            let (p, plen) = (e.ptr as *mut u8, e.len);
            let room = len - filled;
            if room < HUGE_THRESHOLD {
                // SAFETY: a cached mapping the cache gave us, named by nothing.
                unsafe { self.keep_or_unmap(p, plen, e.vmas, now) };
                continue;
            }
            let m = plen.min(room);
            let pv = if m < plen {
                // SAFETY: `p` starts a cached mapping of `plen > m` bytes, ours.
                unsafe { self.keep_or_unmap_tail(p, plen, m, &e.vmas, now) }
            } else {
                e.vmas
            };
            // SAFETY: `[p, p+m)` is a piece of ours; `[r+filled, r+filled+m)` lies
            // in the block's fresh part, ours, disjoint from every cached mapping.
            let dst = unsafe { r.add(filled) };
            // SAFETY: per the above.
            if unsafe { self.os().move_to(p, m, dst) }.is_err() {
                // Relaxed: a hint; a build racing with this one fails the same way.
                self.huge_moves_refused.store(1, Ordering::Relaxed);
                // The destination may have been unmapped and taken by another
                // thread's mapping meanwhile: leave it alone (and uncounted), give
                // back the rest of the block, the piece and the pieces not used.
                self.page_heap.note_extra_resident(-(m as isize));
                // SAFETY: the block's parts around `dst` and the pieces are ours,
                // named by nothing.
                unsafe {
                    if filled > 0 {
                        self.unmap_huge(r, filled, vmas.count());
                    }
                    if filled + m < len {
                        self.unmap_huge(dst.add(m), len - filled - m, 1);
                    }
                    self.unmap_huge(p, m, pv.count());
                    for o in &pieces[i + 1..] {
                        self.unmap_huge(o.ptr as *mut u8, o.len, o.vmas.count());
                    }
                }
                return (ptr::null_mut(), len, 0, Vmas::ONE);
            }
            // The piece's pages replace fresh ones that the grow counted.
            self.page_heap.note_extra_resident(-(m as isize));
            // The first piece starts the block; a later one starts a mapping of its
            // own (`take_cached` kept the sum of the counts below `MAX_VMAS`, and
            // `take_cached_huge` the length within a boundary's range).
            if filled == 0 {
                vmas = pv;
            } else {
                vmas.append(filled, &pv);
            }
            filled += m;
        }
        // The fresh pages that end the block, if any, are one more OS mapping.
        if filled > 0 && filled < len {
            vmas.append(filled, &Vmas::ONE);
        }
        (r, len, filled, vmas)
    }

    /// Splits the cached mapping `[p, p+plen)` at `at` and keeps the tail in the
    /// cache if it is at least [`HUGE_THRESHOLD`] and fits, else unmaps it; returns
    /// the OS mappings of the head.
    ///
    /// # Safety
    /// `[p, p+plen)` is a cached mapping the cache gave us, spanning the OS mappings
    /// `vmas`; `0 < at < plen`, multiples of the OS page.
    unsafe fn keep_or_unmap_tail(
        &self,
        p: *mut u8,
        plen: usize,
        at: usize,
        vmas: &Vmas,
        now: u64,
    ) -> Vmas {
        let (head, tail) = vmas.split(at);
        // SAFETY: per the contract.
        unsafe { self.os().split(p, plen, at) };
        // SAFETY: the tail is ours alone now.
        unsafe { self.keep_or_unmap(p.add(at), plen - at, tail, now) };
        head
    }

    /// Puts `[p, p+len)` back in the cache if it is at least [`HUGE_THRESHOLD`]
    /// and fits without pushing anything out, else unmaps it.
    ///
    /// # Safety
    /// `[p, p+len)` is a mapping of ours (spanning the OS mappings `vmas`) that
    /// nothing names.
    unsafe fn keep_or_unmap(&self, p: *mut u8, len: usize, vmas: Vmas, now: u64) {
        let budget = self.huge_cache_budget.load(Ordering::Relaxed);
        if len < HUGE_THRESHOLD || !self.huge.keep_tail(p as usize, len, vmas, now, budget) {
            // SAFETY: per the contract.
            unsafe { self.unmap_huge(p, len, vmas.count()) };
        }
    }

    /// Unmaps what the huge cache let go; returns the bytes unmapped.
    pub(super) fn unmap_evicted(&self, ev: &Evicted) -> usize {
        let mut bytes = 0;
        for (p, len, vmas) in ev.iter() {
            // SAFETY: an evicted mapping is whole, ours, and named by nothing.
            if unsafe { self.unmap_huge(p as *mut u8, len, vmas) } {
                bytes += len;
            }
        }
        bytes
    }

    /// Unmaps a huge mapping that nothing names; true if the OS took it back.
    ///
    /// If the OS refuses (`ENOMEM` at `vm.max_map_count`), the mapping is still ours
    /// and still resident: it goes back into the huge cache (dirty, like any cached
    /// mapping, so a zeroed request clears it) if a slot is free, to be reused or to
    /// expire and be unmapped again after the delay. If the cache has no room, its
    /// pages are purged, so that at worst the address range is lost, not the memory
    /// (and if that fails too, both are: there is nothing left to ask the OS).
    ///
    /// # Safety
    /// `[p, p+len)` is a whole mapping of ours (registry, cache or fresh; spanning at
    /// most `vmas` OS mappings) that nothing names and nobody uses.
    unsafe fn unmap_huge(&self, p: *mut u8, len: usize, vmas: u32) -> bool {
        // SAFETY: per the contract.
        if unsafe { self.os().unmap(p, len) }.is_ok() {
            self.page_heap.note_extra_resident(-(len as isize));
            return true;
        }
        if self
            .huge
            .keep_refused(p as usize, len, vmas, self.page_heap.now_ms())
        {
            return false;
        }
        // SAFETY: the mapping is live and its contents are dead (per the contract).
        if unsafe { self.os().purge(p, len) }.is_ok() {
            self.page_heap.note_extra_resident(-(len as isize));
        }
        false
    }

    /// Frees a block from `alloc_huge`: into the cache of freed huge mappings if it
    /// fits there, else back to the OS.
    ///
    /// # Safety
    /// `p` came from `alloc_huge` (or `realloc_huge`) and is not used any more.
    pub unsafe fn free_huge(&self, p: *mut u8) {
        let (len, ev) = self.huge.retire(
            p,
            self.page_heap.now_ms(),
            self.page_heap.purge_delay_ms(),
            self.huge_cache_budget.load(Ordering::Relaxed),
        );
        if let Some(len) = len {
            Counters::bump(&self.counters.huge_frees);
            self.counters.flow(-(len as isize));
        } else {
            debug_check!(false, "free_huge: a block the huge registry does not know");
        }
        self.unmap_evicted(&ev);
    }

    /// Resizes a huge block with `mremap` (no copy), or else (the OS refuses, e.g. a
    /// block built of several mappings) moves it to a new huge block; null, with the
    /// block intact, if there is no memory for that either.
    ///
    /// The result is page aligned; a caller that needs more (a Rust `Layout` aligned
    /// beyond a page) must not use this.
    ///
    /// # Safety
    /// `p` is a live huge block.
    pub unsafe fn realloc_huge(&self, p: *mut u8, new_size: usize) -> *mut u8 {
        let Some(new_len) = new_size.checked_next_multiple_of(self.os().page_size()) else {
            return ptr::null_mut();
        };
        if new_len > isize::MAX as usize {
            return ptr::null_mut();
        }
        let remap = |old_len: usize| {
            if new_len == old_len {
                return p;
            }
            // SAFETY: `p` starts a whole mapping of `old_len` bytes (registry).
            let q = unsafe { self.os().remap(p, old_len, new_len) };
            if !q.is_null() {
                let delta = new_len as isize - old_len as isize;
                self.counters.flow(delta);
                self.page_heap.note_extra_resident(delta);
            }
            q
        };
        // Mutant: the remap runs before the registry lock is taken (the code before
        // the fix), so the OS may hand `p` to another thread's new block, whose
        // record goes in while ours still names `p`.
        let early = if cfg!(strata_mutant = "huge_remap_unlocked") {
            self.huge.lookup(p).map(remap)
        } else {
            None
        };
        // The remap and the record's move happen under the registry lock, so that
        // no other block can be registered at `p` (which the OS may reuse as soon
        // as the remap moved the block) meanwhile: see `HugeRegistry::resize`.
        let q = self
            .huge
            .resize(p, new_len, |old_len| {
                early.unwrap_or_else(|| remap(old_len))
            })
            .unwrap_or(ptr::null_mut());
        if !q.is_null() {
            return q;
        }
        // A block built from several cached mappings may span several OS mappings,
        // which `mremap` cannot resize: a new block and a copy.
        let Some(old_len) = self.huge.lookup(p) else {
            return ptr::null_mut();
        };
        let q = self.alloc_huge(new_size, OS_PAGE, false);
        if !q.is_null() {
            // SAFETY: `p` is a live block of `old_len` bytes, `q` a new one of at
            // least `new_size`; distinct blocks. Then `p` is the caller's to give up.
            unsafe {
                ptr::copy_nonoverlapping(p, q, old_len.min(new_size));
                self.free_huge(p);
            }
        }
        q
    }
}
