//! The growth hook: something an upper tier wants done once, the first time the
//! process's heap reaches a size (a smaller one once the process has had several
//! threads allocating at once), from a slow path of `malloc` with no allocator
//! lock held. The background purge thread's automatic start uses it (a process
//! that stays small never gets the thread; one that grows, a server, does), and
//! registers it downward, as the fork locks are, so that `global` does not name
//! the tier above it.

use super::BACKEND;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// What to run, registered by an upper tier.
pub(crate) struct GrowthHook {
    /// Runs once, outside every allocator lock; may allocate (the calling
    /// thread's heap is consistent: the slow path that calls it has finished).
    pub run: fn(),
}

/// The armed hook; null when none is armed (none registered, or already run).
static HOOK: AtomicPtr<GrowthHook> = AtomicPtr::new(ptr::null_mut());
/// The mapped bytes (chunks and huge blocks) at which the hook runs.
static AT_BYTES: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The mapped bytes at which it runs in a process that has had [`THREADED`]
/// threads allocating at once.
static AT_BYTES_THREADED: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Threads with thread heaps at once (the pool's count of heaps ever created,
/// which are recycled), or threads ever served per CPU, from which a process
/// counts as threaded for [`set_growth_hook`] ([`threaded`]).
pub(crate) const THREADED: usize = 8;

/// Arms `hook` to run once the heap's mapped bytes reach `at_bytes`, or
/// `at_bytes_threaded` in a process that has had [`THREADED`] threads
/// allocating at once (`None` disarms). Replaces what was armed.
pub(crate) fn set_growth_hook(
    hook: Option<&'static GrowthHook>,
    at_bytes: usize,
    at_bytes_threaded: usize,
) {
    // Relaxed: the thresholds are read only after the hook pointer's Acquire load.
    AT_BYTES.store(at_bytes, Ordering::Relaxed);
    AT_BYTES_THREADED.store(at_bytes_threaded, Ordering::Relaxed);
    let p = hook.map_or(ptr::null_mut(), |h| ptr::from_ref(h).cast_mut());
    // Release: publishes the threshold with the pointer.
    HOOK.store(p, Ordering::Release);
}

/// Runs the armed hook if the heap has grown to its size. One relaxed load when
/// none is armed; called from slow paths only (thread-cache misses, large and
/// huge requests), after their work.
#[inline(always)]
pub(super) fn on_slow_path() {
    // Relaxed: a hint; `grown` reloads with Acquire before using it.
    if !HOOK.load(Ordering::Relaxed).is_null() {
        grown();
    }
}

#[cold]
#[inline(never)]
fn grown() {
    // Acquire: pairs with the Release in `set_growth_hook`.
    if HOOK.load(Ordering::Acquire).is_null() {
        return;
    }
    let mapped = BACKEND.page_heap.mapped_bytes();
    // Relaxed: published by the hook pointer's Release store.
    if mapped < AT_BYTES.load(Ordering::Relaxed)
        && (mapped < AT_BYTES_THREADED.load(Ordering::Relaxed) || !threaded())
    {
        return;
    }
    // AcqRel: exactly one caller takes the hook (the others see null).
    let p = HOOK.swap(ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: only `set_growth_hook` stores here, from a `&'static GrowthHook`.
        (unsafe { &*p }.run)();
    }
}

/// Whether the process has had [`THREADED`] threads allocating at once: as many
/// thread heaps created (a heap is recycled when its thread exits, so the count
/// is the most live at once), or as many threads served per CPU (ever: they
/// have no heap to recycle; with `STRATA_PERCPU=1` even the main thread is one,
/// so the front end being on says nothing by itself).
fn threaded() -> bool {
    if BACKEND.threads.heaps_created() >= THREADED {
        return true;
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    if BACKEND.cpus.threads_served() >= THREADED {
        return true;
    }
    false
}
