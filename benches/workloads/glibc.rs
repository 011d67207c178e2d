//! The shapes of glibc's malloc microbenchmarks (`benchtests/bench-malloc-simple.c`
//! and `benchtests/bench-malloc-thread.c`).
//!
//! - glibc-simple (single thread): for every n in {25, 100, 400, 1,600} and
//!   every size in {16, 32, ..., 2,048} bytes, n mallocs of that size followed
//!   by n frees, repeated; 6,400 pairs per (n, size) per round. The figure is
//!   malloc+free pairs per second.
//! - glibc-thread (per thread): each thread has 1,024 slots, initially empty;
//!   one iteration frees a random slot and mallocs a block of 4-32,768 bytes
//!   drawn from an inverse-square distribution into it. The figure is
//!   iterations per second over all threads.

use std::time::{Duration, Instant};

use crate::common::{Block, Rng, SizeTable, timed};

const COUNTS: [usize; 4] = [25, 100, 400, 1600];
const SIZES: [usize; 8] = [16, 32, 64, 128, 256, 512, 1024, 2048];
const PAIRS_PER_CONFIG: usize = 6400;

pub fn simple(_threads: usize, dur: Duration) -> (u64, Duration) {
    let mut held: Vec<Block> = Vec::with_capacity(1600);
    let mut ops = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        for n in COUNTS {
            for size in SIZES {
                for _ in 0..PAIRS_PER_CONFIG / n {
                    for _ in 0..n {
                        held.push(Block::new(size));
                    }
                    for b in held.drain(..) {
                        b.free("glibc-simple");
                    }
                }
                ops += PAIRS_PER_CONFIG as u64;
            }
        }
    }
    (ops, start.elapsed())
}

const WORKING_SET: usize = 1024;
const MIN_SIZE: f64 = 4.0;
const MAX_SIZE: f64 = 32768.0;

pub fn thread(threads: usize, dur: Duration) -> (u64, Duration) {
    timed(threads, dur, |t, gate| {
        let mut rng = Rng::new(0x61bc + t as u64);
        // Inverse square between MIN_SIZE and MAX_SIZE, by inversion.
        let sizes = SizeTable::new(&mut rng, |r| {
            let (lo, hi) = (1.0 / MIN_SIZE, 1.0 / MAX_SIZE);
            (1.0 / ((hi - lo) * r.unit() + lo)) as usize
        });
        let mut slots: Vec<Option<Block>> = (0..WORKING_SET).map(|_| None).collect();
        let mut ops = 0;
        gate.begin();
        while gate.running() {
            for _ in 0..256 {
                let i = rng.below(WORKING_SET);
                if let Some(b) = slots[i].take() {
                    b.free("glibc-thread");
                }
                slots[i] = Some(Block::new(sizes.pick(&mut rng)));
            }
            ops += 256;
        }
        gate.finish();
        for b in slots.into_iter().flatten() {
            b.free("glibc-thread");
        }
        ops
    })
}
