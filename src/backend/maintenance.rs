//! Maintenance of the shared tiers: the one helper that takes several locks at once
//! (in the lock order; the fork handlers and every walk use it), release and purge
//! of free memory, draining idle central batches, and validation. Called by
//! `global`, the background purge thread, `stats`, `heap_map` and the front end's
//! `Allocator` (which adds its pool lock first); calls the tiers below.

use super::{Backend, Locks};
use crate::Violation;
use crate::central::validate_small_span;
use crate::chunk::SpanKind;
use crate::os::Os;
use crate::size_class::{NUM_CLASSES, SizeClass};

impl<O: Os> Backend<O> {
    // ---- multi-lock walks ------------------------------------------------------------

    /// Takes the locks in `set` in the lock order (`sync/rank.rs`), except
    /// [`Locks::POOL`], which belongs to the front end (`Allocator::lock_set` takes it
    /// before calling this): central classes (index order), page heap, descriptor growth, huge registry,
    /// metadata arena. The one place that takes several of the backend's locks at
    /// once; [`Backend::unlock_set`] releases them.
    pub fn lock_set(&self, set: Locks) {
        if set.has(Locks::CLASSES) {
            self.central.lock_all();
        }
        if set.has(Locks::PAGE_HEAP) {
            self.page_heap.lock();
        }
        if set.has(Locks::DESC_GROWTH) {
            self.central.lock_desc_growth();
        }
        if set.has(Locks::HUGE) {
            self.huge.lock();
        }
        if set.has(Locks::META) {
            self.meta.lock();
        }
    }

    /// Releases what `lock_set(set)` took, in reverse order (in a fork child too: its
    /// only thread is the one that took them).
    pub fn unlock_set(&self, set: Locks) {
        if set.has(Locks::META) {
            self.meta.unlock();
        }
        if set.has(Locks::HUGE) {
            self.huge.unlock();
        }
        if set.has(Locks::DESC_GROWTH) {
            self.central.unlock_desc_growth();
        }
        if set.has(Locks::PAGE_HEAP) {
            self.page_heap.unlock();
        }
        if set.has(Locks::CLASSES) {
            self.central.unlock_all();
        }
    }

    /// Runs `f` with the locks in `set` held ([`Backend::lock_set`]). `f` may take
    /// locks ranked above every one in `set`, one at a time (the page heap's
    /// `for_each_span` does, so walks over spans leave `PAGE_HEAP` out of `set`).
    pub fn with_locked<R>(&self, set: Locks, f: impl FnOnce() -> R) -> R {
        self.lock_set(set);
        let r = f();
        self.unlock_set(set);
        r
    }

    // ---- release and validation ---------------------------------------------------

    /// Moves central batches back to spans and returns every free page to the OS.
    /// Returns the bytes given back: the fall of [`Backend::resident_bytes`] across
    /// the call (see there), so that the purges and unmaps the drain itself
    /// triggers count too.
    pub fn release_shared(&self) -> usize {
        let before = self.resident_bytes();
        for c in 0..NUM_CLASSES {
            self.central.drain(SizeClass(c as u8), &self.page_heap);
        }
        self.unmap_evicted(&self.huge.drain_cache());
        self.page_heap.release_all();
        before.saturating_sub(self.resident_bytes())
    }

    /// The bytes of chunks and huge mappings that may be resident now, without a
    /// lock (`PageHeap::resident_bytes`). The fall of this figure across a release
    /// is what the release gave back to the OS: every purge and unmap on the way
    /// counts, whoever triggered it (frees of spans that the drain empties purge
    /// and unmap on their own), and a page counts once, even where it is purged
    /// again inside a coalesced span or unmapped with an already purged chunk
    /// (which the `purged`/`unmapped` totals count again). Other threads'
    /// allocations and frees meanwhile move it too.
    pub fn resident_bytes(&self) -> usize {
        self.page_heap.resident_bytes()
    }

    /// Unmaps the cached huge mappings older than the purge delay (what a busy
    /// heap does on its own at huge operations, for the background purge thread to
    /// do while the program is idle; the page heap's half is
    /// `PageHeap::purge_due`). Returns the bytes unmapped.
    pub fn expire_huge_due(&self) -> usize {
        let (now, delay) = (self.page_heap.now_ms(), self.page_heap.purge_delay_ms());
        self.unmap_evicted(&self.huge.expire_cache(now, delay))
    }

    /// Moves the batches of every class whose transfer stack has not changed since
    /// the last call (`seen` holds each stack's version then; `u64::MAX` for never)
    /// back to their spans, so that spans left empty go back to the page heap and
    /// are purged after the delay. Batches nobody took for a whole pause of the
    /// background purge thread are memory an idle program would otherwise keep; a
    /// busy class changes its version at every refill or flush and is left alone.
    /// Returns the bytes drained.
    pub fn drain_idle_central(&self, seen: &mut [u64; NUM_CLASSES]) -> usize {
        let mut drained = 0;
        for (ci, last) in seen.iter_mut().enumerate() {
            let c = SizeClass(ci as u8);
            if self.central.stack_version(c) == *last {
                drained += self.central.drain(c, &self.page_heap) * c.size_bytes();
            }
            *last = self.central.stack_version(c);
        }
        drained
    }

    /// Checks every invariant of the shared tiers: the page heap (chunks, spans,
    /// bins), the huge registry, every Small span of every class, and every class's
    /// lists. Blocks allocation while it runs: it holds every class lock and takes
    /// the page-heap and huge-registry locks in turn. (`Allocator::validate` adds the
    /// front end's pool.)
    pub fn validate(&self) -> Result<(), Violation> {
        // SAFETY: every class lock is held meanwhile.
        self.with_locked(Locks::CLASSES, || unsafe { self.validate_locked() })
    }

    /// `validate` with every class lock held.
    ///
    /// # Safety
    /// The caller holds every class lock (`Locks::CLASSES`).
    pub unsafe fn validate_locked(&self) -> Result<(), Violation> {
        self.page_heap.validate()?;
        self.huge.validate()?;
        let mut small = [0usize; NUM_CLASSES];
        let mut res = Ok(());
        self.page_heap.for_each_span(|s| {
            if s.kind() == SpanKind::Small && res.is_ok() {
                small[s.class().index()] += 1;
                // SAFETY: the caller holds every class lock.
                res = unsafe { validate_small_span(s) };
            }
        });
        res?;
        // SAFETY: every class lock is held.
        unsafe { self.central.validate_locked(&small) }
    }
}
