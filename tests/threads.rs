#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::{KIB, MIB, Rng, pattern};

// Cross-thread traffic: blocks allocated on one thread are verified and freed
// on another (std threads, rayon workers), and blocks outlive the thread that
// allocated them.

use rayon::prelude::*;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;

/// xorshift64* — small, deterministic, good enough for picking sizes.
impl Rng {
    /// Log-uniformly distributed in `lo..=hi` (both powers of two or not).
    fn log_size(&mut self, lo: usize, hi: usize) -> usize {
        let (lo_bits, hi_bits) = (lo.ilog2(), hi.ilog2());
        let bits = lo_bits + self.below((hi_bits - lo_bits + 1) as usize) as u32;
        let base = 1usize << bits;
        (base + self.below(base)).clamp(lo, hi)
    }

    /// Mostly 8 B .. 64 KiB, occasionally up to 2 MiB.
    fn block_size(&mut self) -> usize {
        if self.below(256) == 0 {
            64 * KIB + self.below(2 * MIB - 64 * KIB)
        } else {
            self.log_size(8, 64 * KIB)
        }
    }

    fn layout(&mut self) -> Layout {
        let size = self.block_size();
        let align = match self.below(32) {
            0 => 64,
            1 => 4096,
            2 => 1,
            _ => 8,
        };
        Layout::from_size_align(size, align).unwrap()
    }
}

fn seed_of(thread: usize, index: usize, size: usize) -> u64 {
    pattern::word(((thread as u64) << 40) ^ ((index as u64) << 8), size as u64)
}

/// A block allocated through `GLOBAL` and filled with a pattern derived from
/// (allocating thread, index, size). It may be sent to and freed by any thread.
struct Block {
    ptr: *mut u8,
    layout: Layout,
    owner: usize,
    index: usize,
}

// SAFETY: a `Block` is the sole owner of its allocation, and strata (like any
// `GlobalAlloc`) allows a block to be freed by a thread other than the one that
// allocated it.
unsafe impl Send for Block {}

impl Block {
    #[track_caller]
    fn new(layout: Layout, owner: usize, index: usize) -> Block {
        // SAFETY: every layout used here has a non-zero size.
        let ptr = unsafe { GLOBAL.alloc(layout) };
        assert!(!ptr.is_null(), "alloc({layout:?}) returned null");
        assert_eq!(
            ptr as usize % layout.align(),
            0,
            "misaligned {ptr:p} for {layout:?}"
        );
        let block = Block {
            ptr,
            layout,
            owner,
            index,
        };
        // SAFETY: `ptr` is a live, exclusively owned block of `layout.size()` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, layout.size()) };
        pattern::fill(buf, block.seed());
        block
    }

    fn seed(&self) -> u64 {
        seed_of(self.owner, self.index, self.layout.size())
    }

    #[track_caller]
    fn check(&self) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes owned by `self`.
        let buf = unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) };
        let what = format!(
            "block #{} of thread {} ({:?}) checked on {:?}",
            self.index,
            self.owner,
            self.layout,
            thread::current().id()
        );
        pattern::check(buf, self.seed(), &what);
    }

    #[track_caller]
    fn free(self) {
        self.check();
        // SAFETY: `ptr` was returned by `GLOBAL.alloc(layout)` and is freed once.
        unsafe { GLOBAL.dealloc(self.ptr, self.layout) };
    }
}

#[test]
fn blocks_sent_to_other_threads_over_channels_keep_contents_until_freed() {
    const THREADS: usize = 8;
    const OPS: usize = 25_000;
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<Block>()).unzip();
    let sent = AtomicUsize::new(0);
    let received = AtomicUsize::new(0);
    thread::scope(|s| {
        for (tid, inbox) in receivers.into_iter().enumerate() {
            let outboxes = senders.clone();
            let (sent, received) = (&sent, &received);
            s.spawn(move || {
                let mut rng = Rng::new(tid as u64);
                let mut local: Vec<Block> = Vec::new();
                let (mut n_sent, mut n_received) = (0, 0);
                for i in 0..OPS {
                    let block = Block::new(rng.layout(), tid, i);
                    if rng.below(4) == 0 {
                        local.push(block);
                        if local.len() > 64 {
                            let k = rng.below(local.len());
                            local.swap_remove(k).free();
                        }
                    } else {
                        let to = (tid + 1 + rng.below(THREADS - 1)) % THREADS;
                        outboxes[to].send(block).unwrap();
                        n_sent += 1;
                    }
                    while let Ok(block) = inbox.try_recv() {
                        assert_ne!(block.owner, tid);
                        block.free();
                        n_received += 1;
                    }
                }
                drop(outboxes);
                for block in local {
                    block.free();
                }
                // Blocks until every other thread has dropped its senders.
                for block in inbox {
                    assert_ne!(block.owner, tid);
                    block.free();
                    n_received += 1;
                }
                sent.fetch_add(n_sent, Ordering::Relaxed);
                received.fetch_add(n_received, Ordering::Relaxed);
            });
        }
        drop(senders);
    });
    let (sent, received) = (sent.into_inner(), received.into_inner());
    eprintln!("{sent} blocks sent across threads, {received} received and freed");
    assert_eq!(sent, received);
    assert!(sent > THREADS * OPS / 2);
}

#[test]
fn rayon_workers_free_blocks_from_a_shared_pool_allocated_by_others() {
    const N: usize = 100_000;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(8)
        .build()
        .unwrap();
    let shared: Mutex<Vec<Block>> = Mutex::new(Vec::new());
    let cross = AtomicUsize::new(0);
    let freed = AtomicUsize::new(0);
    pool.install(|| {
        (0..N).into_par_iter().for_each(|i| {
            let tid = rayon::current_thread_index().unwrap();
            let mut rng = Rng::new((i as u64) ^ (0xABCD << 32));
            let block = Block::new(rng.layout(), tid, i);
            let victim = {
                let mut pool = shared.lock().unwrap();
                pool.push(block);
                if pool.len() > 256 {
                    let k = rng.below(pool.len());
                    Some(pool.swap_remove(k))
                } else {
                    None
                }
            };
            if let Some(victim) = victim {
                if victim.owner != tid {
                    cross.fetch_add(1, Ordering::Relaxed);
                }
                victim.free();
                freed.fetch_add(1, Ordering::Relaxed);
            }
        });
    });
    let rest = shared.into_inner().unwrap();
    let freed = freed.into_inner() + rest.len();
    for block in rest {
        block.free();
    }
    let cross = cross.into_inner();
    eprintln!("{freed} blocks freed, {cross} by a thread other than the allocating one");
    assert_eq!(freed, N);
    assert!(cross > 0, "no block was freed by another rayon worker");
}

#[test]
fn rayon_collected_vecs_keep_contents_and_drop_on_other_threads() {
    const N: usize = 20_000;
    let size_of = |i: usize| -> usize {
        let mut rng = Rng::new(i as u64);
        if i % 1000 == 0 {
            MIB + rng.below(MIB)
        } else {
            rng.log_size(1, 32 * KIB)
        }
    };
    let seed = |i: usize| seed_of(usize::MAX, i, size_of(i));
    let mut vecs: Vec<Vec<u8>> = (0..N)
        .into_par_iter()
        .map(|i| {
            let size = size_of(i);
            let mut v = vec![0u8; size];
            assert!(v.iter().all(|&b| b == 0), "vec![0; {size}] not zeroed");
            pattern::fill(&mut v, seed(i));
            if i % 7 == 0 {
                // Grow through realloc as well.
                v.extend_from_slice(&[0xEE; 100]);
                v.truncate(size);
            }
            v
        })
        .collect();
    assert_eq!(vecs.len(), N);

    // The second half is checked and dropped by fresh std threads, which
    // certainly did not allocate any of it.
    let second = vecs.split_off(N / 2);
    thread::scope(|s| {
        let mut rest = second;
        let mut start = N / 2;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(N / 8));
            let chunk = std::mem::replace(&mut rest, tail);
            let first = start;
            start += chunk.len();
            s.spawn(move || {
                for (k, v) in chunk.into_iter().enumerate() {
                    pattern::check(&v, seed(first + k), "rayon-collected vec (std thread)");
                }
            });
        }
    });

    // The first half is checked and dropped by rayon in reverse order, so
    // items mostly land on a worker other than the one that built them.
    vecs.into_par_iter()
        .enumerate()
        .rev()
        .for_each(|(i, v)| pattern::check(&v, seed(i), "rayon-collected vec (rayon)"));
}

#[test]
fn blocks_outlive_the_thread_that_allocated_them() {
    // Thread A allocates (and frees a third of what it allocated, so its
    // cache holds free blocks), then exits.
    let (blocks, strings) = thread::spawn(|| {
        let mut rng = Rng::new(0xA);
        let mut blocks = Vec::new();
        for i in 0..6000 {
            let layout = if i % 500 == 0 {
                Layout::from_size_align(256 * KIB + rng.below(2 * MIB), 8).unwrap()
            } else {
                rng.layout()
            };
            let block = Block::new(layout, 1, i);
            if i % 3 == 0 {
                block.free();
            } else {
                blocks.push(block);
            }
        }
        let strings: Vec<String> = (0..5000).map(|i| format!("string #{i:05}")).collect();
        (blocks, strings)
    })
    .join()
    .unwrap();

    // Other threads churn afterwards and may pick up whatever thread A left
    // behind; they must never be handed one of A's live blocks.
    thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let mut rng = Rng::new(0xC0 + t);
                let mut live: Vec<Block> = Vec::new();
                for i in 0..10_000 {
                    live.push(Block::new(rng.layout(), 100 + t as usize, i));
                    if live.len() > 32 {
                        let k = rng.below(live.len());
                        live.swap_remove(k).free();
                    }
                }
                for b in live {
                    b.free();
                }
            });
        }
    });

    for b in &blocks {
        b.check();
    }
    for (i, s) in strings.iter().enumerate() {
        assert_eq!(*s, format!("string #{i:05}"));
    }

    // Half of A's blocks are freed by thread B, the rest by the main thread.
    let mut blocks = blocks;
    let half = blocks.split_off(blocks.len() / 2);
    thread::spawn(move || {
        for b in half {
            b.free();
        }
        drop(strings);
    })
    .join()
    .unwrap();
    for b in blocks {
        b.free();
    }

    // Many short-lived producers: each exits before its blocks are freed.
    let mut parked = Vec::new();
    for t in 0..64 {
        let mut made = thread::spawn(move || {
            let mut rng = Rng::new(0x1000 + t);
            (0..200)
                .map(|i| Block::new(rng.layout(), 200 + t as usize, i))
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        parked.append(&mut made);
    }
    for b in &parked {
        b.check();
    }
    for b in parked {
        b.free();
    }
}
