//! The per-CPU front end's machinery (Linux, x86-64): per CPU and size class, a
//! bounded stack of free objects, popped and pushed inside restartable sequences
//! (rseq). The front end built on it is `front::percpu` (the threads beyond the
//! first max(128, 8 x CPUs) by default, every thread with `STRATA_PERCPU=1`); this
//! module is self-contained and tested on its own
//! (`tests.rs`, `tests/percpu.rs`).
//!
//! # Why
//! A cache per thread grows with the thread count; a cache per CPU is bounded by
//! the CPU count, and a thread that sleeps holds nothing. The price is that a CPU's
//! stack is shared by every thread that runs there, so each operation must be
//! atomic with respect to preemption — which rseq gives without atomic
//! instructions: the kernel restarts a critical section that was preempted,
//! migrated or signalled.
//!
//! # Layout (`slab.rs`)
//! One mapping from the OS, `ncpu` regions of `1 << shift` bytes. Each region
//! starts with one 8-byte header per class (`current`, `end`, `begin`, `end_copy`,
//! 16-bit indices of 8-byte units within the region), followed by each class's
//! slot array of `max_cap` pointers. The cached objects are the slots `[begin,
//! current)`; `end` is the capacity in force, which a non-owner can change within
//! `max_cap` without moving anything.
//!
//! # The critical sections (`cs.rs`)
//! pop: read `cpu_id` from the thread's rseq area, find the header, check
//! `current > begin`, load `slot[current - 1]`, commit by storing `current - 1`.
//! push: check `current < end`, store the object to `slot[current]`, commit by
//! storing `current + 1`. The commit is each section's last instruction; the
//! descriptor lives in `__rseq_cs`; the abort handler, behind the signature
//! `0x53053053`, counts the abort ([`aborts`](crate::percpu::aborts)) and restarts the section. Both
//! fail (caller takes the slow path) on an empty/full stack, on a header locked by
//! a non-owner, and on a thread whose area is not registered (`cpu_id < 0`).
//!
//! # Finding the rseq area (`rseq.rs`), in order
//! 1. `STRATA_PERCPU=0` → off.
//! 2. glibc ≥ 2.35 registered one per thread (`__rseq_size >= 20`: recent glibc
//!    reports the feature size, 20, not the area's 32): use it, at
//!    `fs:0 + __rseq_offset`. The two symbols are looked up in the loaded
//!    modules' GNU hash tables (`dl_iterate_phdr`, no allocation), not linked: a
//!    link-time reference, even weak, would make a build against glibc >= 2.35
//!    fail to load on an older one.
//! 3. Otherwise register our own per thread, in TLS, on first use (same signature
//!    as glibc's); `ENOSYS` (old kernel, valgrind) → off.
//!
//! # Non-owners: drain and resize
//! Lock the CPU's headers with a CAS (`begin = 0xffff`, `end = 0`: every section
//! there now fails), then `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
//! MEMBARRIER_CMD_FLAG_CPU, cpu)`: when it returns, no section on that CPU is in
//! flight any more and `current` is stable; read the slots, write the header,
//! unlock with a CAS ([`Slab::drain`](crate::percpu::Slab::drain), [`Slab::drain_cpu`](crate::percpu::Slab::drain_cpu),
//! [`Slab::set_capacity`](crate::percpu::Slab::set_capacity)). Without the membarrier command (kernel < 5.10, or
//! forbidden) non-owners cannot work, and objects cached on a CPU could be
//! stranded there: a front end should then not use the slab at all
//! ([`Slab::can_fence`](crate::percpu::Slab::can_fence)).
//!
//! # The front end on top (`front::percpu`)
//! Done: size class `k` is slab class `k`; a pop miss refills a batch from the
//! central tier (one push section per object, the rest flushed back if the stack
//! fills); a push miss flushes a batch; `flush_thread_cache`/`release_memory` drain
//! every CPU; `stats()` counts CPU-cached objects as front-end-cached and hits in
//! `allocs`. A fork handler is not needed (the child keeps its registration and
//! the slab).
//!
//! Capacities follow demand (`front::percpu::capacity`: a class's capacity grows
//! on misses within the per-CPU byte budget and the purge thread narrows idle
//! ones), idle CPUs are drained by the purge thread (`CpuCaches::idle_pass`), and
//! refills and flushes move arrays (`Slab::push_batch`).
//!
//! Still missing: the slab mapping (`map_bytes`) is not in `stats()`'s mapped or
//! metadata bytes.

// Under loom (`--cfg strata_loom`) only the slab is built, its memory loom's atomics
// and the kernel's part (the critical sections, the fence) modelled in
// `slab/model.rs`: the asm and the rseq registration cannot run under loom
// (loom-tests/tests/percpu_handoff.rs).
#[cfg(not(strata_loom))]
mod cs;
#[cfg(not(strata_loom))]
mod rseq;
mod slab;

#[cfg(all(test, not(strata_loom)))]
mod tests;

#[cfg(not(strata_loom))]
pub use cs::aborts;
#[cfg(not(strata_loom))]
pub use rseq::{
    Mode, RseqArea, current, current_for_section, glibc_area_at, glibc_offset, mode, possible_cpus,
    release_current_thread, usable_cpus,
};
pub use slab::{DrainError, MAX_CLASSES, Slab, SlabError};

/// With `STRATA_PERCPU` unset, threads served per CPU are those beyond the first
/// `max(THREAD_CACHES_MIN, THREAD_CACHES_PER_CPU × CPUs)` live at a time. Up to
/// there every thread keeps the thread cache's speed; beyond, the threads far
/// outnumber what can run at once, and what each idle thread cache would keep
/// (up to its budget) is memory the per-CPU caches do not hold. Not lower: with
/// both front ends serving, blocks that go from one to the other cross the
/// central tier converted (a CPU's array linked by a thread cache's refill), and
/// at 256 threads on 2 CPUs a limit of 64 cost 0.85x the thread caches'
/// throughput where 128 cost 0.95x (and held 67 MiB idle against 36 for 64 and
/// 128 for thread caches only: BENCHMARKS.md, "Thread caches first, per-CPU
/// caches after them by default").
pub const THREAD_CACHES_MIN: usize = 128;
/// See [`THREAD_CACHES_MIN`].
pub const THREAD_CACHES_PER_CPU: usize = 8;

/// The default number of thread caches live at a time before threads are served
/// per CPU, for `cpus` usable CPUs ([`THREAD_CACHES_MIN`]).
pub const fn default_thread_caches(cpus: usize) -> usize {
    let per_cpu = cpus.saturating_mul(THREAD_CACHES_PER_CPU);
    if per_cpu > THREAD_CACHES_MIN {
        per_cpu
    } else {
        THREAD_CACHES_MIN
    }
}

/// What the per-CPU front end (`STRATA_PERCPU=1`) reports about itself: counters of
/// its slow paths (only misses touch them, never a hit) and a snapshot of the bytes
/// cached on CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontCounters {
    /// Bytes cached on all CPUs (a snapshot).
    pub cached_bytes: u64,
    /// Batches taken from the central tier on an empty stack.
    pub refills: u64,
    /// Objects of those batches pushed onto a CPU's stack (served later by hits).
    pub refilled_objects: u64,
    /// Batches flushed to the central tier on a full stack.
    pub flushes: u64,
    /// Whole-slab drains (`flush_thread_cache`, `release_memory`) and drains of
    /// idle CPUs by the background purge thread.
    pub drains: u64,
    /// The capacities of every CPU together, bytes (a snapshot): the most the CPUs
    /// can hold now.
    pub capacity_bytes: u64,
    /// The budget the capacities keep to, bytes (`strata::set_percpu_cache_bytes`).
    pub budget_bytes: u64,
    /// Classes widened on a miss.
    pub grows: u64,
    /// CPUs whose capacities the background purge thread narrowed.
    pub shrinks: u64,
}
