//! strata: a thread-caching, concurrent memory allocator in pure Rust, for heavily
//! multithreaded servers.
//!
//! ```sh
//! cargo add strata-alloc
//! ```
//!
//! The package is `strata-alloc`; the library is `strata`. Make it the program's
//! allocator:
//!
//! ```
//! #[global_allocator]
//! static A: strata::Strata = strata::Strata;
//! ```
//!
//! Each thread allocates from its own cache, with no atomics on the fast path;
//! caches exchange whole batches of objects through lock-free per-size-class
//! stacks; a page heap behind them coalesces free pages and gives memory back to the
//! OS after a delay (1 s by default). Requests up to 256 KiB are served from the
//! thread cache, up to 1 MiB from page spans, and larger ones get a mapping of
//! their own, with a small cache of freed ones. The same allocator is also built as
//! a C library, `libstrata.so`, a drop-in `malloc` for `LD_PRELOAD`, from the
//! `capi/` crate of the repository.
//!
//! # Cargo features
//!
//! - `harden` (default): free-list links are stored encoded and checked wherever
//!   they are followed, so a write over a free block aborts instead of steering the
//!   allocator, and a double free of a block still in the freeing thread's cache
//!   aborts. A few instructions per allocation; `default-features = false` drops it.
//! - `std` (default): links std, for `write_heap_map` (to an `std::io::Write`),
//!   the lock-order check of debug builds and the thread slot on targets other
//!   than x86-64 Linux. Without it the crate is `no_std` (`core` and `alloc`): the
//!   C library builds it so, which keeps std's code out of `libstrata.so`.
//! - `c-abi`: exports `malloc`, `free` and the rest of the C allocation API. A Rust
//!   binary built with it replaces `malloc` for the whole process; normally only the
//!   C library turns it on.
//! - `checked`: checked mode, for finding heap bugs: canaries, exact sizes, pointer
//!   validation, a quarantine of freed blocks and a leak report (`leak_report`,
//!   `print_leak_report`); misuse aborts with a one-line report. It changes
//!   [`Strata`], [`validate_heap`] and [`usable_size`], and sets [`CHECKED`].
//!
//! # Platform support
//!
//! Linux only. Tested on x86-64 Linux with glibc. aarch64 Linux and x86-64 Linux
//! with musl should build (they use a portable thread-local slot) but are not
//! tested. Other operating systems are not supported: the build stops with a
//! `compile_error!` naming what a platform file must define.
//!
//! # Main functions
//!
//! - [`stats`]: a snapshot of the heap ([`Stats`], printable as a table or JSON);
//!   [`gauges`]: its main byte figures without a lock, for metrics ([`Gauges`]).
//! - [`release_memory`]: flush the calling thread's cache (and those of threads
//!   asleep at the moment) and return every free page to the OS now;
//!   [`flush_thread_cache`] only flushes the calling thread's cache.
//! - [`set_thread_cache_budget`], [`set_purge_delay_ms`], [`set_huge_cache_bytes`]:
//!   tune the cache budget, the purge delay and the cache of freed huge blocks.
//! - [`set_thread_cache_pool_bytes`]: the room all thread caches together may borrow
//!   beyond their own budgets.
//! - [`set_placement`], [`placement`]: the page heap's placement policy (best, first
//!   or next fit; [`Placement`]).
//! - [`start_background_purge`], [`stop_background_purge`], [`background_purge`]: a
//!   thread that returns idle memory while the program sleeps (starts on its own once
//!   the heap reaches 64 MiB).
//! - [`heap_map`], [`write_heap_map`]: every chunk page by page, drawn as SVG.
//! - [`validate_heap`]: check every invariant of the heap.
//! - [`usable_size`]: the usable size of a block, found by address.
//!
//! # More
//!
//! The repository's `README.md` covers the C library, environment variables and
//! known limits; `docs/DESIGN.md` the design, `docs/ARCHITECTURE.md` the module
//! layering, `docs/CORRECTNESS.md` how it is tested, `docs/CHECKED_MODE.md` checked
//! mode, `docs/STATISTICS.md` the statistics and heap map, and `BENCHMARKS.md` the
//! measurements.

#![warn(missing_docs)]
// Without the `std` feature (the C library's build) the crate uses `core` and
// `alloc` only; tests and loom models always have std.
#![cfg_attr(not(any(feature = "std", test, strata_loom)), no_std)]
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
/// through `platform::internal_error` and aborts; release builds check nothing.
/// It never panics, so nothing unwinds out of `GlobalAlloc` or the C entry
/// points. Under loom (no stderr reporter) it fails the model with a panic.
/// Defined before the modules so that all of them see it.
macro_rules! debug_check {
    ($cond:expr, $what:literal $(,)?) => {
        #[cfg(not(strata_loom))]
        {
            if cfg!(debug_assertions) && !$cond {
                $crate::platform::internal_error($what, file!(), line!());
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
/// (a string literal: nothing is formatted) through `platform::internal_error` and
/// aborts, in every build. Under loom it fails the model with a panic.
macro_rules! fatal {
    ($what:literal $(,)?) => {{
        #[cfg(not(strata_loom))]
        {
            $crate::platform::internal_error($what, file!(), line!())
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

extern crate alloc;

mod sync;

mod backend;
mod central;
mod check;
mod chunk;
mod front;
mod huge;
mod link;
mod meta;
mod os;
mod page_heap;
mod platform;
mod size_class;
mod stats;
mod transfer;

/// The tiers as plain values, for loom models, benchmarks and white-box tests. Not a
/// stable API.
#[doc(hidden)]
pub mod internals {
    /// The backend alone (the shared tiers below the front end).
    pub use crate::backend::Backend as SharedTiers;
    pub use crate::backend::{CachePool, DEFAULT_CACHE_POOL, Locks, Route, route};
    pub use crate::central::{Batch, Central};
    pub use crate::chunk::{ChunkHeader, HEADER_PAGES, SPAN_ZEROED, Span, SpanKind, USABLE_PAGES};
    /// One allocator instance (front end over the shared tiers), under the name the
    /// models and tests use; it derefs to [`SharedTiers`].
    pub use crate::front::Allocator as Backend;
    pub use crate::front::thread_cache::{DEFAULT_CACHE_BUDGET, HeapState, ThreadHeap};
    pub use crate::front::{Allocator, FrontEnd};
    pub use crate::huge::{CACHE_SLOTS, HugeRegistry};
    pub use crate::link::FreeObj;
    pub use crate::meta::MetaArena;
    pub use crate::os::{OS_PAGE, Os, OsError, SysOs};
    pub use crate::page_heap::{CHUNK_RESERVE, DEFAULT_PURGE_DELAY_MS, PageHeap, PageHeapStats};
    pub use crate::platform::page_size;
    pub use crate::size_class::*;
    pub use crate::transfer::{ArrayDesc, BatchDesc, DESC_SLOTS, DescPool, NIL, TransferStack};
}

#[cfg(all(feature = "c-abi", not(feature = "checked"), not(strata_loom)))]
mod bad_free;
#[cfg(all(feature = "checked", not(strata_loom)))]
mod checked;
// Pure parsing with no imports: every build, the loom one included (the platform
// layer reads `STRATA_TEST_PAGE_SIZE` with it).
#[cfg_attr(strata_loom, allow(dead_code, unused_macros, unused_imports))]
mod env;
#[cfg(all(feature = "c-abi", not(strata_loom)))]
mod ffi;
#[cfg(not(strata_loom))]
mod global;
#[cfg(not(strata_loom))]
mod heap_map;
#[cfg(all(feature = "c-abi", not(strata_loom)))]
mod mallinfo;
/// The per-CPU (rseq) front end's machinery (the front end serves the threads
/// beyond the first `STRATA_PERCPU_AFTER`, or all with `STRATA_PERCPU=1`); public
/// for tests and benchmarks only. Not a stable API.
/// Under loom, the slab alone (loom-tests/tests/percpu_handoff.rs).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[doc(hidden)]
pub mod percpu;
#[cfg(not(strata_loom))]
mod purge_thread;
#[cfg(not(strata_loom))]
mod report;
// The C library's build without std: panic handler and global allocator.
#[cfg(all(feature = "c-abi", not(any(feature = "std", test, strata_loom))))]
mod runtime;
#[cfg(not(strata_loom))]
mod settings;
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

#[cfg(not(strata_loom))]
pub use api::*;
pub use page_heap::{Placement, PlacementError};
pub use stats::{ClassStats, Gauges, Stats};

#[cfg(all(feature = "checked", not(strata_loom)))]
pub use checked::{LeakCount, LeakMark, LeakReport};

#[cfg(not(strata_loom))]
pub use heap_map::{HeapMap, HeapMapChunk, HeapMapClass, HeapMapSpan, HeapMapSummary, PageState};
#[cfg(not(strata_loom))]
pub use purge_thread::BackgroundPurge;

#[cfg(not(strata_loom))]
mod api {
    use super::*;

    /// Flushes the calling thread's cache, moves every central batch back to its
    /// spans, purges every free page, unmaps every wholly free chunk and every
    /// cached huge mapping, now. Other threads' caches are drained where those
    /// threads sleep in the kernel at the moment (x86-64 Linux: all but two
    /// objects a size class, as the background purge thread does with threads
    /// idle for a purge delay); a running thread's cache is left alone.
    ///
    /// Returns the bytes given back to the OS: the fall of [`Gauges::resident_bytes`]
    /// (less the metadata arena, which is never returned) across the call. So every
    /// purge and unmap counts, the ones that the flush and drain trigger on their
    /// own included, and each page once (a page purged before and purged again, or
    /// unmapped with its chunk, does not count twice). Exact when no other thread
    /// allocates or frees meanwhile; otherwise their changes to the resident bytes
    /// count too (never below zero).
    pub fn release_memory() -> usize {
        let before = global::resident_bytes();
        #[cfg(feature = "checked")]
        checked::drain_quarantine();
        global::release_memory();
        before.saturating_sub(global::resident_bytes())
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
        global::validate_heap()?;
        #[cfg(feature = "checked")]
        checked::validate_blocks()?;
        Ok(())
    }

    /// Sets the byte budget of thread caches: now for the calling thread, and for
    /// every thread that starts later (default 2 MiB). It is each cache's own room; a
    /// cache whose working set overflows it borrows more from a process-wide pool
    /// ([`set_thread_cache_pool_bytes`]), up to 3 times this budget more.
    pub fn set_thread_cache_budget(bytes: usize) {
        global::set_thread_cache_budget(bytes)
    }

    /// Sets the bytes all thread caches together may borrow beyond their own budgets
    /// (default 32 MiB; 0: none, each cache keeps to its own budget). Lowered below
    /// what is lent, caches give back at their next shrink or exit.
    pub fn set_thread_cache_pool_bytes(bytes: usize) {
        global::set_thread_cache_pool_bytes(bytes)
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
    /// of size classes and the per-CPU caches of CPUs that no thread touched since
    /// its last pass back to their spans, so that a program that goes idle gives
    /// that memory back without calling [`release_memory`]. It also drains the
    /// cache of a thread that left it unused for the purge delay and sleeps in
    /// the kernel (x86-64 Linux; two objects a size class stay; the thread finds
    /// out at its next slow path). Without this call it starts on its own the first time the
    /// heap's mapped bytes reach 64 MiB (unless `STRATA_BACKGROUND_PURGE=0` or
    /// [`stop_background_purge`] said no); a forked child starts without it.
    /// Returns whether it runs (false only if the OS refused a thread).
    pub fn start_background_purge() -> bool {
        purge_thread::start()
    }

    /// Stops the background purge thread (it exits within a second), and keeps it
    /// from starting on its own later. Returns whether it was running.
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

    /// Chooses the page heap's placement policy (which free pages a new span takes;
    /// see [`Placement`]), as `STRATA_PLACEMENT` does at start-up. Call it early in
    /// `main`: once the heap is in use (it has freed pages or mapped a second
    /// chunk, so that its layout may show the policy in force) the policy stays and
    /// this returns an error; choosing the policy in force is never one. The Rust
    /// runtime's few allocations before `main` leave the heap as every policy would.
    pub fn set_placement(p: Placement) -> Result<(), PlacementError> {
        global::set_placement(p)
    }

    /// The page heap's placement policy in force.
    pub fn placement() -> Placement {
        global::placement()
    }

    /// The usable size of a block that strata handed out, found by address; None if
    /// `p` is not the start of a live block of ours (it is never read through).
    /// In checked mode: exactly the size that was requested, read from the block's
    /// trailer (only for a pointer that lies in our memory).
    pub fn usable_size(p: *const u8) -> Option<usize> {
        #[cfg(feature = "checked")]
        return checked::usable_size(p);
        #[cfg(not(feature = "checked"))]
        global::usable_size(p)
    }

    /// Sets the budget of the per-CPU front end (`STRATA_PERCPU=1`): the bytes its
    /// caches may hold on all CPUs together (0: the default, 2 MiB a CPU). Each
    /// class's capacity on each CPU grows with that CPU's misses while its share
    /// allows, and the background purge thread narrows classes that stopped moving
    /// (and, after a lower budget, every class over it). Also `STRATA_PERCPU_CACHE_BYTES`.
    /// No effect with the thread-cache front end ([`set_thread_cache_budget`]).
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    pub fn set_percpu_cache_bytes(bytes: usize) {
        global::set_percpu_cache_bytes(bytes)
    }

    /// The per-CPU front end's counters (`STRATA_PERCPU=1`); None while it does
    /// not serve this process. Not a stable API.
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    #[doc(hidden)]
    pub fn percpu_front_counters() -> Option<percpu::FrontCounters> {
        global::percpu_front_counters()
    }

    /// The heap's main byte figures (allocated, resident, mapped, their peaks) in a
    /// few relaxed loads: no lock, no walk, no allocation, so that a metrics
    /// endpoint may read them as often as it likes (jemalloc's `stats.allocated`
    /// and `stats.resident` without the `epoch` refresh). Called gauges, as a
    /// metrics system would: levels that rise and fall, read as they are now, where
    /// [`stats`] is the full, consistent snapshot. See [`Gauges`] for how each
    /// figure relates to [`Stats`].
    pub fn gauges() -> Gauges {
        global::gauges()
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
        #[allow(unused_mut)]
        let mut s = global::stats();
        #[cfg(feature = "checked")]
        {
            s.requested_bytes = Some(checked::leak_report().total().bytes as u64);
        }
        s
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
    #[cfg(any(feature = "std", test))]
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

    /// Checked mode: marks this point of the run for [`leak_report_since`]. Blocks
    /// allocated or reallocated from now on carry the new mark's generation (8
    /// bits: up to 255 later marks can be told apart from it).
    #[cfg(feature = "checked")]
    pub fn leak_mark() -> LeakMark {
        checked::leak_mark()
    }

    /// Checked mode: the blocks allocated (or reallocated) since `mark` that are
    /// still live, by size class: what a phase of the program left behind, without
    /// the blocks the runtime or earlier phases keep. Exact if fewer than 256 marks
    /// were taken after `mark`.
    #[cfg(feature = "checked")]
    pub fn leak_report_since(mark: LeakMark) -> LeakReport {
        checked::leak_report_since(mark)
    }

    /// Checked mode: writes [`leak_report`] to stderr without allocating (what
    /// `STRATA_LEAK_REPORT=1` does at exit) and returns it.
    #[cfg(feature = "checked")]
    pub fn print_leak_report() -> LeakReport {
        checked::print_leak_report()
    }
}
