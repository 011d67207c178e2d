//! Lock ranks: the one order in which strata's locks may be taken, and the debug
//! check of it (jemalloc's witnesses are the model).
//!
//! # The lock order
//!
//! A thread may take a lock only if its rank is higher than the rank of every lock
//! it already holds. Lowest first:
//!
//! | rank | lock | where | nests (holder → taken inside) |
//! |------|------|-------|-------------------------------|
//! | 0 | [`PurgeControl`](LockRank::PurgeControl) | `purge_thread::LOCK` | spawns a thread: allocates (→ everything) |
//! | 1 | [`Quarantine`](LockRank::Quarantine) (8 shards) | `checked::quarantine` | ring memory (→ metadata arena) |
//! | 2 | [`HeapPool`](LockRank::HeapPool) | `ThreadCaches::pool_lock` (`front::thread_cache::pool`) | new heap (→ metadata arena) |
//! | 3 | [`ThreadHeap`](LockRank::ThreadHeap) (one per heap) | `ThreadHeap::drain_lock` | refill, flush (→ central class) |
//! | 4 | [`CentralClass`](LockRank::CentralClass) (one per class) | `CentralClass::lock` | new span, span freed (→ page heap) |
//! | 5 | [`PageHeap`](LockRank::PageHeap) | `PageHeap::lock` | nothing |
//! | 6 | [`DescGrowth`](LockRank::DescGrowth) | `DescPool::grow_lock` | new descriptor block (→ metadata arena) |
//! | 7 | [`HugeRegistry`](LockRank::HugeRegistry) | `HugeRegistry::lock` | record block (→ metadata arena) |
//! | 8 | [`MetaArena`](LockRank::MetaArena) | `MetaArena::lock` | nothing (maps from the OS) |
//!
//! Locks of one rank (the class locks, the quarantine shards) are held together
//! only in increasing address order, which is their index order (each family is
//! one array): only `Backend::lock_set` and the fork handler do that, so the order
//! is written in those two places and checked here.
//!
//! Outside the order, because they are not locks one holds while taking another:
//! the once-states `KEY_STATE` (the thread-exit key) and `FORK_STATE` (the fork
//! handlers) in `global/mod.rs` and `global/fork.rs`. The thread that wins one makes one OS call
//! (`pthread_key_create`, `pthread_atfork`) holding no lock (debug builds check it
//! with [`assert_none_held`]); a fork child resets a once-state that a vanished
//! thread left busy.
//!
//! Walks over many locks (statistics, validation, heap map, checked-mode walks, the
//! fork handlers) take the low ranks they need together through `Allocator::lock_set`
//! and then call code that takes higher ranks one at a time (the page heap in
//! `for_each_span`, the huge registry in `validate`), which the order allows.
//!
//! # The check
//!
//! Debug builds (`debug_assertions`, not under loom, whose threads share one OS
//! thread's TLS) keep, per thread, which ranks it holds and the address of the last
//! lock it took at each; [`RawLock::lock`](super::RawLock::lock) checks the new lock
//! against them *before* it waits, so a wrong order (or a lock taken twice) aborts
//! with both locks named instead of deadlocking later (with std: a debug build of
//! the C library, which is `no_std`, has no check). The record is a
//! const-initialised `Cell` of a type without `Drop` (a bare TLS slot: no
//! registration, no allocation, see ARCHITECTURE.md constraint 2); the report goes
//! through `report::die` (no allocation). Release builds compile all of it away.

/// The rank of a lock: see the module docs for the order and what nests in what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum LockRank {
    /// The background purge thread's start/stop lock.
    #[allow(dead_code)] // loom builds have no purge thread
    PurgeControl = 0,
    /// A checked-mode quarantine shard.
    #[allow(dead_code)] // only checked builds have a quarantine
    Quarantine = 1,
    /// The pool of thread heaps.
    HeapPool = 2,
    /// A thread heap's drain lock: its owner holds it over each slow path, the
    /// background drain of idle heaps while it moves the heap's objects.
    ThreadHeap = 3,
    /// A central size class's span lists.
    CentralClass = 4,
    /// The page heap.
    PageHeap = 5,
    /// Growth of the batch-descriptor pool.
    DescGrowth = 6,
    /// The huge-block registry and its cache.
    HugeRegistry = 7,
    /// The metadata arena.
    MetaArena = 8,
}

/// Number of ranks.
#[cfg(all(debug_assertions, not(strata_loom), any(feature = "std", test)))]
const RANKS: usize = LockRank::MetaArena as usize + 1;
#[cfg(all(debug_assertions, not(strata_loom), any(feature = "std", test)))]
const_assert!(RANKS == 9, "rank_of lists every rank");

#[cfg(all(debug_assertions, not(strata_loom), any(feature = "std", test)))]
mod witness {
    use super::{LockRank, RANKS};
    use core::cell::Cell;

    /// What the calling thread holds: per rank, how many locks and the address of
    /// the last one taken (the highest, since same-rank locks go in address order).
    #[derive(Clone, Copy)]
    struct Held {
        count: [u16; RANKS],
        last: [usize; RANKS],
    }

    thread_local! {
        // A const-initialised Cell of a Copy type: a bare TLS slot, no destructor.
        static HELD: Cell<Held> = const { Cell::new(Held { count: [0; RANKS], last: [0; RANKS] }) };
    }

    const ORDER: &str = "PurgeControl < Quarantine < HeapPool < ThreadHeap < CentralClass < PageHeap < \
                         DescGrowth < HugeRegistry < MetaArena (src/sync/rank.rs)";

    /// Checks that the calling thread may take the lock at `addr` of rank `rank`,
    /// and records it as held. Aborts with both locks named if not.
    pub(crate) fn acquire(rank: LockRank, addr: usize) {
        let Ok(mut h) = HELD.try_with(Cell::get) else {
            return;
        };
        let r = rank as usize;
        if let Some(top) = (r + 1..RANKS).rev().find(|&i| h.count[i] > 0) {
            crate::report::die(format_args!(
                "lock order violated: taking a {:?} lock ({addr:#x}, rank {r}) while holding \
                 a {:?} lock ({:#x}, rank {top}); the order is {ORDER}",
                rank,
                rank_of(top),
                h.last[top],
            ));
        }
        if h.count[r] > 0 && addr <= h.last[r] {
            crate::report::die(format_args!(
                "lock order violated: taking the {:?} lock at {addr:#x} while holding the \
                 {:?} lock at {:#x}; locks of one rank go in increasing address (index) \
                 order, through Backend::lock_set",
                rank, rank, h.last[r],
            ));
        }
        h.count[r] += 1;
        h.last[r] = addr;
        let _ = HELD.try_with(|c| c.set(h));
    }

    /// Records that the calling thread released a lock of rank `rank`. Release
    /// order is free; the record keeps the highest address taken at a rank until
    /// the thread holds none of it (stricter, never laxer, than the order).
    pub(crate) fn release(rank: LockRank) {
        let _ = HELD.try_with(|c| {
            let mut h = c.get();
            let r = rank as usize;
            h.count[r] = h.count[r].saturating_sub(1);
            if h.count[r] == 0 {
                h.last[r] = 0;
            }
            c.set(h);
        });
    }

    /// Aborts if the calling thread holds any lock (`what` names the caller).
    pub(crate) fn assert_none_held(what: &str) {
        let Ok(h) = HELD.try_with(Cell::get) else {
            return;
        };
        if let Some(r) = (0..RANKS).find(|&i| h.count[i] > 0) {
            crate::report::die(format_args!(
                "{what} must run with no lock held, but this thread holds a {:?} lock ({:#x})",
                rank_of(r),
                h.last[r],
            ));
        }
    }

    fn rank_of(i: usize) -> LockRank {
        use LockRank::*;
        [
            PurgeControl,
            Quarantine,
            HeapPool,
            ThreadHeap,
            CentralClass,
            PageHeap,
            DescGrowth,
            HugeRegistry,
            MetaArena,
        ][i]
    }
}

#[cfg(all(debug_assertions, not(strata_loom), any(feature = "std", test)))]
pub(crate) use witness::{acquire, assert_none_held, release};

/// Loom, and debug builds without std (the witness's record is a std
/// `thread_local!`): no check. Release builds do not call it at all.
#[cfg(all(debug_assertions, any(strata_loom, not(any(feature = "std", test)))))]
#[inline(always)]
pub(crate) fn acquire(_rank: LockRank, _addr: usize) {}
/// Loom and debug builds without std: no check.
#[cfg(all(debug_assertions, any(strata_loom, not(any(feature = "std", test)))))]
#[inline(always)]
pub(crate) fn release(_rank: LockRank) {}
/// Release builds, loom and debug builds without std: no check.
#[cfg(not(all(debug_assertions, not(strata_loom), any(feature = "std", test))))]
#[inline(always)]
#[allow(dead_code)]
pub(crate) fn assert_none_held(_what: &str) {}

#[cfg(all(test, debug_assertions, not(strata_loom)))]
mod tests {
    use super::LockRank;
    use crate::sync::RawLock;

    const CHILD_ENV: &str = "STRATA_RANK_CHILD";

    fn run_child(name: &str, action: &str) -> (bool, String) {
        crate::test_child::run(name, CHILD_ENV, action)
    }

    #[test]
    fn locks_taken_in_rank_order_pass_the_check() {
        let pool = RawLock::new(LockRank::HeapPool);
        let classes = [
            RawLock::new(LockRank::CentralClass),
            RawLock::new(LockRank::CentralClass),
        ];
        let page_heap = RawLock::new(LockRank::PageHeap);
        let meta = RawLock::new(LockRank::MetaArena);
        pool.lock();
        classes[0].lock();
        classes[1].lock();
        page_heap.lock();
        meta.lock();
        meta.unlock();
        page_heap.unlock();
        // Released out of order, then taken again: the order is about acquisition.
        classes[0].unlock();
        classes[1].unlock();
        classes[0].lock();
        classes[0].unlock();
        pool.unlock();
        // Nothing held any more: any lock may come first.
        meta.lock();
        meta.unlock();
        pool.lock();
        pool.unlock();
    }

    #[test]
    fn a_lower_rank_taken_under_a_higher_one_aborts_naming_both() {
        const NAME: &str =
            "sync::rank::tests::a_lower_rank_taken_under_a_higher_one_aborts_naming_both";
        if std::env::var(CHILD_ENV).as_deref() == Ok("rank") {
            // The bug of issue 12: validate took the class locks, then the pool lock.
            let pool = RawLock::new(LockRank::HeapPool);
            let class = RawLock::new(LockRank::CentralClass);
            class.lock();
            pool.lock();
            eprintln!("not caught");
            std::process::exit(0);
        }
        let (aborted, stderr) = run_child(NAME, "rank");
        assert!(aborted, "the child did not abort:\n{stderr}");
        assert!(
            stderr.contains("strata: lock order violated: taking a HeapPool lock")
                && stderr.contains("while holding a CentralClass lock"),
            "the report does not name both locks:\n{stderr}"
        );
    }

    #[test]
    fn same_rank_locks_out_of_index_order_abort() {
        const NAME: &str = "sync::rank::tests::same_rank_locks_out_of_index_order_abort";
        if std::env::var(CHILD_ENV).as_deref() == Ok("index") {
            let classes = [
                RawLock::new(LockRank::CentralClass),
                RawLock::new(LockRank::CentralClass),
            ];
            classes[1].lock();
            classes[0].lock();
            eprintln!("not caught");
            std::process::exit(0);
        }
        let (aborted, stderr) = run_child(NAME, "index");
        assert!(aborted, "the child did not abort:\n{stderr}");
        assert!(
            stderr.contains("strata: lock order violated: taking the CentralClass lock at")
                && stderr.contains("increasing address (index) order"),
            "unexpected report:\n{stderr}"
        );
    }

    #[test]
    fn a_lock_taken_twice_aborts_instead_of_deadlocking() {
        const NAME: &str = "sync::rank::tests::a_lock_taken_twice_aborts_instead_of_deadlocking";
        if std::env::var(CHILD_ENV).as_deref() == Ok("twice") {
            let page_heap = RawLock::new(LockRank::PageHeap);
            page_heap.lock();
            page_heap.lock();
            eprintln!("not caught");
            std::process::exit(0);
        }
        let (aborted, stderr) = run_child(NAME, "twice");
        assert!(aborted, "the child did not abort:\n{stderr}");
        assert!(
            stderr.contains("taking the PageHeap lock at"),
            "unexpected report:\n{stderr}"
        );
    }
}
