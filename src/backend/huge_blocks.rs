//! Huge blocks (above `HUGE_THRESHOLD`, or aligned beyond what a chunk offers): a
//! mapping of their own, recorded in the huge registry, and the policy of the cache
//! of freed huge mappings (when a cached mapping is reused whole, split or grown,
//! what is unmapped, what happens when the OS refuses an unmap). Called by the
//! global allocator through [`Backend`] and by `maintenance` (eviction); calls the
//! huge registry, the metadata arena and the OS.

use super::Backend;
use super::counters::Counters;
use crate::huge::Evicted;
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
        let (mut p, mut got) = (ptr::null_mut(), len);
        // A cached mapping may have come from `mremap`, which aligns to the OS page
        // only: reuse one for alignments every mapping has (`OS_PAGE`).
        if align <= OS_PAGE {
            let dirty;
            (p, got, dirty) = self.take_cached_huge(len);
            if zero && !p.is_null() {
                // SAFETY: the block is ours, at least `len >= size` bytes; past
                // `dirty` it is fresh (zero) pages.
                unsafe { p.write_bytes(0, dirty.min(size)) };
            }
        }
        if p.is_null() {
            p = self.os().map(len, align.max(os_page));
            if p.is_null() {
                return p;
            }
            self.page_heap.note_extra_resident(len as isize);
        }
        if !self.huge.insert(self.os(), &self.meta, p, got) {
            // SAFETY: the mapping was never handed out; nothing else names it.
            unsafe { self.unmap_huge(p, got) };
            return ptr::null_mut();
        }
        Counters::bump(&self.counters.huge_allocs);
        self.counters.flow(got as isize);
        p
    }

    /// A cached mapping made into a block of at least `len` bytes, `(address,
    /// length, dirty)`: its first `dirty` bytes hold old data, the rest are fresh
    /// zero pages; null if the cache had none or the resize failed. A mapping up to
    /// a quarter longer than `len` is used whole; from a longer one the block is
    /// split off, and the tail goes back to the cache, still resident, if it is at
    /// least [`HUGE_THRESHOLD`] and fits without pushing anything out (else it is
    /// unmapped); a shorter one is grown by `remap` (which keeps its resident pages).
    ///
    /// Keeping tails: on `malloc-large` (20 blocks of 5-25 MiB replaced at random)
    /// every page a grow adds is a fault, and a model of the cache put them at 825
    /// pages a block when tails were unmapped and 492 when kept, for 10 % more peak
    /// resident memory.
    fn take_cached_huge(&self, len: usize) -> (*mut u8, usize, usize) {
        let now = self.page_heap.now_ms();
        let (got, ev) = self
            .huge
            .take_cached(len, now, self.page_heap.purge_delay_ms());
        self.unmap_evicted(&ev);
        let Some((q, qlen)) = got else {
            return (ptr::null_mut(), len, 0);
        };
        let q = q as *mut u8;
        #[cfg(not(strata_mutant = "huge_cache_takes_short"))]
        let whole = qlen >= len && qlen - len <= len / 4;
        // Mutant: a cached mapping is used as it is, even when it is too short.
        #[cfg(strata_mutant = "huge_cache_takes_short")]
        let whole = qlen.saturating_sub(len) <= len / 4;
        if whole {
            return (q, qlen, qlen);
        }
        if qlen > len {
            let tail = qlen - len;
            // SAFETY: `q` starts a whole mapping of `qlen` bytes that the cache gave
            // us; `len` and `qlen` are multiples of the OS page, `len < qlen`.
            unsafe { self.os().split(q, qlen, len) };
            let t = q as usize + len;
            let budget = self.huge_cache_budget.load(Ordering::Relaxed);
            if tail < HUGE_THRESHOLD || !self.huge.keep_tail(t, tail, now, budget) {
                // SAFETY: the tail is a whole mapping now, ours alone.
                unsafe { self.unmap_huge(t as *mut u8, tail) };
            }
            return (q, len, len);
        }
        // SAFETY: `q` starts a whole mapping of `qlen` bytes that the cache gave us.
        let r = unsafe { self.os().remap(q, qlen, len) };
        if r.is_null() {
            // SAFETY: the remap failed, so `q` is still the whole `qlen`-byte mapping
            // the cache gave us, and nothing else names it.
            unsafe { self.unmap_huge(q, qlen) };
            return (ptr::null_mut(), len, 0);
        }
        self.page_heap
            .note_extra_resident(len as isize - qlen as isize);
        (r, len, qlen.min(len))
    }

    /// Unmaps what the huge cache let go; returns the bytes unmapped.
    pub(super) fn unmap_evicted(&self, ev: &Evicted) -> usize {
        let mut bytes = 0;
        for (p, len) in ev.iter() {
            // SAFETY: an evicted mapping is whole, ours, and named by nothing.
            if unsafe { self.unmap_huge(p as *mut u8, len) } {
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
    /// `[p, p+len)` is a whole mapping of ours (registry, cache or fresh) that nothing
    /// names and nobody uses.
    unsafe fn unmap_huge(&self, p: *mut u8, len: usize) -> bool {
        // SAFETY: per the contract.
        if unsafe { self.os().unmap(p, len) }.is_ok() {
            self.page_heap.note_extra_resident(-(len as isize));
            return true;
        }
        if self
            .huge
            .keep_refused(p as usize, len, self.page_heap.now_ms())
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

    /// Resizes a huge block with `mremap` (no copy); null, with the block intact, if
    /// the OS refuses.
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
        self.huge
            .resize(p, new_len, |old_len| {
                early.unwrap_or_else(|| remap(old_len))
            })
            .unwrap_or(ptr::null_mut())
    }
}
