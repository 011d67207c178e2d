//! The one place that chooses between core's atomics and loom's.
//!
//! Every atomic, every `UnsafeCell`, every lock and every spin-wait in strata goes
//! through this module, so that `--cfg strata_loom` swaps all of them at once and loom
//! sees every access that can race. Nothing else in the crate names `core::sync`.

#[cfg(not(strata_loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(strata_loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// Whether the atomics and cells are loom's: 8-byte handles into the model's object
/// store, which zeroed memory is not, and which cannot live in statics. For the few
/// places whose layout or set-up follows from that (a const, so that both branches
/// are compiled and type-checked in every build).
pub(crate) const LOOM: bool = cfg!(strata_loom);

mod rank;
pub(crate) use rank::LockRank;
#[allow(unused_imports)] // used by global/fork.rs, which loom builds leave out
pub(crate) use rank::assert_none_held;

/// Declares a constructor that is `const fn` normally and a plain `fn` under loom
/// (loom's atomics have no const `new`, and need a running model).
macro_rules! loom_const_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$attr])* #[cfg(not(strata_loom))] $vis const fn $name($($arg: $ty),*) -> $ret $body
        $(#[$attr])* #[cfg(strata_loom)] $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use loom_const_fn;

/// Declares a statistics cell: written by one thread only (its owner, or whoever holds
/// the lock that owns it), read by any thread. Relaxed loads and stores and no
/// read-modify-write, so an update compiles to a plain `add` to memory on x86 (LLVM
/// folds the relaxed load/op/store) while a reader on another thread is not a data
/// race. A reader sees some recent value; nothing is published with it.
macro_rules! owned_cell {
    ($(#[$attr:meta])* $name:ident, $atomic:ident, $t:ty) => {
        $(#[$attr])*
        #[derive(Debug)]
        #[repr(transparent)]
        pub(crate) struct $name($atomic);

        impl $name {
            loom_const_fn! {
                pub(crate) fn new(v: $t) -> $name {
                    $name($atomic::new(v))
                }
            }
            /// The current value (any thread).
            #[inline(always)]
            pub(crate) fn get(&self) -> $t {
                self.0.load(Ordering::Relaxed)
            }
            /// Sets the value (owner only).
            #[inline(always)]
            pub(crate) fn set(&self, v: $t) {
                self.0.store(v, Ordering::Relaxed)
            }
            /// Adds `v`, wrapping (owner only: a load and a store, not an RMW).
            #[inline(always)]
            pub(crate) fn add(&self, v: $t) {
                self.set(self.get().wrapping_add(v))
            }
            /// Subtracts `v`, wrapping (owner only).
            #[allow(dead_code)]
            #[inline(always)]
            pub(crate) fn sub(&self, v: $t) {
                self.set(self.get().wrapping_sub(v))
            }
        }
    };
}

owned_cell!(
    /// A `u32` with one writer and any readers (see `owned_cell!`).
    OwnedU32,
    AtomicU32,
    u32
);
owned_cell!(
    /// A `u64` with one writer and any readers (see `owned_cell!`).
    OwnedU64,
    AtomicU64,
    u64
);

/// An `UnsafeCell` with loom's closure API, so that loom can track every access.
#[cfg(not(strata_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(strata_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(v: T) -> Self {
        Self(core::cell::UnsafeCell::new(v))
    }
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
#[cfg(strata_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Gives the CPU to another thread (or, under loom, lets the model switch): for
/// waits that may last a time slice, such as a statistics snapshot waiting for
/// another thread to finish moving a batch.
#[inline]
pub(crate) fn yield_thread() {
    #[cfg(not(strata_loom))]
    crate::platform::yield_now();
    #[cfg(strata_loom)]
    loom::thread::yield_now();
}

/// Tells the scheduler (or loom) that this thread is waiting on another.
#[inline]
pub(crate) fn spin_wait() {
    #[cfg(not(strata_loom))]
    core::hint::spin_loop();
    #[cfg(strata_loom)]
    loom::thread::yield_now();
}

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// Spins before sleeping. Under loom every spin is a yield and a branch of the model;
/// one keeps the spin phase in the model without multiplying its executions.
#[cfg(not(strata_loom))]
const SPINS: u32 = 64;
#[cfg(strata_loom)]
const SPINS: u32 = 1;

/// The ordering that takes the lock: Acquire (a mutant weakens it).
#[cfg(not(strata_mutant = "lock_acquire_relaxed"))]
const TAKE: Ordering = Ordering::Acquire;
#[cfg(strata_mutant = "lock_acquire_relaxed")]
const TAKE: Ordering = Ordering::Relaxed;
/// The ordering that releases the lock: Release (a mutant weakens it).
#[cfg(not(strata_mutant = "lock_release_relaxed"))]
const GIVE: Ordering = Ordering::Release;
#[cfg(strata_mutant = "lock_release_relaxed")]
const GIVE: Ordering = Ordering::Relaxed;

/// A small mutex that never allocates: spin briefly, then sleep on a futex.
///
/// Invariants:
/// 1. `state` is 0 (free), 1 (held, nobody sleeping) or 2 (held, maybe sleepers).
/// 2. A thread that sleeps has first set `state` to 2, so `unlock` wakes it.
///
/// It is a raw lock (no data inside) so that the allocator's fork handlers can hold
/// it across `fork()` and the child can release it; `guard()` gives RAII use.
///
/// Every lock has a [`LockRank`] (the order is tabled in `sync/rank.rs`); debug
/// builds check it at every `lock` and keep the rank in the lock, release builds
/// neither.
#[derive(Debug)]
pub(crate) struct RawLock {
    state: AtomicU32,
    #[cfg(debug_assertions)]
    rank: LockRank,
    /// Loom: what the kernel's futex does for a waiter (see `futex_wait`).
    #[cfg(strata_loom)]
    futex: LoomFutex,
}

impl RawLock {
    loom_const_fn! {
        pub(crate) fn new(rank: LockRank) -> RawLock {
            #[cfg(not(debug_assertions))]
            let _ = rank;
            RawLock {
                state: AtomicU32::new(UNLOCKED),
                #[cfg(debug_assertions)]
                rank,
                #[cfg(strata_loom)]
                futex: LoomFutex::new(),
            }
        }
    }

    /// Takes the lock. Debug builds first check the rank order (aborting with a
    /// report on a violation, before waiting).
    #[inline]
    pub(crate) fn lock(&self) {
        #[cfg(debug_assertions)]
        rank::acquire(self.rank, self as *const RawLock as usize);
        // Acquire: pairs with the Release in unlock(); the previous holder's writes to
        // the protected data happen before ours.
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, TAKE, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    /// Whether a thread may be asleep waiting for the lock (invariant 1: state 2),
    /// as its holder sees it: a hint, for a holder that is about to take the lock
    /// again and should let the waiter in first.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        // Relaxed: a hint; the lock's own operations order everything it protects.
        self.state.load(Ordering::Relaxed) == CONTENDED
    }

    /// Takes the lock if it is free; false (and nothing taken) if it is held. Debug
    /// builds check the rank order as `lock` does, and only once it is taken.
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        // Acquire: as in lock().
        let taken = self
            .state
            .compare_exchange(UNLOCKED, LOCKED, TAKE, Ordering::Relaxed)
            .is_ok();
        #[cfg(debug_assertions)]
        if taken {
            rank::acquire(self.rank, self as *const RawLock as usize);
        }
        taken
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..SPINS {
            spin_wait();
            // Relaxed load: only a hint; the Acquire CAS takes the lock.
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, TAKE, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        // Acquire: as in lock(). Swapping in CONTENDED keeps invariant 2.
        while self.state.swap(CONTENDED, TAKE) != UNLOCKED {
            self.futex_wait(CONTENDED);
        }
    }

    #[inline]
    pub(crate) fn unlock(&self) {
        #[cfg(debug_assertions)]
        rank::release(self.rank);
        // Release: pairs with the Acquire in lock()/lock_contended(); our writes to
        // the protected data happen before the next holder's reads.
        if self.state.swap(UNLOCKED, GIVE) == CONTENDED {
            self.futex_wake();
        }
    }

    /// Locks and returns a guard that unlocks on drop.
    #[inline]
    pub(crate) fn guard(&self) -> LockGuard<'_> {
        self.lock();
        LockGuard(self)
    }
}

/// Holds a [`RawLock`] until dropped.
pub(crate) struct LockGuard<'a>(&'a RawLock);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

#[cfg(not(strata_loom))]
impl RawLock {
    #[inline]
    fn futex_wait(&self, expected: u32) {
        futex_wait(&self.state, expected);
    }
    #[inline]
    fn futex_wake(&self) {
        futex_wake(&self.state);
    }
}

// The OS's futex (a spurious return is fine: the lock's callers loop).
#[cfg(not(strata_loom))]
use crate::platform::{futex_wait, futex_wake_one as futex_wake};

/// Loom: a futex for one lock word, as a loom mutex and condition variable, so that
/// a waiting thread blocks (loom cannot finish a model in which two threads spin on
/// `yield_now` for one lock: they can yield to each other forever).
///
/// Like `FUTEX_WAIT`, `wait` sleeps only if the word still holds the expected value,
/// checked under the same mutex `wake` takes, so a wake between the waiter's check
/// and its sleep is not lost. The mutex adds a happens-before edge from waker to
/// woken waiter that the real futex does not promise; the lock does not rely on it
/// (the woken waiter's Acquire swap reads the Release of `unlock`), and handoffs
/// without a sleeper, where it is absent, are modelled too.
#[cfg(strata_loom)]
#[derive(Debug)]
struct LoomFutex {
    mutex: loom::sync::Mutex<()>,
    cond: loom::sync::Condvar,
}

#[cfg(strata_loom)]
impl LoomFutex {
    fn new() -> LoomFutex {
        LoomFutex {
            mutex: loom::sync::Mutex::new(()),
            cond: loom::sync::Condvar::new(),
        }
    }
}

#[cfg(strata_loom)]
impl RawLock {
    fn futex_wait(&self, expected: u32) {
        let guard = self.futex.mutex.lock().unwrap();
        // Relaxed: as the kernel's read of the word; the caller re-checks anyway.
        if self.state.load(Ordering::Relaxed) == expected {
            drop(self.futex.cond.wait(guard).unwrap());
        }
    }
    fn futex_wake(&self) {
        let _guard = self.futex.mutex.lock().unwrap();
        self.futex.cond.notify_one();
    }
}

/// An array of null atomic pointers (const outside loom).
#[cfg(not(strata_loom))]
pub(crate) const fn null_ptr_array<T, const N: usize>() -> [AtomicPtr<T>; N] {
    [const { AtomicPtr::new(core::ptr::null_mut()) }; N]
}
/// An array of null atomic pointers.
#[cfg(strata_loom)]
pub(crate) fn null_ptr_array<T, const N: usize>() -> [AtomicPtr<T>; N] {
    core::array::from_fn(|_| AtomicPtr::new(core::ptr::null_mut()))
}

/// A stand-in for plain (not loom-tracked) data that other threads read after a
/// handoff, such as a chunk header's fields: under loom a cell, written when the data
/// is set up (`new_marked`) and read by every `check`, so that loom reports a reader
/// not ordered after the set-up; outside loom zero bytes and no code.
#[cfg(not(strata_loom))]
#[derive(Debug)]
pub(crate) struct Witness;

#[cfg(not(strata_loom))]
impl Witness {
    /// A witness of data just set up.
    #[inline(always)]
    pub(crate) const fn new_marked() -> Witness {
        Witness
    }
    /// Nothing outside loom.
    #[inline(always)]
    pub(crate) fn check(&self) {}
}

/// Loom: the witness cell (see the other `Witness`).
#[cfg(strata_loom)]
#[derive(Debug)]
pub(crate) struct Witness(loom::cell::UnsafeCell<u64>);

/// What a marked witness holds.
#[cfg(strata_loom)]
const WITNESS_MARK: u64 = 0x5749_544E_4553_5321;

#[cfg(strata_loom)]
impl Witness {
    /// A witness of data just set up.
    pub(crate) fn new_marked() -> Witness {
        Witness(loom::cell::UnsafeCell::new(WITNESS_MARK))
    }
    /// Reads the cell: loom fails the model if the caller is not ordered after
    /// `new_marked`.
    pub(crate) fn check(&self) {
        // SAFETY: the cell is written only by `new_marked`, before the data is
        // published; loom checks that claim on this very read.
        let v = self.0.with(|w| unsafe { *w });
        debug_check!(v == WITNESS_MARK, "data read before it was set up");
    }
}
