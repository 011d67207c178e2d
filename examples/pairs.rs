//! Fixed single-threaded workload for instruction counting: N malloc+free
//! pairs through `GlobalAlloc`, on a ring of 1,024 live blocks of 8-512 bytes.
//!
//! ```text
//! pairs <strata|system|harness> [N]      (N defaults to 1_000_000)
//! ```
//!
//! `harness` uses a no-op allocator, which measures the loop's own overhead
//! (ring bookkeeping, size lookup, the one-byte touch) so that it can be
//! subtracted. After a warm-up of 100,000 pairs, the N measured pairs run
//! inside `measured_loop`, so callgrind can count only them:
//!
//! ```text
//! cargo build --release --example pairs
//! valgrind --tool=callgrind --toggle-collect='*measured_loop*' \
//!     --callgrind-out-file=callgrind.pairs.strata \
//!     target/release/examples/pairs strata 1000000
//! grep -E '^(summary|totals):' callgrind.pairs.strata   # total Ir
//! ```
//!
//! Instructions per pair = total Ir / N. `examples/callgrind_pairs.sh` does all
//! of this for strata, the system allocator, mimalloc (system under
//! `LD_PRELOAD`, if installed) and the harness.

use std::alloc::{GlobalAlloc, Layout, System, handle_alloc_error};
use std::cell::UnsafeCell;
use std::hint::black_box;
use std::process::ExitCode;

const RING: usize = 1024;
const SIZES: usize = 1 << 12;
const MIN_SIZE: usize = 8;
const MAX_SIZE: usize = 512;
const ALIGN: usize = 8;
const WARMUP: usize = 100_000;
const DEFAULT_N: usize = 1_000_000;

/// Allocator that hands out the same static buffer every time: measures the
/// harness without any allocator work.
struct Noop;

#[repr(C, align(64))]
struct Scratch(UnsafeCell<[u8; MAX_SIZE]>);

// SAFETY: only the single benchmark thread writes to the buffer, and only
// single bytes through raw pointers.
unsafe impl Sync for Scratch {}

static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; MAX_SIZE]));

// SAFETY: returns a pointer valid for `MAX_SIZE` bytes aligned to 64, which
// covers every layout this program uses (checked by the assertion); blocks may
// alias each other, which is fine because they are only written one byte at a
// time and never read.
unsafe impl GlobalAlloc for Noop {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        debug_assert!(layout.size() <= MAX_SIZE && layout.align() <= 64);
        SCRATCH.0.get().cast()
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

struct Ring {
    slots: Box<[(*mut u8, usize); RING]>,
    sizes: Box<[usize; SIZES]>,
    next: usize,
}

impl Ring {
    fn new<A: GlobalAlloc>(alloc: &A) -> Ring {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut sizes = Box::new([0; SIZES]);
        for s in sizes.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *s = MIN_SIZE + (x % (MAX_SIZE - MIN_SIZE + 1) as u64) as usize;
        }
        let mut ring = Ring {
            slots: Box::new([(std::ptr::null_mut(), 0); RING]),
            sizes,
            next: 0,
        };
        for i in 0..RING {
            let size = ring.sizes[i];
            ring.slots[i] = (alloc_touch(alloc, size), size);
        }
        ring.next = RING;
        ring
    }

    /// One pair: free the block in the current slot, allocate the next size.
    #[inline(always)]
    fn pair<A: GlobalAlloc>(&mut self, alloc: &A) {
        let i = self.next % RING;
        let (old, old_size) = self.slots[i];
        // SAFETY: `old` is a live block from `alloc` with this layout; the
        // slot is overwritten right below, so it is freed exactly once.
        unsafe { alloc.dealloc(old, layout(old_size)) };
        let size = self.sizes[self.next % SIZES];
        self.next = self.next.wrapping_add(1);
        self.slots[i] = (alloc_touch(alloc, size), size);
    }

    fn free<A: GlobalAlloc>(self, alloc: &A) {
        for &(p, size) in self.slots.iter() {
            // SAFETY: every slot holds a live block from `alloc`.
            unsafe { alloc.dealloc(p, layout(size)) };
        }
    }
}

#[inline(always)]
fn layout(size: usize) -> Layout {
    // SAFETY: ALIGN is a power of two and `size <= MAX_SIZE` cannot overflow
    // when rounded up to it.
    unsafe { Layout::from_size_align_unchecked(size, ALIGN) }
}

#[inline(always)]
fn alloc_touch<A: GlobalAlloc>(alloc: &A, size: usize) -> *mut u8 {
    let l = layout(size);
    // SAFETY: `size >= MIN_SIZE > 0`.
    let p = unsafe { alloc.alloc(l) };
    if p.is_null() {
        handle_alloc_error(l);
    }
    // SAFETY: `p` is valid for `size >= 1` bytes.
    unsafe { p.write_volatile(size as u8) };
    p
}

/// Not the same code as `measured_loop` (the `black_box`), so that rustc's
/// function merging cannot fold the two into one symbol.
#[inline(never)]
fn warmup_loop<A: GlobalAlloc>(alloc: &A, ring: &mut Ring, n: usize) {
    for k in 0..n {
        ring.pair(alloc);
        black_box(k);
    }
}

/// The loop callgrind measures (`--toggle-collect='*measured_loop*'`).
#[inline(never)]
fn measured_loop<A: GlobalAlloc>(alloc: &A, ring: &mut Ring, n: usize) {
    for _ in 0..n {
        ring.pair(alloc);
    }
}

fn run<A: GlobalAlloc>(alloc: &A, n: usize) -> usize {
    let mut ring = Ring::new(alloc);
    warmup_loop(alloc, &mut ring, black_box(WARMUP));
    measured_loop(alloc, &mut ring, black_box(n));
    let done = ring.next - RING;
    ring.free(alloc);
    done
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let n = match args.get(2).map(|s| s.replace('_', "").parse::<usize>()) {
        None => DEFAULT_N,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("pairs: N must be a non-negative integer");
            return ExitCode::from(2);
        }
    };
    let done = match args.get(1).map(String::as_str) {
        Some("strata") => run(&strata::Strata, n),
        Some("system") => run(&System, n),
        Some("harness") => run(&Noop, n),
        _ => {
            eprintln!("usage: pairs <strata|system|harness> [N]");
            return ExitCode::from(2);
        }
    };
    println!(
        "pairs: {} {} measured pairs (+{WARMUP} warm-up)",
        args[1],
        done - WARMUP
    );
    ExitCode::SUCCESS
}
