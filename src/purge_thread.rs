//! The background purge thread: on by default once the heap is big.
//!
//! Without it, free pages are purged, wholly free chunks unmapped and cached huge
//! mappings expired only when the page heap or the huge registry is used: a program
//! that frees a lot and then goes idle keeps all of that resident until it allocates
//! again. The thread does the same pass (`Backend::expire_huge_due` and
//! `PageHeap::purge_due`: only what has been free for longer than the purge
//! delay) every half delay, clamped to
//! [`MIN_INTERVAL_MS`, `MAX_INTERVAL_MS`], and sleeps in between. Before that it
//! drains the per-CPU caches of every CPU whose stacks did not change since the last
//! pass (`CpuCaches::idle_pass`: a non-owner drain, which locks the CPU's headers
//! and fences its critical sections first), and the central batches of every class
//! whose transfer stack no thread touched since the last pass
//! (`Backend::drain_idle_central`), so that spans they kept in use can empty and be
//! purged later; a busy CPU or class is left alone. First of all it drains the
//! caches of threads that left them alone for [`IDLE_PASSES`] passes and sleep in
//! the kernel (`front::thread_cache::drain`: the owner's TLS slot is pointed at a
//! sentinel, its scheduler state read, every list cut after two objects): a thread
//! that exits returns its cache itself, and one that sleeps no longer keeps it.
//!
//! When it runs: by default it starts the first time the heap's mapped bytes reach
//! [`AUTO_START_BYTES`] (64 MiB), or [`AUTO_START_BYTES_THREADED`] (16 MiB) once
//! 8 threads have allocated at once, from a `malloc` slow path with no allocator
//! lock held ([`arm_auto_start`]). A program that stays small (a shell, a
//! compiler, a test runner) never gets it, so it never surprises a small tool or a
//! sandbox that must stay single-threaded (`unshare(CLONE_NEWUSER)` refuses a
//! process with two threads); a server, whose idle memory is what matters, does,
//! and one whose threads exit gets back what their caches left in the central
//! tier (64 threads that each churned 266 KiB and exited kept 33 MiB resident
//! under a 64 MiB threshold alone). Its cost, measured
//! with a 200 MiB heap at the default 1 s delay: about 40 µs of CPU a pass, two
//! passes a second (0.008 % of a core), and a 64 KiB stack. `STRATA_BACKGROUND_PURGE=0`
//! (or [`stop`], `strata::stop_background_purge`, C `strata_background_purge(0)`)
//! keeps it off; `=1` (or [`start`]) starts it at once. A forked child has no such
//! thread (only the forking thread survives a fork) and gets one only when asked or
//! when its own heap first reaches the size (a child of a big parent inherits a
//! spent hook: only explicitly).
//!
//! State: `GENERATION` names the wanted thread; a thread runs while the generation
//! it was started for is current, so `stop` (or a `start` in a forked child) retires
//! the old one without waiting for it, and it exits at its next wake-up.

use crate::global::{self, BACKEND, ForkLocks, GrowthHook, Upper};
use crate::size_class::NUM_CLASSES;
use crate::sync::{AtomicU64, LockRank, Ordering, RawLock};
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::c_void;

/// Shortest pause between passes (a purge delay of 0 purges at free already).
pub const MIN_INTERVAL_MS: u64 = 10;
/// Longest pause between passes (a longer delay is still honoured by each pass:
/// only spans free for longer than the delay are purged).
pub const MAX_INTERVAL_MS: u64 = 1_000;

/// Serialises `start` and `stop`.
static LOCK: RawLock = RawLock::new(LockRank::PurgeControl);
/// The generation of the thread that should be running; bumped by `start` and `stop`.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The process that started the current generation's thread, 0 if none should run.
static PID: AtomicU64 = AtomicU64::new(0);
/// Passes done and bytes returned to the OS by them, since the process started.
static PASSES: AtomicU64 = AtomicU64::new(0);
static RELEASED: AtomicU64 = AtomicU64::new(0);
static DRAINED: AtomicU64 = AtomicU64::new(0);
static THREAD_DRAINED: AtomicU64 = AtomicU64::new(0);

/// Passes in a row through which a thread's cache must stay unused (and its
/// thread asleep at the last) before the thread drains it: two pauses of half the
/// purge delay, so a cache unused for the purge delay.
pub const IDLE_PASSES: u32 = 2;
/// Times the thread was started by the heap's growth ([`arm_auto_start`]).
static AUTO_STARTS: AtomicU64 = AtomicU64::new(0);

/// What the background purge thread has done (see `strata::background_purge`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackgroundPurge {
    /// Whether a thread is meant to run in this process (started and not stopped).
    pub running: bool,
    /// Passes done by background threads since the process started.
    pub passes: u64,
    /// Bytes they purged or unmapped: their passes' own purges and those that
    /// the frees of their drains ran (with, rarely, a purge another thread ran
    /// during a pass).
    pub released_bytes: u64,
    /// Bytes of idle central batches and idle CPU caches they moved back to
    /// their spans and the central tier.
    pub drained_bytes: u64,
    /// The part of `drained_bytes` that came from the caches of threads that slept
    /// through a purge delay (drained by this thread, which the sleeping thread
    /// finds out at its next slow path).
    pub thread_cache_drained_bytes: u64,
    /// Whether the thread was started by the heap's growth rather than asked for
    /// (it then counts as started: this stays true after it stops).
    pub auto_started: bool,
}

fn this_pid() -> u64 {
    u64::from(crate::platform::process_id())
}

/// `LOCK` for the fork handlers (see `lock_for_fork`).
static FORK_LOCKS: ForkLocks = ForkLocks {
    lock: lock_for_fork,
    unlock: unlock_after_fork,
};

/// Has every fork hold `LOCK`: called before each use of it.
fn add_fork_locks() {
    global::add_fork_locks(Upper::PurgeControl, &FORK_LOCKS);
}

/// The heap size (mapped bytes of chunks and huge blocks) at which the thread
/// starts on its own ([`arm_auto_start`]): four times what a small program (a
/// shell, a compiler pass, a test runner) maps, a sixteenth of a small server's.
pub const AUTO_START_BYTES: usize = 64 << 20;

/// The heap size at which the thread starts on its own in a process that has had
/// 8 threads allocating at once (`global::THREADED`): what threads leave behind
/// when they exit, their caches' objects in central batches, then waits at most a
/// few purge delays, not until the heap reaches [`AUTO_START_BYTES`].
pub const AUTO_START_BYTES_THREADED: usize = 16 << 20;

/// Starts the thread when the heap first reaches [`AUTO_START_BYTES`] (or
/// [`AUTO_START_BYTES_THREADED`] with 8 threads allocating at once), unless it
/// was started or stopped before (the default, armed at load time unless
/// `STRATA_BACKGROUND_PURGE` says otherwise). It runs from a slow path of
/// `malloc` with no allocator lock held (`global::set_growth_hook`).
pub fn arm_auto_start() {
    static HOOK: GrowthHook = GrowthHook { run: auto_start };
    global::set_growth_hook(Some(&HOOK), AUTO_START_BYTES, AUTO_START_BYTES_THREADED);
}

fn auto_start() {
    // Relaxed: a statistic.
    AUTO_STARTS.fetch_add(1, Ordering::Relaxed);
    start();
}

/// Starts the thread unless one runs in this process already. Returns whether one
/// runs after the call (false only if the OS refused a thread).
pub fn start() -> bool {
    // Started by hand or by growth: the automatic start has nothing left to do.
    global::set_growth_hook(None, usize::MAX, usize::MAX);
    // Spawning allocates, maybe a first thread heap, which registers the fork
    // handlers; that must not happen under LOCK (fork holds libc's fork lock while
    // its prepare handler waits for LOCK), so register first.
    global::register_fork_handlers();
    add_fork_locks();
    let _g = LOCK.guard();
    let pid = this_pid();
    // Relaxed: PID and GENERATION are only written under LOCK, which we hold.
    if PID.load(Ordering::Relaxed) == pid {
        return true;
    }
    let generation = GENERATION.load(Ordering::Relaxed) + 1;
    GENERATION.store(generation, Ordering::Release);
    // The generation travels as the thread's argument (a pointer-sized integer;
    // a 32-bit target compares its low half, enough to tell the last few apart).
    let arg = generation as usize as *mut c_void;
    if crate::platform::spawn_detached(64 << 10, thread_main, arg).is_err() {
        return false;
    }
    PID.store(pid, Ordering::Relaxed);
    // The passes are this thread's from now: a free that finds one due no longer
    // pays for it (a forked child, another process, goes back to doing them).
    BACKEND.page_heap.leave_passes_to(pid as u32);
    true
}

/// Asks the thread to stop; it exits at its next wake-up (within
/// `MAX_INTERVAL_MS`). Returns whether one was running.
pub fn stop() -> bool {
    // Stopped means stopped: growth does not start it again.
    global::set_growth_hook(None, usize::MAX, usize::MAX);
    add_fork_locks();
    let _g = LOCK.guard();
    // Relaxed: under LOCK, as in `start`.
    let was = PID.load(Ordering::Relaxed) == this_pid();
    GENERATION.fetch_add(1, Ordering::Release);
    PID.store(0, Ordering::Relaxed);
    BACKEND.page_heap.leave_passes_to(0);
    was
}

/// Fork prepare: holds `LOCK` (lowest in the lock order), so that a child never
/// inherits it held by a thread in `start` or `stop`.
fn lock_for_fork() {
    LOCK.lock();
}

/// Fork parent and child: releases what `lock_for_fork` took.
fn unlock_after_fork() {
    LOCK.unlock();
}

/// The thread's state and what it has done.
pub fn status() -> BackgroundPurge {
    BackgroundPurge {
        // Relaxed: a reading; nothing is published with these.
        running: PID.load(Ordering::Relaxed) == this_pid(),
        passes: PASSES.load(Ordering::Relaxed),
        released_bytes: RELEASED.load(Ordering::Relaxed),
        drained_bytes: DRAINED.load(Ordering::Relaxed),
        thread_cache_drained_bytes: THREAD_DRAINED.load(Ordering::Relaxed),
        auto_started: AUTO_STARTS.load(Ordering::Relaxed) > 0,
    }
}

/// The pause before the next pass, for the current purge delay.
fn interval_ms(delay_ms: u64) -> u64 {
    (delay_ms / 2).clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS)
}

/// The thread's entry point (`platform::spawn_detached`): names the thread and
/// runs [`run`] for the generation in `arg`.
extern "C" fn thread_main(arg: *mut c_void) -> *mut c_void {
    crate::platform::set_thread_name(c"strata-purge");
    run(arg as usize);
    core::ptr::null_mut()
}

/// The thread's body: sleep, and while `generation` (its low bits on a 32-bit
/// target) is current, drain idle central batches and purge what is due.
fn run(generation: usize) {
    let mut seen = [u64::MAX; NUM_CLASSES];
    // Per CPU and class, the header word at the last pass (this thread is not
    // under malloc: it may allocate; empty while the per-CPU front end is off).
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    let mut class_seen: Vec<u64> = Vec::new();
    loop {
        let pause = interval_ms(BACKEND.page_heap.purge_delay_ms());
        crate::platform::sleep_ms(pause);
        // Acquire: pairs with the Release bumps in `start` and `stop`.
        if GENERATION.load(Ordering::Acquire) as usize != generation {
            return;
        }
        // The drains below free spans to the page heap, and a page-heap free purges
        // what is due on its own: the pass's release is the change in the page
        // heap's totals over the whole pass, not only what its own purge found left.
        let page_released_before = BACKEND.page_heap.released_total();
        // Thread caches first: what a sleeping thread cached goes to the central
        // tier, whose batches the drain below takes once they stay idle.
        let from_threads = global::drain_idle_thread_caches(IDLE_PASSES);
        let mut drained = from_threads;
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        {
            if class_seen.is_empty() {
                if let Some(slab) = BACKEND.cpus.slab_if_on() {
                    class_seen = vec![u64::MAX; slab.ncpu() as usize * NUM_CLASSES];
                }
            }
            // CPUs first (idle ones drained, classes that stopped moving narrowed):
            // what they give back reaches the central stacks, which the next pass
            // drains once they stay idle.
            // SAFETY: the front end's slab holds objects of BACKEND's only
            // (CpuCaches invariant 3).
            drained += unsafe { BACKEND.cpus.idle_pass(&BACKEND.backend, &mut class_seen) };
        }
        drained += BACKEND.drain_idle_central(&mut seen);
        let huge_released = BACKEND.expire_huge_due();
        BACKEND.page_heap.purge_due();
        let page_released = BACKEND
            .page_heap
            .released_total()
            .saturating_sub(page_released_before);
        let released = huge_released as u64 + page_released;
        // Relaxed: statistics.
        DRAINED.fetch_add(drained as u64, Ordering::Relaxed);
        THREAD_DRAINED.fetch_add(from_threads as u64, Ordering::Relaxed);
        PASSES.fetch_add(1, Ordering::Relaxed);
        RELEASED.fetch_add(released, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_half_the_delay_within_bounds() {
        assert_eq!(interval_ms(0), MIN_INTERVAL_MS);
        assert_eq!(interval_ms(1_000), 500);
        assert_eq!(interval_ms(u64::MAX), MAX_INTERVAL_MS);
    }
}
