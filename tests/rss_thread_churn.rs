#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::{KIB, MIB, Rng, mib, pattern, rss};

// 4,000 short-lived threads, each allocating and freeing a mix of blocks and
// handing some to the main thread, must not make memory grow without bound:
// what exited threads cached has to be reclaimed. This binary holds a single
// test so that nothing else in the process perturbs the RSS measurements.

use std::alloc::{GlobalAlloc, Layout};
use std::thread;

const THREADS: usize = 4000;
const WAVE: usize = 16;
const BLOCKS_PER_THREAD: usize = 200;

impl Rng {
    /// Log-uniform in 8 B ..= 32 KiB.
    fn size(&mut self) -> usize {
        let bits = 3 + self.below(13) as u32;
        let base = 1usize << bits;
        (base + self.below(base)).min(32 * KIB)
    }
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
