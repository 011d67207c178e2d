//! The heap's owner-only cells: [`OwnerCell`], a plain field only the heap's owner
//! touches, and [`ListHead`], a list's head over one (the list's end as
//! `link::end()` in memory, null to the slow paths).

use crate::link::{FreeObj, end, end_to_null, null_to_end};
use crate::sync::UnsafeCell;
use core::ptr;

/// A plain field of a heap that only the heap's owner reads and writes (the owning
/// thread, or whoever holds the heap while no thread owns it: the pool under its
/// lock, a thread setting up a fresh heap). `get`/`set` compile to a plain load and
/// store. Through `crate::sync::UnsafeCell`, so that under loom every access is
/// tracked and loom reports two threads using one heap with no handoff between
/// them. Other threads read only a heap's atomics (`ThreadHeap::counters`), never
/// these.
#[repr(transparent)]
pub(super) struct OwnerCell<T>(UnsafeCell<T>);

impl<T: Copy> OwnerCell<T> {
    #[cfg(not(strata_loom))]
    pub(super) const fn new(v: T) -> OwnerCell<T> {
        OwnerCell(UnsafeCell::new(v))
    }
    #[cfg(strata_loom)]
    pub(super) fn new(v: T) -> OwnerCell<T> {
        OwnerCell(UnsafeCell::new(v))
    }
    /// The value (owner only, or any thread on a sentinel, which nobody writes).
    #[inline(always)]
    pub(super) fn get(&self) -> T {
        // SAFETY: only the owner writes the cell (ThreadHeap's Sync argument), and it
        // is the caller here, or the cell is a sentinel's, never written (invariant
        // 7): no write can race with this read.
        self.0.with(|p| unsafe { *p })
    }
    /// The value, by a volatile load: the compiler keeps it where it is written
    /// (see `try_push`).
    #[inline(always)]
    pub(super) fn get_volatile(&self) -> T {
        // SAFETY: as for `get`; the pointer is to the cell's live value.
        self.0.with(|p| unsafe { ptr::read_volatile(p) })
    }
    /// Sets the value (owner only, never on a sentinel).
    #[inline(always)]
    pub(super) fn set(&self, v: T) {
        // SAFETY: only the owner reads or writes the cell, and it is the caller here;
        // no reference to the value is held across this store (`get` copies).
        self.0.with_mut(|p| unsafe { *p = v })
    }
    /// Sets the value and returns the one before (owner only, never on a sentinel).
    #[inline(always)]
    pub(super) fn replace(&self, v: T) -> T {
        let old = self.get();
        self.set(v);
        old
    }
}

/// A list's head: its first object, or the end of every list in memory
/// (`link::end()`: hardened, a static object whose link never decodes, so that
/// `pop` finds an empty list through the link check it runs anyway; null
/// otherwise). `get` and `set` speak null for an empty list, as the slow paths and
/// readers do; `raw` and `set_raw` the stored value, for the fast paths.
#[repr(transparent)]
pub(super) struct ListHead(OwnerCell<*mut FreeObj>);

impl ListHead {
    #[cfg(not(strata_loom))]
    pub(super) const fn new() -> ListHead {
        ListHead(OwnerCell::new(end()))
    }
    #[cfg(strata_loom)]
    pub(super) fn new() -> ListHead {
        ListHead(OwnerCell::new(end()))
    }
    /// The first object, null for an empty list (owner only, or any thread on a
    /// sentinel).
    #[inline(always)]
    pub(super) fn get(&self) -> *mut FreeObj {
        end_to_null(self.0.get())
    }
    /// Makes `p` (null: none) the first object (owner only, never on a sentinel).
    #[inline(always)]
    pub(super) fn set(&self, p: *mut FreeObj) {
        self.0.set(null_to_end(p))
    }
    /// The stored head: the first object or `end()`, never null when hardened.
    #[inline(always)]
    pub(super) fn raw(&self) -> *mut FreeObj {
        self.0.get()
    }
    /// The stored head by a volatile load (a drainer's read: see `drain`).
    #[inline(always)]
    pub(super) fn raw_volatile(&self) -> *mut FreeObj {
        self.0.get_volatile()
    }
    /// Stores `p`, the first object or `end()` (as `raw` gives it).
    #[inline(always)]
    pub(super) fn set_raw(&self, p: *mut FreeObj) {
        self.0.set(p)
    }
}
