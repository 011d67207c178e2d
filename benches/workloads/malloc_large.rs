//! malloc-large-like (mimalloc-bench's malloc-large): a single thread keeps 20
//! slots of large buffers; each operation allocates a new buffer of 5-25 MiB
//! (uniform) and then frees the one in a random slot, which the new one takes. A new
//! buffer is cleared whole, as the original's `make_unique<char[]>` does (so the
//! memset, and the faults of fresh pages, are part of the figure), then a word of
//! every 4 KiB page is stamped, and checked before the buffer is freed. The figure
//! is allocations per second.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::common::{Rng, corrupt, count_verified};

const SLOTS: usize = 20;
const MIN: usize = 5 << 20;
const MAX: usize = 25 << 20;
const PAGE: usize = 4096;
const WHAT: &str = "malloc-large";

struct Buffer {
    ptr: NonNull<u8>,
    size: usize,
}

impl Buffer {
    fn word(&self, page: usize) -> u64 {
        (self.ptr.as_ptr() as u64 ^ self.size as u64).wrapping_add(page as u64)
    }

    fn new(size: usize) -> Buffer {
        // SAFETY: plain C allocation, checked for null below.
        let p = unsafe { libc::malloc(size) }.cast::<u8>();
        let Some(ptr) = NonNull::new(p) else {
            eprintln!("malloc of {size} bytes failed");
            std::process::exit(crate::common::EXIT_VERIFY)
        };
        let b = Buffer { ptr, size };
        // `make_unique<char[]>(size)` value-initialises: operator new (`malloc`),
        // then a memset of the whole buffer, which is part of the figure.
        // SAFETY: `size` bytes of the live buffer.
        unsafe { p.write_bytes(0, size) };
        for page in 0..size.div_ceil(PAGE) {
            let off = (page * PAGE).min(size - 8);
            // SAFETY: `off + 8 <= size`, inside the live buffer.
            unsafe { p.add(off).cast::<u64>().write_unaligned(b.word(page)) };
        }
        b
    }

    fn free(self) {
        let p = self.ptr.as_ptr();
        for page in 0..self.size.div_ceil(PAGE) {
            let off = (page * PAGE).min(self.size - 8);
            // SAFETY: as in `new`.
            let w = unsafe { p.add(off).cast::<u64>().read_unaligned() };
            if w != self.word(page) {
                corrupt(WHAT, p, self.size, w, self.word(page));
            }
        }
        count_verified();
        // SAFETY: the buffer came from `malloc` and this is its only handle.
        unsafe { libc::free(p.cast()) };
    }
}

pub fn run(_threads: usize, dur: Duration) -> (u64, Duration) {
    let mut rng = Rng::new(42);
    let mut slots: Vec<Option<Buffer>> = (0..SLOTS).map(|_| None).collect();
    let mut ops = 0;
    let start = Instant::now();
    while start.elapsed() < dur {
        for _ in 0..4 {
            // As `buffers[i] = make_unique<char[]>(n)`: the new buffer is
            // allocated before the old one is freed.
            let i = rng.below(SLOTS);
            let fresh = Buffer::new(rng.range(MIN, MAX));
            if let Some(old) = slots[i].replace(fresh) {
                old.free();
            }
            ops += 1;
        }
    }
    let elapsed = start.elapsed();
    for b in slots.into_iter().flatten() {
        b.free();
    }
    (ops, elapsed)
}
