//! strata: a thread-caching, concurrent memory allocator in pure Rust.
//!
//! ```
//! #[global_allocator]
//! static A: strata::Strata = strata::Strata;
//! ```
//!
//! # Tiers
//! ```text
//!  alloc/free ──► ThreadHeap (one per thread, no atomics on the fast path)
//!                   per size class: intrusive free list {head, len, max}
//!                   │ refill: pop a whole batch        ▲ flush: push a whole batch
//!                   ▼                                   │
//!                Central (one per process)
//!                   per size class: lock-free TransferStack of batches
//!                   behind it: spans of that class under a per-class lock
//!                   │ span needs pages                  ▲ span fully free
//!                   ▼                                   │
//!                PageHeap: spans of pages inside 4 MiB aligned chunks
//!                   best fit, coalescing, purge after a delay, munmap of free chunks
//!                   │                                   ▲
//!                   ▼                                   │
//!                Os: mmap / munmap / madvise / mremap (one small trait)
//! ```
//! Requests above 1 MiB get a mapping of their own (`huge`).
//!
//! # Modules, in dependency order (each uses only those below it)
//! `global` (statics, TLS, `GlobalAlloc`) → `thread_heap` (the fast path) →
//! `backend` (the shared tiers as one value; large and huge paths) → `central`
//! (per-class transfer stacks and spans) → `transfer` (the lock-free stack of
//! batches) → `page_heap` (spans, best fit, coalescing, purge) → `chunk` (headers,
//! page map, "is this ours") and `huge` (own mappings) → `link` (free objects and
//! their encoded, checked links) and `meta` (the metadata arena) → `size_class`
//! (tables, pure) and `os` (the OS trait) → `sync` (atomics and locks, or loom's).
//!
//! `purge_thread` (the opt-in background purge thread) sits on top of `global`,
//! calling `Backend::purge_due` on its own schedule.
//!
//! With the `checked` feature, `checked` sits beside `global`: it implements
//! `GlobalAlloc` (and the C entry points) on top of the by-address paths, with a
//! canary and a trailer on every block, pointer validation, a quarantine of freed
//! blocks and a leak report; misuse aborts with a report.
//!
//! `heap_map` also sits beside `global`: it copies every chunk's spans under the
//! class and page-heap locks (without allocating) and draws them as SVG afterwards.

#![warn(missing_docs)]
// Nothing under malloc/free may panic (clippy.toml bans the panicking macros;
// these lints the panicking methods): a broken invariant goes through
// `debug_check!` or `report::die`. Tests may panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::disallowed_macros,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

/// `debug_assert!` for code that runs under `malloc`/`free`: in debug builds, a
/// false condition reports the message (a string literal: nothing is formatted)
/// through `report::internal_error` and aborts; release builds check nothing.
/// It never panics, so nothing unwinds out of `GlobalAlloc` or the C entry
/// points. Under loom (no stderr reporter) it fails the model with a panic.
/// Defined before the modules so that all of them see it.
macro_rules! debug_check {
    ($cond:expr, $what:literal $(,)?) => {
        #[cfg(not(strata_loom))]
        {
            if cfg!(debug_assertions) && !$cond {
                $crate::report::internal_error($what, file!(), line!());
            }
        }
        #[cfg(strata_loom)]
        {
            #[allow(clippy::disallowed_macros)]
            {
                assert!($cond, $what);
            }
        }
    };
}

/// A broken internal invariant found on a path that must not panic: reports it
/// (a string literal: nothing is formatted) through `report::internal_error` and
/// aborts, in every build. Under loom it fails the model with a panic.
macro_rules! fatal {
    ($what:literal $(,)?) => {{
        #[cfg(not(strata_loom))]
        {
            $crate::report::internal_error($what, file!(), line!())
        }
        #[cfg(strata_loom)]
        {
            #[allow(clippy::disallowed_macros)]
            {
                panic!($what)
            }
        }
    }};
}

/// A compile-time check (`const_assert!(...)`), exempt from the ban on
/// panicking macros: it runs in the compiler, never under `malloc`.
macro_rules! const_assert {
    ($cond:expr $(, $msg:literal)? $(,)?) => {
        #[allow(clippy::disallowed_macros)]
        const _: () = assert!($cond $(, $msg)?);
    };
}

mod sync;

mod backend;
mod central;
mod chunk;
mod huge;
mod link;
mod meta;
mod os;
mod page_heap;
mod size_class;
mod stats;
mod thread_heap;
mod transfer;

/// The tiers as plain values, for loom models, benchmarks and white-box tests. Not a
/// stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::backend::{Backend, Locks, Route, route};
    pub use crate::central::{Batch, Central};
    pub use crate::chunk::{ChunkHeader, HEADER_PAGES, SPAN_ZEROED, Span, SpanKind, USABLE_PAGES};
    pub use crate::huge::HugeRegistry;
    pub use crate::link::FreeObj;
    pub use crate::meta::MetaArena;
    pub use crate::os::{OS_PAGE, Os, OsError, SysOs};
    pub use crate::page_heap::{CHUNK_RESERVE, DEFAULT_PURGE_DELAY_MS, PageHeap, PageHeapStats};
    pub use crate::size_class::*;
    pub use crate::thread_heap::{DEFAULT_CACHE_BUDGET, HeapState, ThreadHeap};
    pub use crate::transfer::{BatchDesc, DescPool, NIL, TransferStack};
}

#[cfg(all(feature = "c-abi", not(feature = "checked"), not(strata_loom)))]
mod bad_free;
#[cfg(all(feature = "checked", not(strata_loom)))]
mod checked;
#[cfg(all(
    any(
        feature = "c-abi",
        feature = "checked",
        all(target_os = "linux", target_arch = "x86_64")
    ),
    not(strata_loom)
))]
#[cfg_attr(not(any(feature = "c-abi", feature = "checked")), allow(dead_code))]
mod env;
#[cfg(all(feature = "c-abi", not(strata_loom)))]
mod ffi;
#[cfg(not(strata_loom))]
mod global;
#[cfg(not(strata_loom))]
mod heap_map;
#[cfg(all(feature = "c-abi", not(strata_loom)))]
mod mallinfo;
/// The per-CPU (rseq) front end's machinery, not yet wired in; public for tests
/// and benchmarks only. Not a stable API.
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
#[doc(hidden)]
pub mod percpu;
#[cfg(not(strata_loom))]
mod purge_thread;
#[cfg(not(strata_loom))]
mod report;
#[cfg(all(test, not(strata_loom)))]
mod test_child;

use core::fmt;

/// Whether this build is strata's checked mode (cargo feature `checked`): blocks
/// carry canaries and exact sizes, misuse aborts with a report, and
/// [`usable_size`] returns exactly the requested size.
pub const CHECKED: bool = cfg!(feature = "checked");

/// The allocator. Install it with
/// `#[global_allocator] static A: strata::Strata = strata::Strata;`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Strata;

/// A broken invariant found by a validator: which structure, which numbered
/// invariant (as documented on the structure), what was wrong, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The structure whose invariant broke (`"Span"`, `"PageHeap"`, ...).
    pub structure: &'static str,
    /// The invariant's number in the structure's documentation.
    pub invariant: u32,
    /// What was found.
    pub what: &'static str,
    /// The address (or index) where it was found.
    pub addr: usize,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} invariant {} broken at {:#x}: {}",
            self.structure, self.invariant, self.addr, self.what
        )
    }
}

/// Counters of the process-wide heap (a first cut of statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapCounts {
    /// Chunks mapped.
    pub chunks: usize,
    /// Bytes mapped for chunks, huge blocks and cached huge mappings.
    pub mapped_bytes: usize,
    /// Bytes in free spans of the page heap.
    pub free_page_bytes: usize,
    /// Of those, bytes purged or never touched (not resident).
    pub free_zeroed_bytes: usize,
    /// Bytes ever purged with `MADV_DONTNEED`.
    pub purged_bytes_total: u64,
    /// Bytes of chunks ever unmapped.
    pub unmapped_bytes_total: u64,
    /// Live huge blocks.
    pub huge_blocks: usize,
    /// Bytes mapped for huge blocks.
    pub huge_bytes: usize,
    /// Bytes of the allocator's own metadata arena.
    pub metadata_bytes: usize,
    /// Thread heaps in use.
    pub thread_heaps_live: usize,
    /// Thread heaps ever created (reused through a pool).
    pub thread_heaps_created: usize,
}

#[cfg(not(strata_loom))]
pub use api::*;
pub use stats::{ClassStats, Stats};

#[cfg(all(feature = "checked", not(strata_loom)))]
pub use checked::{LeakCount, LeakReport};

#[cfg(not(strata_loom))]
pub use heap_map::{HeapMap, HeapMapChunk, HeapMapClass, HeapMapSpan, HeapMapSummary, PageState};
#[cfg(not(strata_loom))]
pub use purge_thread::BackgroundPurge;

#[cfg(not(strata_loom))]
mod api {
    use super::*;

    /// Flushes the calling thread's cache, moves every central batch back to its
    /// spans, purges every free page and unmaps every wholly free chunk, now.
    /// Returns the bytes purged or unmapped. Other threads' caches are untouched.
    pub fn release_memory() -> usize {
        global::release_memory()
    }

    /// Returns the calling thread's cached objects to the central tier.
    pub fn flush_thread_cache() {
        global::flush_thread_cache()
    }

    /// Walks every chunk, span, central list and the caller's thread heap and checks
    /// their numbered invariants. Stops allocation in other threads while it runs.
    /// In checked mode it also checks every live block's canary and every
    /// quarantined block's free pattern (structure `"Block"`, invariants 1 and 2);
    /// those reads are exact when no other thread frees or reallocates meanwhile.
    pub fn validate_heap() -> Result<(), Violation> {
        global::validate_heap()
    }

    /// Sets the byte budget of thread caches: now for the calling thread, and for
    /// every thread that starts later (default 2 MiB).
    pub fn set_thread_cache_budget(bytes: usize) {
        global::set_thread_cache_budget(bytes)
    }

    /// Sets how long free pages stay resident before they are purged (default 1 s).
    /// Freed huge mappings kept for reuse expire after the same delay.
    pub fn set_purge_delay_ms(ms: u64) {
        global::set_purge_delay_ms(ms)
    }

    /// Starts the background purge thread (`strata-purge`), unless it runs already:
    /// every half purge delay (10 ms to 1 s) it purges free pages, unmaps wholly
    /// free chunks beyond a reserve of one and expires cached huge blocks, of what
    /// has been free for longer than the purge delay, and moves the central batches
    /// of size classes that no thread touched since its last pass back to their
    /// spans, so that a program that goes idle gives that memory back without
    /// calling [`release_memory`]. It never touches a thread's cache. Off by
    /// default; a forked child starts without it. Returns whether it runs (false
    /// only if the OS refused a thread).
    pub fn start_background_purge() -> bool {
        purge_thread::start()
    }

    /// Stops the background purge thread (it exits within a second). Returns
    /// whether it was running.
    pub fn stop_background_purge() -> bool {
        purge_thread::stop()
    }

    /// Whether the background purge thread runs, and what it has returned so far.
    pub fn background_purge() -> BackgroundPurge {
        purge_thread::status()
    }

    /// Sets the byte budget of the cache of freed huge blocks (above 1 MiB, up to
    /// 32 MiB each) kept resident for reuse (default 64 MiB; 0 unmaps every huge
    /// block at free, as before the cache).
    pub fn set_huge_cache_bytes(bytes: usize) {
        global::set_huge_cache_bytes(bytes)
    }

    /// The usable size of a block that strata handed out, found by address; None if
    /// `p` is not the start of a live block of ours (it is never read through).
    /// In checked mode: exactly the size that was requested, read from the block's
    /// trailer (only for a pointer that lies in our memory).
    pub fn usable_size(p: *const u8) -> Option<usize> {
        global::usable_size(p)
    }

    /// Counters of the process-wide heap.
    pub fn heap_counts() -> HeapCounts {
        global::heap_counts()
    }

    /// A snapshot of the heap: bytes by state (allocated, active, resident, mapped,
    /// metadata, cached in thread heaps and in the central tier, free), peaks,
    /// operation counts, and per size class live objects, spans and cached objects.
    /// See [`Stats`] for the identities that tie the figures together.
    ///
    /// Costs a walk over every span (every class lock and the page-heap lock are held
    /// in turn, so allocation slow paths wait meanwhile); nothing on the fast path.
    /// Thread-cache figures of other running threads are recent values, not taken at
    /// one instant: exact when the program is quiescent. Never allocates.
    /// In checked mode `requested_bytes` is exact (one more walk of live blocks).
    pub fn stats() -> Stats {
        global::stats()
    }

    /// A snapshot of every chunk, page by page: header, free (resident or purged),
    /// Small span of class N with its live and capacity counts, or Large block; plus
    /// the huge blocks' totals. Stops allocation in other threads while it copies
    /// (it takes every class lock and the page-heap lock) and allocates only before
    /// and after. Objects cached by threads or the central tier count as live. Draw
    /// it with [`HeapMap::write_svg`].
    pub fn heap_map() -> HeapMap {
        heap_map::snapshot(&global::BACKEND)
    }

    /// Takes a [`heap_map`] and writes it to `w` as SVG; returns its totals. The C
    /// library does this at exit with `STRATA_HEAP_MAP=path.svg`, and on request
    /// with `strata_heap_map_write(path)`.
    pub fn write_heap_map(w: &mut impl std::io::Write) -> std::io::Result<HeapMapSummary> {
        let map = heap_map();
        map.write_svg(w)?;
        Ok(map.summary().clone())
    }

    /// Checked mode: the live blocks of the process by size class (count and bytes
    /// requested). Freed blocks waiting in quarantine do not count. Takes every class
    /// lock while it walks the heap.
    #[cfg(feature = "checked")]
    pub fn leak_report() -> LeakReport {
        checked::leak_report()
    }

    /// Checked mode: writes [`leak_report`] to stderr without allocating (what
    /// `STRATA_LEAK_REPORT=1` does at exit) and returns it.
    #[cfg(feature = "checked")]
    pub fn print_leak_report() -> LeakReport {
        checked::print_leak_report()
    }
}
