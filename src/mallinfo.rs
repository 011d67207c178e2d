//! glibc's introspection and tuning calls, answered from strata's own figures:
//! `mallinfo2`, `mallinfo`, `malloc_stats`, `malloc_info` and `mallopt`.
//!
//! Without these exports a program under `LD_PRELOAD` reaches glibc's versions,
//! which describe glibc's idle arena (0 bytes in use whatever strata holds) and
//! accept every `mallopt` parameter while nothing changes.
//!
//! `mallinfo2` fields (all bytes except the counts), from one [`crate::stats`]
//! snapshot; `uordblks + fordblks == arena` and `uordblks + hblkhd` is the bytes
//! allocated, as with glibc:
//!
//! | field | strata's meaning |
//! | --- | --- |
//! | `arena` | bytes of the 4 MiB chunks that small and Large blocks are carved from |
//! | `ordblks` | 0: free page runs are not counted one by one |
//! | `smblks` | free small blocks cached for reuse (thread caches and central batches) |
//! | `hblks`, `hblkhd` | huge blocks (own mappings, over 1 MiB) and their bytes |
//! | `usmblks` | 0 (as in glibc) |
//! | `fsmblks` | bytes of the cached small blocks counted in `smblks` |
//! | `uordblks` | bytes allocated in chunks: live small blocks (class size) and Large blocks |
//! | `fordblks` | `arena - uordblks`: chunk headers, free pages, cached and unused slots |
//! | `keepcost` | free pages still resident, which `malloc_trim(0)` gives back now |
//!
//! `mallopt` honours strata's own parameters (`STRATA_M_*` in `include/strata.h`)
//! and returns 0, changing nothing, for glibc's (`M_ARENA_MAX`, `M_MMAP_THRESHOLD`,
//! `M_TRIM_THRESHOLD`, ...): none of them describes a knob strata has.

use crate::Stats;
use crate::report::{Buffered, Sink};
use core::ffi::{c_int, c_void};
use core::fmt::{self, Write};

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MallInfo2 {
    pub arena: usize,
    pub ordblks: usize,
    pub smblks: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    pub uordblks: usize,
    pub fordblks: usize,
    pub keepcost: usize,
}

/// glibc's `struct mallinfo` (the same fields as `int`; values that do not fit
/// read as `INT_MAX`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MallInfo {
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

/// `mallopt` parameter: the purge delay in milliseconds (`set_purge_delay_ms`).
pub const STRATA_M_PURGE_DELAY_MS: c_int = -201;
/// `mallopt` parameter: the byte budget of thread caches created from now on, and
/// of the calling thread's (`set_thread_cache_budget`).
pub const STRATA_M_THREAD_CACHE_BYTES: c_int = -202;
/// `mallopt` parameter: the byte budget of the cache of freed huge mappings
/// (`set_huge_cache_bytes`).
pub const STRATA_M_HUGE_CACHE_BYTES: c_int = -203;
/// `mallopt` parameter: the bytes all thread caches together may borrow beyond
/// their own budgets (`set_thread_cache_pool_bytes`).
pub const STRATA_M_THREAD_CACHE_POOL_BYTES: c_int = -204;

fn info_of(s: &Stats) -> MallInfo2 {
    let arena = s.chunks * crate::internals::CHUNK_SIZE as u64;
    let in_chunks = s.allocated_bytes - s.huge_bytes;
    let cached: u64 = s
        .classes
        .iter()
        .map(|c| c.thread_cached + c.central_cached)
        .sum();
    let z = |v: u64| v as usize;
    MallInfo2 {
        arena: z(arena),
        ordblks: 0,
        smblks: z(cached),
        hblks: z(s.huge_blocks),
        hblkhd: z(s.huge_bytes),
        usmblks: 0,
        fsmblks: z(s.thread_cached_bytes + s.central_cached_bytes),
        uordblks: z(in_chunks),
        fordblks: z(arena.saturating_sub(in_chunks)),
        keepcost: z(s.page_free_bytes - s.page_purged_bytes),
    }
}

/// glibc's `mallinfo2()`: strata's figures (see the module's table).
///
/// # Safety
/// Callable from C at any time (not from a signal handler: it takes locks).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallinfo2() -> MallInfo2 {
    info_of(&crate::stats())
}

/// glibc's `mallinfo()`: `mallinfo2()` in `int`s, saturating at `INT_MAX`.
///
/// # Safety
/// As for `mallinfo2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallinfo() -> MallInfo {
    let m = info_of(&crate::stats());
    let i = |v: usize| v.min(c_int::MAX as usize) as c_int;
    MallInfo {
        arena: i(m.arena),
        ordblks: i(m.ordblks),
        smblks: i(m.smblks),
        hblks: i(m.hblks),
        hblkhd: i(m.hblkhd),
        usmblks: i(m.usmblks),
        fsmblks: i(m.fsmblks),
        uordblks: i(m.uordblks),
        fordblks: i(m.fordblks),
        keepcost: i(m.keepcost),
    }
}

/// glibc's `malloc_stats()`: prints strata's statistics table to stderr (as
/// `strata_stats_print`).
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_stats() {
    // SAFETY: callable at any time.
    unsafe { crate::ffi::strata_stats_print() }
}

/// glibc's `mallopt(param, value)`: 1 if strata honours `param` and took `value`,
/// else 0 (see the module doc). Values must be non-negative.
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    if value < 0 {
        return 0;
    }
    let v = value as usize;
    match param {
        STRATA_M_PURGE_DELAY_MS => crate::set_purge_delay_ms(v as u64),
        STRATA_M_THREAD_CACHE_BYTES => crate::set_thread_cache_budget(v),
        STRATA_M_HUGE_CACHE_BYTES => crate::set_huge_cache_bytes(v),
        STRATA_M_THREAD_CACHE_POOL_BYTES => crate::set_thread_cache_pool_bytes(v),
        _ => return 0,
    }
    1
}

/// A C `FILE *`, written with `fwrite`; remembers a short write.
struct File {
    fp: *mut c_void,
    failed: bool,
}

impl Sink for File {
    fn put(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // SAFETY: `fp` is the caller's open stream (malloc_info's contract).
        let n = unsafe { crate::platform::file_write(self.fp, bytes) };
        self.failed |= n != bytes.len();
    }
}

/// The `malloc_info` document.
fn write_info(w: &mut impl Write, s: &Stats) -> fmt::Result {
    writeln!(w, "<malloc version=\"strata-1\">")?;
    writeln!(w, "<sizes>")?;
    for c in s.classes.iter().filter(|c| c.spans > 0 || c.allocs > 0) {
        writeln!(
            w,
            "<size class_size=\"{}\" live=\"{}\" thread_cached=\"{}\" central_cached=\"{}\" spans=\"{}\" span_bytes=\"{}\"/>",
            c.size, c.live_objects, c.thread_cached, c.central_cached, c.spans, c.span_bytes
        )?;
    }
    writeln!(w, "</sizes>")?;
    let totals: [(&str, u64); 10] = [
        ("allocated", s.allocated_bytes),
        ("active", s.active_bytes),
        ("metadata", s.metadata_bytes),
        ("thread_cached", s.thread_cached_bytes),
        ("central_cached", s.central_cached_bytes),
        ("span_free", s.span_free_bytes),
        ("page_free", s.page_free_bytes),
        ("page_purged", s.page_purged_bytes),
        ("huge_cached", s.huge_cached_bytes),
        ("purged_ever", s.purged_bytes_total),
    ];
    for (name, bytes) in totals {
        writeln!(w, "<total type=\"{name}\" size=\"{bytes}\"/>")?;
    }
    writeln!(
        w,
        "<total type=\"large\" count=\"{}\" size=\"{}\"/>",
        s.large_blocks, s.large_bytes
    )?;
    writeln!(
        w,
        "<total type=\"huge\" count=\"{}\" size=\"{}\"/>",
        s.huge_blocks, s.huge_bytes
    )?;
    writeln!(
        w,
        "<system type=\"current\" size=\"{}\"/>",
        s.resident_bytes
    )?;
    writeln!(
        w,
        "<system type=\"max\" size=\"{}\"/>",
        s.peak_resident_bytes
    )?;
    writeln!(w, "<aspace type=\"total\" size=\"{}\"/>", s.mapped_bytes)?;
    writeln!(w, "</malloc>")
}

/// glibc's `malloc_info(options, fp)`: writes strata's statistics to `fp` as XML
/// (`<malloc version="strata-1">`: per size class, totals in bytes, resident
/// (`system current`), peak resident (`system max`) and mapped (`aspace total`)).
/// Returns 0; `EINVAL` if `options` is not 0 (as glibc) or `fp` is null; `EIO`
/// if the stream refused a write.
///
/// # Safety
/// `fp` is null or an open `FILE *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut c_void) -> c_int {
    if options != 0 || fp.is_null() {
        return crate::platform::EINVAL;
    }
    let s = crate::stats();
    let mut out = Buffered::to(File { fp, failed: false });
    let r = write_info(&mut out, &s);
    out.flush();
    if r.is_err() || out.sink.failed {
        crate::platform::EIO
    } else {
        0
    }
}
