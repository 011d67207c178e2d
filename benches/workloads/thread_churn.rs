//! Thread churn that leaves objects behind: generations of N short-lived
//! threads, as in a server that starts a thread per task.
//!
//! Each thread of a generation first frees the blocks that thread `t` of the
//! previous generation left behind (their allocating thread has exited), then
//! allocates 2,000 blocks of 16-512 bytes, frees 90 % of them in random order
//! and exits holding the remaining 10 %, which it leaves for its successor.
//! Generations follow each other until the duration is reached. The figure is
//! allocations per second; thread start-up and exit are part of it.

use std::time::{Duration, Instant};

use crate::common::{Block, Rng, counted};

const PER_THREAD: usize = 2000;
const KEEP: usize = PER_THREAD / 10;
const MIN: usize = 16;
const MAX: usize = 512;
const WHAT: &str = "thread-churn";

fn life(inherited: Vec<Block>, seed: u64) -> Vec<Block> {
    for b in inherited {
        b.free(WHAT);
    }
    let mut rng = Rng::new(seed);
    let mut held: Vec<Block> = (0..PER_THREAD)
        .map(|_| Block::new(rng.range(MIN, MAX)))
        .collect();
    while held.len() > KEEP {
        let i = rng.below(held.len());
        held.swap_remove(i).free(WHAT);
    }
    held
}

pub fn run(threads: usize, dur: Duration) -> (u64, Duration) {
    let mut left: Vec<Vec<Block>> = (0..threads).map(|_| Vec::new()).collect();
    let mut generation = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        generation += 1;
        left = std::thread::scope(|s| {
            let handles: Vec<_> = left
                .into_iter()
                .enumerate()
                .map(|(t, inherited)| {
                    let seed = generation * 1000 + t as u64;
                    s.spawn(move || counted(|| life(inherited, seed)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread-churn thread panicked"))
                .collect()
        });
    }
    let elapsed = start.elapsed();
    for b in left.into_iter().flatten() {
        b.free(WHAT);
    }
    (generation * (threads * PER_THREAD) as u64, elapsed)
}
