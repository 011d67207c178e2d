//! The process-wide operations behind the public API that reach the thread's heap
//! and the shared tiers: flush, release, validate, setters, counters. What checked
//! mode adds to them is composed above, in the public functions of `lib.rs`, so
//! that nothing here names `checked` (which sits above this module).

use super::{BACKEND, heap, own_heap};
use crate::Violation;
use crate::front::FrontEnd;

/// See [`crate::flush_thread_cache`].
pub(crate) fn flush_thread_cache() {
    if let Some(own) = own_heap(heap()) {
        // SAFETY: this thread's live heap, its drain lock held.
        unsafe { BACKEND.threads.flush(own.heap, &BACKEND) };
    }
    // Per-CPU caches are not the thread's: all CPUs are drained.
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    // SAFETY: the per-CPU front end's slab holds objects of BACKEND's only.
    unsafe {
        BACKEND.cpus.drain_all(&BACKEND.backend);
    }
}

/// See [`crate::release_memory`] (which measures what it gave back around this).
pub(crate) fn release_memory() {
    flush_thread_cache();
    // Other threads' caches, where their threads sleep now (`drain`'s protocol).
    super::drain_idle_thread_caches(0);
    BACKEND.release_shared();
}

/// The bytes that may be resident now, without a lock (`Backend::resident_bytes`).
pub(crate) fn resident_bytes() -> usize {
    BACKEND.resident_bytes()
}

/// See [`crate::validate_heap`].
pub(crate) fn validate_heap() -> Result<(), Violation> {
    match own_heap(heap()) {
        // SAFETY: this thread's live heap, its drain lock held.
        Some(own) => unsafe { BACKEND.threads.validate(own.heap, &BACKEND) }?,
        // SAFETY: a sentinel, only read.
        None => unsafe { BACKEND.threads.validate(&*heap(), &BACKEND) }?,
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    BACKEND.cpus.validate(&BACKEND.backend)?;
    BACKEND.validate()
}

/// See [`crate::set_thread_cache_budget`].
pub(crate) fn set_thread_cache_budget(bytes: usize) {
    BACKEND.set_cache_budget(bytes);
    if let Some(own) = own_heap(heap()) {
        // SAFETY: this thread's live heap, its drain lock held.
        unsafe { BACKEND.threads.set_budget(own.heap, bytes, &BACKEND) };
    }
}

/// See [`crate::set_thread_cache_pool_bytes`].
pub(crate) fn set_thread_cache_pool_bytes(bytes: usize) {
    BACKEND.cache_pool.set_total(bytes);
}

/// See [`crate::set_purge_delay_ms`].
pub(crate) fn set_purge_delay_ms(ms: u64) {
    BACKEND.page_heap.set_purge_delay_ms(ms);
}

/// See [`crate::set_huge_cache_bytes`].
pub(crate) fn set_huge_cache_bytes(bytes: usize) {
    BACKEND.set_huge_cache_budget(bytes);
}

/// See [`crate::usable_size`] (the plain build's: checked mode has its own).
#[cfg(not(feature = "checked"))]
pub(crate) fn usable_size(p: *const u8) -> Option<usize> {
    BACKEND.usable_size(p)
}

/// See [`crate::gauges`].
pub(crate) fn gauges() -> crate::Gauges {
    BACKEND.gauges()
}

/// See [`crate::stats`].
pub(crate) fn stats() -> crate::Stats {
    BACKEND.stats()
}

/// See [`crate::percpu_front_counters`].
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
pub(crate) fn percpu_front_counters() -> Option<crate::percpu::FrontCounters> {
    BACKEND.cpus.counters()
}

/// See [`crate::set_percpu_cache_bytes`].
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
pub(crate) fn set_percpu_cache_bytes(bytes: usize) {
    BACKEND.cpus.set_budget_bytes(bytes)
}

/// See [`crate::set_placement`].
pub(crate) fn set_placement(p: crate::Placement) -> Result<(), crate::PlacementError> {
    BACKEND.page_heap.set_placement(p)
}

/// See [`crate::placement`].
pub(crate) fn placement() -> crate::Placement {
    BACKEND.page_heap.placement()
}

/// `STRATA_PLACEMENT` at start-up (`settings`): whatever the C runtime allocated
/// before the constructor ran.
pub(crate) fn force_placement(p: crate::Placement) {
    BACKEND.page_heap.force_placement(p)
}
