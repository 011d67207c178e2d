//! larson-like server simulation (Larson and Krishnan, "Memory allocation for
//! long-running server applications", ISMM 1998).
//!
//! Each of the N "lineages" owns an array of 5,000 slots of 8-1,000 bytes,
//! first filled by the main thread. A thread replaces blocks in random slots
//! (free the old one, malloc a new one of random size); after 100,000
//! replacements it starts a successor thread, hands it the array and exits, so
//! most blocks are freed by a thread other than the one that allocated them
//! (and after that thread has gone). The run stops after the given duration;
//! the figure is replacements per second across all lineages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::common::{Block, Rng, counted};

const SLOTS: usize = 5000;
const MIN: usize = 8;
const MAX: usize = 1000;
const PER_THREAD: u64 = 100_000;
const WHAT: &str = "larson";

struct Lineage {
    slots: Vec<Option<Block>>,
    rng: Rng,
    ops: u64,
    generations: u64,
}

/// One generation: `PER_THREAD` replacements (fewer if stopped), then either a
/// successor thread or, once stopped, the array back to the main thread.
fn generation(mut l: Lineage, stop: Arc<AtomicBool>, done: mpsc::Sender<Lineage>) {
    let _ = std::thread::spawn(move || {
        counted(|| {
            l.generations += 1;
            for _ in 0..PER_THREAD {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = l.rng.below(SLOTS);
                if let Some(old) = l.slots[i].take() {
                    old.free(WHAT);
                }
                let size = l.rng.range(MIN, MAX);
                l.slots[i] = Some(Block::new(size));
                l.ops += 1;
            }
        });
        if stop.load(Ordering::Relaxed) {
            let _ = done.send(l);
        } else {
            generation(l, stop, done);
        }
    });
}

pub fn run(threads: usize, dur: Duration) -> (u64, Duration) {
    let lineages: Vec<Lineage> = (0..threads)
        .map(|t| {
            let mut rng = Rng::new(4141 + t as u64);
            let slots = (0..SLOTS)
                .map(|_| Some(Block::new(rng.range(MIN, MAX))))
                .collect();
            Lineage {
                slots,
                rng,
                ops: 0,
                generations: 0,
            }
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    for l in lineages {
        generation(l, stop.clone(), tx.clone());
    }
    drop(tx);
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let finished: Vec<Lineage> = (0..threads)
        .map(|_| rx.recv().expect("a larson thread died"))
        .collect();
    let elapsed = start.elapsed();
    let mut ops = 0;
    for l in finished {
        debug_assert!(l.generations > 0);
        ops += l.ops;
        for b in l.slots.into_iter().flatten() {
            b.free(WHAT);
        }
    }
    (ops, elapsed)
}
