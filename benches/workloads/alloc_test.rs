//! alloc-test-like (ITHare's alloc-test): random allocation and deallocation
//! with a heavy-tailed (Pareto) size mix, every thread on its own.
//!
//! Each thread has 16,384 slots. One operation picks a random slot: a full slot
//! is verified and freed, an empty one gets a new block whose size is Pareto
//! distributed (minimum 8 bytes, shape alpha = 1, so P(size > x) = 8 / x, capped
//! at 64 KiB; the mean is about 80 bytes, one block in a thousand is over
//! 8 KiB). Slots stay about half full. The figure is operations (a malloc or a
//! free) per second over all threads.

use std::time::Duration;

use crate::common::{Block, Rng, SizeTable, timed};

const SLOTS: usize = 1 << 14;
const MIN: f64 = 8.0;
const CAP: usize = 64 << 10;
const WHAT: &str = "alloc-test";

pub fn run(threads: usize, dur: Duration) -> (u64, Duration) {
    timed(threads, dur, |t, gate| {
        let mut rng = Rng::new(0xa110c + t as u64);
        let sizes = SizeTable::new(&mut rng, |r| ((MIN / r.unit()) as usize).min(CAP));
        debug_assert!(sizes.mean() > 8.0);
        let mut slots: Vec<Option<Block>> = (0..SLOTS).map(|_| None).collect();
        let mut ops = 0;
        gate.begin();
        while gate.running() {
            for _ in 0..256 {
                let i = rng.below(SLOTS);
                match slots[i].take() {
                    Some(b) => b.free(WHAT),
                    None => slots[i] = Some(Block::new(sizes.pick(&mut rng))),
                }
            }
            ops += 256;
        }
        gate.finish();
        for b in slots.into_iter().flatten() {
            b.free(WHAT);
        }
        ops
    })
}
