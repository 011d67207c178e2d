//! The growth hook: something an upper tier wants done once, the first time the
//! process's heap reaches a size, from a slow path of `malloc` with no allocator
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

/// Arms `hook` to run once the heap's mapped bytes reach `at_bytes` (`None`
/// disarms). Replaces what was armed.
pub(crate) fn set_growth_hook(hook: Option<&'static GrowthHook>, at_bytes: usize) {
    // Relaxed: the threshold is read only after the hook pointer's Acquire load.
    AT_BYTES.store(at_bytes, Ordering::Relaxed);
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
    if HOOK.load(Ordering::Acquire).is_null()
        || BACKEND.page_heap.mapped_bytes() < AT_BYTES.load(Ordering::Relaxed)
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
