//! What the plain C library does with a `free` or `realloc` of a pointer that is
//! not the start of a live block of ours (the checked build aborts on all of them
//! with its own report).
//!
//! Nothing is ever read through such a pointer and nothing is freed, so the heap
//! stays intact whatever the mode; the mode only chooses whether the program hears
//! of it. Kinds, from the address alone:
//!
//! - **inside strata's heap** (one of its chunks) but not a live block's start: an
//!   interior or misaligned pointer, a header page, or a Large block freed twice.
//!   Certainly a bug.
//! - **on the calling thread's stack**. Certainly a bug.
//! - **anything else**: memory strata never mapped. Under `LD_PRELOAD` that can be
//!   legitimate (blocks the dynamic loader allocated before strata was in place are
//!   freed through strata later), so it is quiet by default.
//!
//! `STRATA_BAD_FREE` chooses: unset, the first two kinds print one `strata:` line
//! on stderr and the program goes on; `warn` prints for every kind; `abort` prints
//! and aborts for every kind (as glibc's `free(): invalid pointer`); `ignore` is
//! silent. At most [`MAX_WARNINGS`] lines are printed, then one saying that further
//! ones are suppressed.

use crate::report::Stderr;
use core::ffi::c_char;
use core::fmt::Write;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

/// Reports printed before the rest are suppressed.
pub const MAX_WARNINGS: u32 = 10;

const DEFAULT: u8 = 0;
const WARN: u8 = 1;
const ABORT: u8 = 2;
const IGNORE: u8 = 3;

/// The mode (`STRATA_BAD_FREE`), set once at load.
static MODE: AtomicU8 = AtomicU8::new(DEFAULT);
/// Reports printed so far.
static WARNINGS: AtomicU32 = AtomicU32::new(0);

/// The operation that met the bad pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Free,
    Realloc,
}

/// Where a bad pointer points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    InHeap,
    OnStack,
    Foreign,
}

/// Reads `STRATA_BAD_FREE` (`warn`, `abort`, `ignore`); an unknown value is
/// reported on stderr and leaves the default.
pub fn configure(value: Option<&[u8]>) {
    let Some(v) = value else { return };
    let mode = match v {
        b"warn" => WARN,
        b"abort" => ABORT,
        b"ignore" => IGNORE,
        _ => {
            let mut w = Stderr::new();
            let _ = w.write_str("strata: STRATA_BAD_FREE must be warn, abort or ignore; got '");
            let _ = w.write_str(core::str::from_utf8(v).unwrap_or("(not UTF-8)"));
            let _ = w
                .write_str("': using the default (report frees inside the heap or on the stack)\n");
            w.flush();
            return;
        }
    };
    // Relaxed: a setting; read by `report` with nothing published alongside.
    MODE.store(mode, Ordering::Relaxed);
}

/// `p` (not null) was given to `op` and is not the start of a live block of ours:
/// reports it as the mode says, and aborts if it says so. `in_heap`: whether `p`
/// lies inside one of strata's chunks (the caller, which owns the heap, asks it).
#[cold]
#[inline(never)]
pub fn report(op: Op, p: *const u8, in_heap: bool) {
    // Relaxed: a setting.
    let mode = MODE.load(Ordering::Relaxed);
    if mode == IGNORE {
        return;
    }
    let kind = classify(p, in_heap);
    if mode == DEFAULT && kind == Kind::Foreign {
        return;
    }
    let what = match kind {
        Kind::InHeap => {
            "inside strata's heap but not the start of a live block (interior, misaligned or already freed)"
        }
        Kind::OnStack => "on the calling thread's stack",
        Kind::Foreign => "not from strata's heap",
    };
    let name = match op {
        Op::Free => "free",
        Op::Realloc => "realloc",
    };
    if mode == ABORT {
        crate::report::die(format_args!(
            "{name}(): invalid pointer {p:p}: {what} (STRATA_BAD_FREE=abort)"
        ));
    }
    // Relaxed: a counter; nothing is published with it.
    let n = WARNINGS.fetch_add(1, Ordering::Relaxed);
    if n > MAX_WARNINGS {
        return;
    }
    let mut w = Stderr::new();
    if n == MAX_WARNINGS {
        let _ = w.write_str("strata: further invalid free()/realloc() reports suppressed\n");
    } else {
        let _ = writeln!(
            w,
            "strata: {name}(): invalid pointer {p:p}: {what}; ignored (STRATA_BAD_FREE=abort|warn|ignore)"
        );
    }
    w.flush();
}

fn classify(p: *const u8, in_heap: bool) -> Kind {
    if in_heap {
        Kind::InHeap
    } else if on_own_stack(p as usize) {
        Kind::OnStack
    } else {
        Kind::Foreign
    }
}

/// Whether `a` lies in the calling thread's stack (as far as the platform can tell
/// without allocating; false if it cannot).
fn on_own_stack(a: usize) -> bool {
    crate::platform::current_stack().is_some_and(|(lo, hi)| lo <= a && a < hi)
}

/// `STRATA_BAD_FREE` from the environment block (for `ffi::configure`).
///
/// # Safety
/// `envp` is null or a valid environment block.
pub unsafe fn configure_from(envp: *const *const c_char) {
    // SAFETY: forwarded contract.
    configure(unsafe { crate::env::getenv_raw(envp, b"STRATA_BAD_FREE") });
}
