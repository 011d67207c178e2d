//! The one place that chooses between core's atomics and loom's.
//!
//! Every atomic, every `UnsafeCell`, every lock and every spin-wait in strata goes
//! through this module, so that `--cfg strata_loom` swaps all of them at once and loom
//! sees every access that can race. Nothing else in the crate names `core::sync`.

#[cfg(not(strata_loom))]
pub(crate) use core::sync::atomic::{
    AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(strata_loom)]
pub(crate) use loom::sync::atomic::{
    AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// Declares a constructor that is `const fn` normally and a plain `fn` under loom
/// (loom's atomics have no const `new`, and need a running model).
macro_rules! loom_const_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$attr])* #[cfg(not(strata_loom))] $vis const fn $name($($arg: $ty),*) -> $ret $body
        $(#[$attr])* #[cfg(strata_loom)] $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use loom_const_fn;

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

/// A small mutex that never allocates: spin briefly, then sleep on a futex.
///
/// Invariants:
/// 1. `state` is 0 (free), 1 (held, nobody sleeping) or 2 (held, maybe sleepers).
/// 2. A thread that sleeps has first set `state` to 2, so `unlock` wakes it.
///
/// It is a raw lock (no data inside) so that the allocator's fork handlers can hold
/// it across `fork()` and the child can release it; `guard()` gives RAII use.
#[derive(Debug)]
pub(crate) struct RawLock {
    state: AtomicU32,
}

impl RawLock {
    loom_const_fn! {
        pub(crate) fn new() -> RawLock {
            RawLock { state: AtomicU32::new(UNLOCKED) }
        }
    }

    #[inline]
    pub(crate) fn lock(&self) {
        // Acquire: pairs with the Release in unlock(); the previous holder's writes to
        // the protected data happen before ours.
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..64 {
            spin_wait();
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        // Acquire: as in lock(). Swapping in CONTENDED keeps invariant 2.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(&self.state, CONTENDED);
        }
    }

    #[inline]
    pub(crate) fn unlock(&self) {
        // Release: pairs with the Acquire in lock()/lock_contended().
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake(&self.state);
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
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind a live reference; a spurious
    // return is fine because the caller loops.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

#[cfg(not(strata_loom))]
fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

#[cfg(strata_loom)]
fn futex_wait(_word: &AtomicU32, _expected: u32) {
    loom::thread::yield_now();
}

#[cfg(strata_loom)]
fn futex_wake(_word: &AtomicU32) {}

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
