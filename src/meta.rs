//! The metadata arena: memory for the allocator's own structures (thread heaps,
//! batch descriptors, huge-block records), taken from the OS and never returned, so
//! that the allocator never allocates through itself and type-stable structures stay
//! mapped forever.

use crate::os::{OS_PAGE, Os};
use crate::size_class::GEOMETRY;
use crate::sync::{AtomicUsize, LockRank, Ordering, RawLock, UnsafeCell};
use core::ptr;

/// Bytes taken from the OS at a time (the geometry's: small under loom, so a model
/// maps little).
const BLOCK: usize = GEOMETRY.meta_block;
const_assert!(BLOCK % OS_PAGE == 0);

/// A bump allocator over OS blocks.
///
/// Invariants: 1. `cur <= end`; `[cur, end)` is unused zeroed memory of one block.
/// 2. Nothing handed out is ever unmapped.
/// 3. `mapped` is the total length of the blocks taken from the OS.
pub struct MetaArena {
    lock: RawLock,
    state: UnsafeCell<Bump>,
    /// Bytes taken from the OS so far (only grows; written under `lock`, read
    /// without it, so that `strata::gauges` takes no lock).
    mapped: AtomicUsize,
}

struct Bump {
    cur: usize,
    end: usize,
}

// SAFETY: `state` is only touched with `lock` held.
unsafe impl Sync for MetaArena {}

impl MetaArena {
    crate::sync::loom_const_fn! {
        /// An arena that has mapped nothing yet.
        pub fn new() -> MetaArena {
            MetaArena {
                lock: RawLock::new(LockRank::MetaArena),
                state: UnsafeCell::new(Bump { cur: 0, end: 0 }),
                mapped: AtomicUsize::new(0),
            }
        }
    }

    /// Zeroed memory for `size` bytes at `align` (≤ a page); null if the OS refuses.
    pub fn alloc(&self, os: &impl Os, size: usize, align: usize) -> *mut u8 {
        let _g = self.lock.guard();
        self.state.with_mut(|s| {
            // SAFETY: we hold the lock, and every access to `state` takes it, so this
            // is the only reference to it while it lives.
            let s = unsafe { &mut *s };
            let mut start = (s.cur + align - 1) & !(align - 1);
            if s.cur == 0 || start + size > s.end {
                let os_page = os.page_size();
                let len = size.max(BLOCK).next_multiple_of(os_page);
                let p = os.map(len, os_page);
                if p.is_null() {
                    return ptr::null_mut();
                }
                // Relaxed: statistics; nothing is published with it.
                self.mapped.fetch_add(len, Ordering::Relaxed);
                s.cur = p as usize;
                s.end = p as usize + len;
                start = s.cur;
            }
            s.cur = start + size;
            start as *mut u8
        })
    }

    /// Bytes taken from the OS so far (no lock: one recent value).
    pub fn mapped_bytes(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Holds the lock (for fork handlers).
    pub fn lock(&self) {
        self.lock.lock();
    }
    /// Releases the lock taken by `lock` (for fork handlers).
    pub fn unlock(&self) {
        self.lock.unlock();
    }
}

impl Default for MetaArena {
    fn default() -> Self {
        Self::new()
    }
}
