#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

// After 512 MiB of small objects, allocated on 4 threads and freed on other
// threads, `strata::release_memory()` must give (almost) all of it back to the
// OS. This binary holds a single test so that nothing else in the process
// perturbs the RSS measurements.

use std::alloc::{GlobalAlloc, Layout};
use std::panic;
use std::sync::{Barrier, Mutex};
use std::thread;

const MIB: usize = 1 << 20;
const THREADS: usize = 4;
const BYTES_PER_THREAD: usize = 512 * MIB / THREADS;

/// Position-dependent byte pattern: byte `i` of a block seeded with `seed` is
/// byte `i % 8` (little-endian) of `word(seed, i / 8)`. Blocks are filled and
/// checked a machine word at a time so that hundreds of MiB stay cheap.
mod pattern {
    #[inline]
    pub fn word(seed: u64, w: u64) -> u64 {
        let mut x = seed ^ w.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        x = (x ^ (x >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        x ^ (x >> 32)
    }

    #[inline]
    pub fn byte(seed: u64, off: usize) -> u8 {
        (word(seed, (off / 8) as u64) >> (8 * (off % 8))) as u8
    }

    /// The 8 pattern bytes starting at byte offset `off`, as a native-endian word.
    #[inline]
    fn word_at(seed: u64, off: usize) -> u64 {
        let (w, r) = ((off / 8) as u64, (off % 8) as u32);
        let v = if r == 0 {
            word(seed, w)
        } else {
            (word(seed, w) >> (8 * r)) | (word(seed, w + 1) << (64 - 8 * r))
        };
        v.to_le()
    }

    /// Fills `buf`, which holds pattern offsets `base..base + buf.len()`.
    pub fn fill_from(buf: &mut [u8], seed: u64, base: usize) {
        // SAFETY: every bit pattern is a valid `u8` and a valid `u64`.
        let (pre, mid, post) = unsafe { buf.align_to_mut::<u64>() };
        let mut off = base;
        for b in pre {
            *b = byte(seed, off);
            off += 1;
        }
        for w in mid {
            *w = word_at(seed, off);
            off += 8;
        }
        for b in post {
            *b = byte(seed, off);
            off += 1;
        }
    }

    pub fn fill(buf: &mut [u8], seed: u64) {
        fill_from(buf, seed, 0);
    }

    /// Offset (relative to `buf`) of the first byte that differs from the pattern.
    pub fn first_mismatch(buf: &[u8], seed: u64, base: usize) -> Option<usize> {
        // SAFETY: every bit pattern is a valid `u8` and a valid `u64`.
        let (pre, mid, post) = unsafe { buf.align_to::<u64>() };
        let mut off = base;
        for &b in pre {
            if b != byte(seed, off) {
                return Some(off - base);
            }
            off += 1;
        }
        for &w in mid {
            if w != word_at(seed, off) {
                return (off..off + 8)
                    .find(|&o| buf[o - base] != byte(seed, o))
                    .map(|o| o - base);
            }
            off += 8;
        }
        for &b in post {
            if b != byte(seed, off) {
                return Some(off - base);
            }
            off += 1;
        }
        None
    }

    #[track_caller]
    pub fn check_from(buf: &[u8], seed: u64, base: usize, what: &str) {
        if let Some(i) = first_mismatch(buf, seed, base) {
            panic!(
                "{what}: pattern mismatch at byte {} of {} (expected {:#04x}, found {:#04x})",
                base + i,
                base + buf.len(),
                byte(seed, base + i),
                buf[i]
            );
        }
    }

    #[track_caller]
    pub fn check(buf: &[u8], seed: u64, what: &str) {
        check_from(buf, seed, 0, what);
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(pattern::word(seed, 0x5EED) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Small object size in 16..=1024.
    fn small_size(&mut self) -> usize {
        16 + (self.next() % 1009) as usize
    }
}

/// Resident set size in bytes: second field of /proc/self/statm, in pages of
/// 4096 bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("parse /proc/self/statm");
    pages * 4096
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / MIB as f64
}

fn block_seed(thread: usize, index: usize) -> u64 {
    pattern::word(thread as u64, index as u64)
}

/// Allocates small blocks totalling `BYTES_PER_THREAD` with sizes drawn from
/// `Rng::new(thread)`, writing every byte. Returns the addresses.
fn allocate(thread: usize) -> Vec<usize> {
    let mut rng = Rng::new(thread as u64);
    let mut ptrs = Vec::new();
    let mut total = 0;
    while total < BYTES_PER_THREAD {
        let size = rng.small_size();
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null(), "alloc({layout:?}) returned null");
        // SAFETY: `p` is a live block of `size` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(p, size) };
        pattern::fill(buf, block_seed(thread, ptrs.len()));
        ptrs.push(p as usize);
        total += size;
    }
    ptrs
}

/// Verifies and frees the blocks `allocate(thread)` returned, replaying the
/// same size sequence.
fn free_all(thread: usize, ptrs: Vec<usize>) {
    let mut rng = Rng::new(thread as u64);
    for (i, p) in ptrs.into_iter().enumerate() {
        let size = rng.small_size();
        let p = p as *mut u8;
        // SAFETY: `p` is a live block of `size` bytes allocated by `allocate`.
        let buf = unsafe { std::slice::from_raw_parts(p, size) };
        pattern::check(buf, block_seed(thread, i), "small block freed cross-thread");
        // SAFETY: `p` was allocated with this layout and is freed once.
        unsafe { GLOBAL.dealloc(p, Layout::from_size_align(size, 8).unwrap()) };
    }
}

#[test]
fn release_memory_returns_freed_small_objects_to_the_os() {
    let before = rss();
    let lists: Mutex<Vec<Option<Vec<usize>>>> = Mutex::new(vec![None; THREADS]);
    let allocated = Barrier::new(THREADS + 1);
    let measured = Barrier::new(THREADS + 1);
    let live = thread::scope(|s| {
        for t in 0..THREADS {
            let (lists, allocated, measured) = (&lists, &allocated, &measured);
            s.spawn(move || {
                // A panic must not leave the other threads stuck at the barriers.
                let result = panic::catch_unwind(|| allocate(t));
                let failed = result.is_err();
                if let Ok(ptrs) = result {
                    lists.lock().unwrap()[t] = Some(ptrs);
                }
                allocated.wait();
                measured.wait();
                assert!(!failed, "thread {t} failed while allocating");
                // Free what the next thread allocated.
                let victim = (t + 1) % THREADS;
                let ptrs = lists.lock().unwrap()[victim].take();
                let ptrs = ptrs.unwrap_or_else(|| panic!("thread {victim} has no blocks"));
                free_all(victim, ptrs);
            });
        }
        allocated.wait();
        let live = rss();
        measured.wait();
        live
    });
    strata::release_memory();
    let after = rss();

    let grown = live as isize - before as isize;
    let dropped = live as isize - after as isize;
    eprintln!(
        "RSS before: {:.1} MiB, with 512 MiB live: {:.1} MiB (+{:.1} MiB), \
         after free + release_memory: {:.1} MiB (-{:.1} MiB, {:.1}% of growth)",
        mib(before as isize),
        mib(live as isize),
        mib(grown),
        mib(after as isize),
        mib(dropped),
        100.0 * dropped as f64 / grown as f64
    );
    assert!(
        grown >= 400 * MIB as isize,
        "allocating 512 MiB only grew RSS by {:.1} MiB",
        mib(grown)
    );
    assert!(
        dropped as f64 >= 0.9 * grown as f64,
        "release_memory gave back only {:.1} of {:.1} MiB",
        mib(dropped),
        mib(grown)
    );
}
