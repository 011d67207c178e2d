//! Fork: a child of `fork()` has one thread, the one that forked, so a lock another
//! thread held at that moment would stay held in the child forever. The handlers
//! here hold every lock of the allocator across the fork (taken in the lock order,
//! `sync/rank.rs`) and release them on both sides. They are registered once per
//! process, by whichever comes first: the first thread heap or Large/huge block
//! ([`register_fork_handlers`], every build: a `#[global_allocator]` program forks
//! too), or the C library's load-time constructor (`ffi::configure`).
//!
//! Tiers above this module with locks of their own (the background purge thread's
//! control lock, checked mode's quarantine) add them through [`add_fork_locks`]
//! before they first take them, so that this module names none of them: the
//! dependencies point down.

use super::{BACKEND, reset_thread_key_after_fork};
use crate::backend::Locks;
use crate::platform;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

const FORK_NONE: u8 = 0;
const FORK_BUSY: u8 = 1;
const FORK_DONE: u8 = 2;
const FORK_FAILED: u8 = 3;
/// The once-state of the fork handlers' registration.
static FORK_STATE: AtomicU8 = AtomicU8::new(FORK_NONE);

/// Registers the fork handlers unless that is done or under way (once per process).
/// Does not wait for a registration under way in another thread: nothing here
/// depends on it having finished, and a waiter could spin forever in a child forked
/// meanwhile. Call with no allocator lock held (`pthread_atfork` takes libc's fork
/// lock, which `fork()` holds while our prepare handler takes ours). On failure
/// (`ENOMEM` from libc) it reports once on stderr and goes on: forks then work as
/// without the handlers, a child may inherit a held lock.
///
/// Known limit: glibc holds its atfork lock while it runs any library's fork
/// handlers, so if the process's very first strata allocation were made inside
/// another library's fork handler, `pthread_atfork` here would wait for that lock
/// forever. It takes a fork before any allocation at all (the C library registers
/// from its constructor, and a Rust program allocates before `main`).
#[inline]
pub(crate) fn register_fork_handlers() {
    // Relaxed: a hint; the CAS below decides who registers, and nothing is
    // published with the state (the handlers are plain functions).
    if FORK_STATE.load(Ordering::Relaxed) != FORK_NONE {
        return;
    }
    register_fork_handlers_slow();
}

#[cold]
#[inline(never)]
fn register_fork_handlers_slow() {
    if FORK_STATE
        .compare_exchange(FORK_NONE, FORK_BUSY, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    crate::sync::assert_none_held("registering the fork handlers");
    // May allocate (glibc, past its first 48 registrations), which finds this
    // thread's heap live: callers set it up first.
    let r = platform::register_fork_hooks(fork_prepare, fork_parent, fork_child);
    FORK_STATE.store(
        if r.is_ok() { FORK_DONE } else { FORK_FAILED },
        Ordering::Relaxed,
    );
    if r.is_err() {
        crate::report::write_all(
            platform::STDERR,
            b"strata: pthread_atfork failed; a child of fork() may inherit a held allocator lock\n",
        );
    }
}

/// Locks of a tier above this one that a fork must hold too: `lock` takes all of
/// them (in the lock order), `unlock` releases what `lock` took.
#[derive(Debug)]
pub(crate) struct ForkLocks {
    /// Takes the tier's locks.
    pub(crate) lock: fn(),
    /// Releases them.
    pub(crate) unlock: fn(),
}

/// The tiers above with locks, in the lock order (`sync/rank.rs`): each is taken
/// before the next, and all before the backend's.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Upper {
    /// The background purge thread's control lock (`purge_thread`).
    PurgeControl = 0,
    /// Checked mode's quarantine shards.
    #[cfg_attr(not(feature = "checked"), allow(dead_code))]
    Quarantine = 1,
}

const UPPER_TIERS: usize = 2;

/// The upper tiers' locks, null until they add them.
static UPPER: [AtomicPtr<ForkLocks>; UPPER_TIERS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; UPPER_TIERS];

/// Which upper tiers `fork_prepare` locked (bit `i`: `UPPER[i]`). Written by the
/// prepare handler only once it holds every backend lock, and read by the parent
/// and child handlers before they release those: a concurrent fork's prepare
/// handler waits for the same locks, so it cannot overwrite the mask in between.
static TAKEN: AtomicU8 = AtomicU8::new(0);

/// Has every later fork hold `locks` of the upper tier `tier`. Call it before the
/// tier first takes any of them: a fork in another thread while this runs may miss
/// them, the window that the registration itself has too (see
/// [`register_fork_handlers`]). Cheap after the first call (one load).
#[inline]
pub(crate) fn add_fork_locks(tier: Upper, locks: &'static ForkLocks) {
    let slot = &UPPER[tier as usize];
    // Relaxed: a hint; the store below is what counts.
    if slot.load(Ordering::Relaxed).is_null() {
        // Release: pairs with the Acquire in fork_prepare(); publishes nothing but
        // the pointer to a static.
        slot.store(ptr::from_ref(locks).cast_mut(), Ordering::Release);
    }
}

/// Fork prepare handler: takes every allocator lock in the lock order (the upper
/// tiers' that were added, then the backend's through `lock_set`), so that no lock
/// is held by a thread that will not exist in the child.
extern "C" fn fork_prepare() {
    let mut taken = 0u8;
    for (i, slot) in UPPER.iter().enumerate() {
        // Acquire: pairs with the Release in add_fork_locks().
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: only `add_fork_locks` stores here, from a `&'static ForkLocks`.
            (unsafe { &*p }.lock)();
            taken |= 1 << i;
        }
    }
    BACKEND.lock_set(Locks::ALL);
    // Relaxed: read by this thread's parent or child handler (see TAKEN).
    TAKEN.store(taken, Ordering::Relaxed);
}

/// Releases what `fork_prepare` took.
fn unlock_all_after_fork() {
    // Relaxed: written by this thread's prepare handler.
    let taken = TAKEN.load(Ordering::Relaxed);
    BACKEND.unlock_set(Locks::ALL);
    for (i, slot) in UPPER.iter().enumerate().rev() {
        if taken & (1 << i) != 0 {
            // Acquire: pairs with the Release in add_fork_locks() (the same value
            // that fork_prepare read: a slot is written once, from null).
            let p = slot.load(Ordering::Acquire);
            // SAFETY: non-null (prepare saw it so), from a `&'static ForkLocks`.
            (unsafe { &*p }.unlock)();
        }
    }
}

/// Fork parent handler.
extern "C" fn fork_parent() {
    unlock_all_after_fork();
}

/// Fork child handler. Only the forking thread exists; it took the locks, so it may
/// release them as the parent does. A once-state another thread left busy at the
/// fork would stay busy forever here: the thread key's goes back to none (see
/// `reset_thread_key_after_fork`), the copy of the object checks beside the chunk
/// map to not copied (`chunk::after_fork_child`), and `FORK_STATE` to done (this handler runs, so
/// they are registered). The background purge thread does not exist in the child;
/// `purge_thread` knows that by the process id.
extern "C" fn fork_child() {
    // Under the pool lock, which `fork_prepare` took: the other threads' heaps
    // are never drained here (their TLS is gone).
    super::forget_drains_in_child();
    unlock_all_after_fork();
    reset_thread_key_after_fork();
    #[cfg(not(strata_loom))]
    crate::chunk::after_fork_child();
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    BACKEND.cpus.after_fork();
    // Relaxed: the child has one thread.
    FORK_STATE.store(FORK_DONE, Ordering::Relaxed);
}
