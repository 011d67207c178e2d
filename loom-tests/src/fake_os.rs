//! A fake OS for loom models: heap-backed mappings, zero-filling purge, a clock the
//! model controls, and counters that let a model check that every page it was given
//! went back.
//!
//! Address reuse is deterministic and eager: like Linux, which tends to hand out the
//! range it just unmapped, `map` first carves the most recently unmapped range that
//! is big enough and suitably aligned (zero-filled again). So a model meets "an
//! address unmapped by one thread is mapped again by another, maybe with another
//! length" in every interleaving that allows it, not only when the system allocator
//! happens to reuse the address. Unmapped memory is scribbled over (0xDD) until it
//! is reused, as a stale reader would find garbage or a new owner's data.
//!
//! A model can make it refuse purges and unmaps (`refuse_purges`, `refuse_unmaps`), as
//! Linux does under `mlockall` (`madvise` fails with EINVAL) or at `vm.max_map_count`
//! (`munmap` fails with ENOMEM): a refused call changes nothing.
//!
//! Its bookkeeping uses `std` locks and atomics on purpose: loom runs a model's
//! threads one at a time on one OS thread, so they are safe here, and being invisible
//! to loom they add no interleavings and no happens-before edges (a real `mmap`
//! gives strata no ordering it may rely on either).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use strata::internals::{CHUNK_SIZE, OS_PAGE, Os, OsError, PAGE_SIZE};

/// The Linux errno values a refused call reports.
const ENOMEM: i32 = 12;
const EINVAL: i32 = 22;

#[derive(Clone, Copy, Debug)]
struct Mapping {
    base: usize,
    size: usize,
    align: usize,
}

#[derive(Default)]
struct State {
    /// What strata holds now.
    live: Vec<Mapping>,
    /// Unmapped ranges `(base, size)`, most recent last, reused before new memory.
    unmapped: Vec<(usize, usize)>,
    /// Every heap allocation behind the mappings, freed when the fake OS drops.
    backing: Vec<(usize, Layout)>,
    mapped_total: usize,
    unmapped_total: usize,
    purged: Vec<(usize, usize)>,
}

/// A page source on the heap. See the module docs.
#[derive(Default)]
pub struct FakeOs {
    state: Mutex<State>,
    now_ms: AtomicU64,
    last_chunk: AtomicUsize,
    /// Purges and unmaps still to refuse (`usize::MAX`: all).
    refuse_purges: AtomicUsize,
    refuse_unmaps: AtomicUsize,
}

impl FakeOs {
    /// A fresh fake OS with the clock at 0.
    pub fn new() -> FakeOs {
        FakeOs::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic inside a model poisons nothing we need afterwards.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the clock `now_ms` returns.
    pub fn set_now_ms(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::Relaxed);
    }

    /// Refuses the next `n` purges (`usize::MAX`: all of them; 0: none).
    pub fn refuse_purges(&self, n: usize) {
        self.refuse_purges.store(n, Ordering::Relaxed);
    }

    /// Refuses the next `n` unmaps (`usize::MAX`: all of them; 0: none).
    pub fn refuse_unmaps(&self, n: usize) {
        self.refuse_unmaps.store(n, Ordering::Relaxed);
    }

    /// Whether to refuse this call, counting it.
    fn refuse(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| match n {
                0 => None,
                usize::MAX => Some(n),
                _ => Some(n - 1),
            })
            .is_ok()
    }

    /// Bytes currently mapped (all kinds).
    pub fn live_bytes(&self) -> usize {
        self.state().live.iter().map(|m| m.size).sum()
    }

    /// Chunks currently mapped: mappings of `CHUNK_SIZE` aligned to it. (Under loom
    /// the metadata arena maps two-page blocks, so it never looks like a chunk; a
    /// one-page huge block does.)
    pub fn live_chunks(&self) -> usize {
        self.state().live.iter().filter(|m| is_chunk(m)).count()
    }

    /// Bytes ever mapped and ever unmapped.
    pub fn totals(&self) -> (usize, usize) {
        let s = self.state();
        (s.mapped_total, s.unmapped_total)
    }

    /// Every range purged so far, in order (refused purges are not in it).
    pub fn purged(&self) -> Vec<(usize, usize)> {
        self.state().purged.clone()
    }

    /// The base of the chunk mapped last (0 if none). A side channel that gives a
    /// model an address *without* any synchronisation with the thread that mapped it.
    pub fn last_chunk(&self) -> usize {
        self.last_chunk.load(Ordering::Relaxed)
    }

    /// The index of the live mapping that starts at `p` and is `size` bytes long;
    /// panics (naming `what`) if there is none, or if it has another length.
    fn whole(s: &State, p: *mut u8, size: usize, what: &str) -> usize {
        let i = s
            .live
            .iter()
            .position(|m| m.base == p as usize)
            .unwrap_or_else(|| panic!("{what} of {p:p}: not the start of a mapping"));
        assert_eq!(
            s.live[i].size, size,
            "{what} of {p:p} with the wrong length (mapped {} bytes)",
            s.live[i].size
        );
        i
    }

    /// Unmaps the whole mapping `[p, p+size)` (never refused: `unmap` and `remap`).
    ///
    /// # Safety
    /// `[p, p+size)` is a whole live mapping that no one uses any more.
    unsafe fn take_back(&self, p: *mut u8, size: usize) {
        let mut s = self.state();
        let i = Self::whole(&s, p, size, "unmap");
        s.live.swap_remove(i);
        s.unmapped_total += size;
        // SAFETY: the range was mapped and is ours again.
        unsafe { core::ptr::write_bytes(p, 0xDD, size) };
        s.unmapped.push((p as usize, size));
    }

    fn find(s: &State, p: usize) -> Option<usize> {
        s.live
            .iter()
            .position(|m| m.base <= p && p < m.base + m.size)
    }
}

fn is_chunk(m: &Mapping) -> bool {
    m.size == CHUNK_SIZE && m.align == CHUNK_SIZE
}

// SAFETY: `map` returns zeroed memory of the asked size and alignment (fresh from
// the heap, or an unmapped range zero-filled again) that no one else uses until
// `unmap` takes it back; `purge` zero-fills in place (the range stays valid and
// reads as zeros); `remap` copies into a new mapping and unmaps the old one only on
// success (an unmap it cannot do then is forced: the copy is what strata keeps); a
// refused `unmap` or `purge` returns Err and changes nothing.
unsafe impl Os for FakeOs {
    fn map(&self, size: usize, align: usize) -> *mut u8 {
        assert!(
            size.is_multiple_of(self.page_size()) && size > 0,
            "map of {size} bytes"
        );
        let align = align.max(OS_PAGE);
        let mut s = self.state();
        let reuse = s
            .unmapped
            .iter()
            .rposition(|&(b, n)| n >= size && b % align == 0);
        let base = match reuse {
            Some(i) => {
                let (b, n) = s.unmapped[i];
                if n > size {
                    s.unmapped[i] = (b + size, n - size);
                } else {
                    s.unmapped.remove(i);
                }
                // SAFETY: an unmapped range of one of our allocations; no one uses it.
                unsafe { core::ptr::write_bytes(b as *mut u8, 0, size) };
                b
            }
            None => {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    return core::ptr::null_mut();
                };
                // SAFETY: the layout has a non-zero size.
                let p = unsafe { alloc_zeroed(layout) };
                if p.is_null() {
                    return p;
                }
                s.backing.push((p as usize, layout));
                p as usize
            }
        };
        let m = Mapping { base, size, align };
        s.live.push(m);
        s.mapped_total += size;
        if is_chunk(&m) {
            self.last_chunk.store(base, Ordering::Relaxed);
        }
        base as *mut u8
    }

    unsafe fn unmap(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
        if Self::refuse(&self.refuse_unmaps) {
            Self::whole(&self.state(), p, size, "unmap");
            return Err(OsError(ENOMEM));
        }
        // SAFETY: forwarded contract.
        unsafe { self.take_back(p, size) };
        Ok(())
    }

    unsafe fn purge(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
        let mut s = self.state();
        let i = Self::find(&s, p as usize).expect("purge outside any mapping");
        let m = s.live[i];
        // Strata's loom pages (256 B) are smaller than an OS page, so purges come at
        // strata-page granularity here (with the real geometry they are OS-page
        // aligned, as madvise needs).
        assert!(
            (p as usize).is_multiple_of(PAGE_SIZE)
                && size.is_multiple_of(PAGE_SIZE)
                && p as usize + size <= m.base + m.size,
            "purge of [{p:p}, +{size}) not page aligned or beyond its mapping"
        );
        if Self::refuse(&self.refuse_purges) {
            return Err(OsError(EINVAL));
        }
        s.purged.push((p as usize, size));
        drop(s);
        // SAFETY: the range lies in a live mapping (checked above).
        unsafe { core::ptr::write_bytes(p, 0, size) };
        Ok(())
    }

    unsafe fn remap(&self, p: *mut u8, old: usize, new: usize) -> *mut u8 {
        let q = self.map(new, OS_PAGE);
        if q.is_null() {
            return q;
        }
        // SAFETY: both are live mappings of at least the copied length; `p` is a
        // whole mapping (the caller's contract), unmapped only after the copy.
        unsafe {
            core::ptr::copy_nonoverlapping(p, q, old.min(new));
            self.take_back(p, old);
        }
        q
    }

    unsafe fn split(&self, p: *mut u8, size: usize, at: usize) {
        assert!(
            at.is_multiple_of(self.page_size()) && 0 < at && at < size,
            "split of {size} bytes at {at}"
        );
        let mut s = self.state();
        let i = Self::whole(&s, p, size, "split");
        s.live[i].size = at;
        s.live.push(Mapping {
            base: p as usize + at,
            size: size - at,
            align: OS_PAGE,
        });
    }

    fn now_ms(&self) -> Result<u64, OsError> {
        Ok(self.now_ms.load(Ordering::Relaxed))
    }

    /// The fake's granule is the (tiny) geometry's page, so that the page heap
    /// purges the models' small spans as it purges real ones on a 4 KiB kernel.
    fn page_size(&self) -> usize {
        PAGE_SIZE
    }
}

impl Drop for FakeOs {
    fn drop(&mut self) {
        // Whatever strata keeps for good (its metadata arena) goes back with the
        // fake OS, so thousands of executions do not pile up memory.
        let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for (p, layout) in s.backing.drain(..) {
            // SAFETY: allocated in `map` with this layout; strata is gone.
            unsafe { dealloc(p as *mut u8, layout) };
        }
    }
}
