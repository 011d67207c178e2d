//! Footprint of a small Rust program: resident memory after the first allocation
//! and after a small program's worth of work, with strata or the system allocator
//! as `#[global_allocator]` (the Rust half of `benches/footprint.sh`, which runs it).
//!
//! ```text
//! cargo build --release --example footprint
//! FOOTPRINT_ALLOC=strata target/release/examples/footprint small
//! FOOTPRINT_ALLOC=system target/release/examples/footprint small
//! LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 \
//!     FOOTPRINT_ALLOC=system target/release/examples/footprint small
//! ```
//!
//! Modes as in `benches/footprint/footprint.c`: `first` (one `Box<[u8; 16]>`),
//! `small` (one thread keeps 1,024 `Vec<u8>` of 8 B - 2 KiB, replacing a random one
//! 200,000 times), `threads` (the same work on 4 short-lived threads, 2 at a time).
//! Prints the mode, `VmHWM`, `RssAnon` and `RssFile` in KiB.
//!
//! The global allocator is a dispatcher that reads `FOOTPRINT_ALLOC` with
//! `libc::getenv` (which does not allocate) on its first call and never switches,
//! so every block is freed by the allocator that made it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

static CHOICE: AtomicU8 = AtomicU8::new(0);
const USE_SYSTEM: u8 = 1;
const USE_STRATA: u8 = 2;

struct Dispatch;

impl Dispatch {
    #[inline(always)]
    fn use_strata() -> bool {
        match CHOICE.load(Ordering::Relaxed) {
            USE_STRATA => true,
            USE_SYSTEM => false,
            _ => Self::decide(),
        }
    }

    #[cold]
    fn decide() -> bool {
        // SAFETY: a NUL-terminated name; nothing in this program changes the
        // environment, so `getenv` cannot race with `setenv`.
        let v = unsafe { libc::getenv(c"FOOTPRINT_ALLOC".as_ptr()) };
        // SAFETY: a non-null `getenv` result is a NUL-terminated string that lives
        // as long as the (unmodified) environment.
        let strata = !v.is_null() && unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes() != b"system";
        CHOICE.store(
            if strata { USE_STRATA } else { USE_SYSTEM },
            Ordering::Relaxed,
        );
        strata
    }
}

// SAFETY: every call forwards to one allocator, the same for the whole process
// (fixed at the first call), so each block goes back to the allocator that made it.
unsafe impl GlobalAlloc for Dispatch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if Self::use_strata() {
            // SAFETY: forwarded contract.
            unsafe { strata::Strata.alloc(l) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { System.alloc(l) }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if Self::use_strata() {
            // SAFETY: forwarded contract; `p` came from strata (the choice is fixed).
            unsafe { strata::Strata.dealloc(p, l) }
        } else {
            // SAFETY: as above, from System.
            unsafe { System.dealloc(p, l) }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if Self::use_strata() {
            // SAFETY: forwarded contract.
            unsafe { strata::Strata.realloc(p, l, new) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { System.realloc(p, l, new) }
        }
    }
}

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

fn status_kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The C program's `work`: 1,024 live blocks of 8 B - 2 KiB, mostly small.
fn work(seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut slots: Vec<Vec<u8>> = (0..1024).map(|_| Vec::new()).collect();
    for i in 0..200_000u64 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let k = (s % 1024) as usize;
        let sh = (s >> 16) % 9;
        let size = (8 + ((s >> 24) % (8 << sh)) as usize).min(2048);
        slots[k] = vec![i as u8; size];
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "first".into());
    match mode.as_str() {
        "first" => drop(std::hint::black_box(Box::new([0u8; 16]))),
        "small" => work(1),
        "threads" => {
            for round in 0..2 {
                let t: Vec<_> = (0..2)
                    .map(|i| std::thread::spawn(move || work(round * 2 + i + 1)))
                    .collect();
                t.into_iter().for_each(|t| t.join().unwrap());
            }
        }
        _ => {
            eprintln!("usage: footprint first|small|threads");
            std::process::exit(2);
        }
    }
    println!(
        "{mode} {} {} {}",
        status_kib("VmHWM"),
        status_kib("RssAnon"),
        status_kib("RssFile")
    );
}
