//! `ThreadHeap::validate`: the heap's numbered invariants, checked by its owner
//! (or under the pool lock for a pooled heap).

use super::slow::{BORROW_CAP_FACTOR, RATE_EVENTS};
use super::{HeapState, ThreadHeap};
use crate::Violation;
use crate::backend::Backend;
use crate::check::check;
use crate::link::{FreeObj, HARDENED, LinkKey, LinkMask};
use crate::os::Os;
use core::ptr;

impl ThreadHeap {
    /// Checks invariants 1, 3, 4, 5, 6, 7, 8, 9 and 10: list lengths match their
    /// chains, objects are ours and their links decode, the budget, what it borrows,
    /// the miss-rate measure and the counters add up,
    /// a live heap has the process's link key, no move is open (the heap is its
    /// caller's or pooled, so none can be), a sentinel is still empty, and a
    /// drained heap was settled before its owner looks at it.
    ///
    /// # Safety
    /// The calling thread owns the heap (or holds it pooled under the pool lock), or
    /// it is a sentinel: the plain fields are read.
    pub unsafe fn validate<O: Os>(&self, be: &Backend<O>) -> Result<(), Violation> {
        let sentinel = matches!(
            self.state(),
            HeapState::Empty | HeapState::Dead | HeapState::Drained
        );
        check(
            !sentinel || (self.is_empty() && self.max_bytes.get() == 0),
            "ThreadHeap",
            7,
            "a sentinel heap was written",
            self as *const ThreadHeap as usize,
        )?;
        check(
            self.state() == HeapState::Live || !self.drainable(),
            "ThreadHeap",
            9,
            "a heap that is not live can still be drained",
            self as *const ThreadHeap as usize,
        )?;
        check(
            !self.was_drained(),
            "ThreadHeap",
            9,
            "a drained heap was not settled before its owner used it",
            self as *const ThreadHeap as usize,
        )?;
        let seq = self.move_seq_again();
        check(
            seq % 2 == 0,
            "ThreadHeap",
            6,
            "a move is still open",
            seq as usize,
        )?;
        check(
            self.state() != HeapState::Live || self.link_key.get() == LinkKey::current(),
            "ThreadHeap",
            5,
            "link key differs from the process's",
            0,
        )?;
        check(
            self.link_mask.get() == LinkMask::BAD,
            "ThreadHeap",
            5,
            "link mask differs from the check's",
            0,
        )?;
        for (ci, l) in self.lists.iter().enumerate() {
            check(
                !HARDENED || !l.head.raw().is_null(),
                "FreeList",
                1,
                "hardened head is null, not the list end",
                ci,
            )?;
            let mut n = 0u32;
            let mut o = l.head.get();
            while !o.is_null() {
                check(
                    be.owns(o.cast()),
                    "FreeList",
                    1,
                    "cached object not in our chunks",
                    o as usize,
                )?;
                check(
                    n < l.len.get(),
                    "FreeList",
                    1,
                    "chain longer than len",
                    o as usize,
                )?;
                n += 1;
                // SAFETY: a cached object in our chunk; its first word is the link.
                let next = unsafe { FreeObj::try_next(o) };
                check(
                    next.is_some(),
                    "FreeList",
                    1,
                    "link does not decode (overwritten)",
                    o as usize,
                )?;
                o = next.unwrap_or(ptr::null_mut());
            }
            check(
                n == l.len.get(),
                "FreeList",
                1,
                "chain shorter than len",
                ci,
            )?;
        }
        check(
            self.lists_max_bytes() == self.max_bytes.get(),
            "ThreadHeap",
            3,
            "max_bytes differs from the lists",
            0,
        )?;
        let borrowed = self.borrowed.get() as usize;
        check(
            borrowed <= self.base_budget.get().saturating_mul(BORROW_CAP_FACTOR)
                && borrowed <= be.cache_pool.lent()
                && (borrowed == 0 || self.state() == HeapState::Live),
            "ThreadHeap",
            8,
            "borrowed beyond the cap, the pool's lent bytes, or while not live",
            borrowed,
        )?;
        check(
            self.since_rate.get() < RATE_EVENTS && self.allocs_mark.get() <= self.allocs_total(),
            "ThreadHeap",
            10,
            "the miss-rate measure is past its window or ahead of the counters",
            self.since_rate.get() as usize,
        )?;
        let k = self.counters();
        check(
            k.allocs + k.returned + k.cached >= k.received,
            "ThreadHeap",
            4,
            "more objects received than handed out, returned and cached",
            k.received as usize,
        )
    }
}
