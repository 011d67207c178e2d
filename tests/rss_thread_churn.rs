#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

// 4,000 short-lived threads, each allocating and freeing a mix of blocks and
// handing some to the main thread, must not make memory grow without bound:
// what exited threads cached has to be reclaimed. This binary holds a single
// test so that nothing else in the process perturbs the RSS measurements.

use std::alloc::{GlobalAlloc, Layout};
use std::thread;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const THREADS: usize = 4000;
const WAVE: usize = 16;
const BLOCKS_PER_THREAD: usize = 200;

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

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Log-uniform in 8 B ..= 32 KiB.
    fn size(&mut self) -> usize {
        let bits = 3 + self.below(13) as u32;
        let base = 1usize << bits;
        (base + self.below(base)).min(32 * KIB)
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

struct Block {
    ptr: *mut u8,
    layout: Layout,
    seed: u64,
}

// SAFETY: a `Block` is the sole owner of its allocation, which may be freed
// from any thread.
unsafe impl Send for Block {}

impl Block {
    fn new(size: usize, seed: u64) -> Block {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { GLOBAL.alloc(layout) };
        assert!(!ptr.is_null(), "alloc({layout:?}) returned null");
        // SAFETY: `ptr` is a live, exclusively owned block of `size` bytes.
        pattern::fill(unsafe { std::slice::from_raw_parts_mut(ptr, size) }, seed);
        Block { ptr, layout, seed }
    }

    fn free(self) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes.
        let buf = unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) };
        pattern::check(buf, self.seed, "churned block");
        // SAFETY: `ptr` was returned by `GLOBAL.alloc(layout)` and is freed once.
        unsafe { GLOBAL.dealloc(self.ptr, self.layout) };
    }
}

/// Body of one short-lived thread: returns the blocks handed to main.
fn churn(t: usize) -> Vec<Block> {
    let mut rng = Rng::new(t as u64);
    let mut own: Vec<Block> = Vec::new();
    let mut handed = Vec::new();
    for i in 0..BLOCKS_PER_THREAD {
        let block = Block::new(rng.size(), pattern::word(t as u64, i as u64));
        if rng.below(4) == 0 {
            handed.push(block);
        } else {
            own.push(block);
        }
        if own.len() > 24 {
            let k = rng.below(own.len());
            own.swap_remove(k).free();
        }
    }
    // Half of what is left is freed now, the rest goes to main as well.
    for (k, block) in own.into_iter().enumerate() {
        if k % 2 == 0 {
            block.free();
        } else {
            handed.push(block);
        }
    }
    handed
}

#[test]
fn thread_churn_with_cross_thread_frees_does_not_grow_rss() {
    let before = rss();
    let mut peak = before;
    let mut previous_wave: Vec<Block> = Vec::new();
    let mut handed_total = 0;
    for wave in 0..THREADS / WAVE {
        let this_wave: Vec<Block> = thread::scope(|s| {
            let handles: Vec<_> = (0..WAVE)
                .map(|k| s.spawn(move || churn(wave * WAVE + k)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        handed_total += this_wave.len();
        // Main frees what the previous wave handed over, after those threads
        // have exited.
        for block in std::mem::replace(&mut previous_wave, this_wave) {
            block.free();
        }
        peak = peak.max(rss());
    }
    for block in previous_wave {
        block.free();
    }
    strata::release_memory();
    // 4,000 exited threads left their heaps in the pool: every invariant, the
    // pool's included, must hold.
    if let Err(v) = strata::validate_heap() {
        panic!("after the thread churn: {v}");
    }
    let after = rss();
    let growth = after as isize - before as isize;
    eprintln!(
        "{THREADS} threads, {handed_total} blocks freed by main; RSS before: {:.1} MiB, \
         peak: {:.1} MiB, after release_memory: {:.1} MiB (growth {:+.1} MiB)",
        mib(before as isize),
        mib(peak as isize),
        mib(after as isize),
        mib(growth)
    );
    assert!(
        growth < 64 * MIB as isize,
        "RSS grew by {:.1} MiB over {THREADS} short-lived threads",
        mib(growth)
    );
}
