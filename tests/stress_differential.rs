#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

// Randomized differential stress: seeded sequences of malloc, calloc, aligned
// allocation, realloc and free (tests/ops/mod.rs) on several threads at once, with
// blocks handed between threads through a mailbox (so frees are often cross-thread),
// every block's content compared with the model on every touch, and the heap
// validator (in checked mode: every canary, every quarantined block) run at
// checkpoints while the other threads wait at a barrier.
//
// CI runs a short one, in both builds:
//     cargo test --release --test stress_differential
//     cargo test --release --features checked --test stress_differential
// A long one by hand (ops per thread, seed, threads; prints the count that ran clean):
//     STRATA_STRESS_OPS=5000000 STRATA_STRESS_SEED=7 STRATA_STRESS_THREADS=8 \
//         cargo test --release --features checked --test stress_differential -- --nocapture

mod ops;

use ops::{Machine, Mailbox, Rng, random_op};
use std::sync::Barrier;
use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn seeded_operations_across_threads_match_the_model() {
    let ops = env_u64("STRATA_STRESS_OPS", 40_000);
    let seed = env_u64("STRATA_STRESS_SEED", 0x5EED);
    let threads = env_u64("STRATA_STRESS_THREADS", 4) as usize;
    let checkpoint = env_u64("STRATA_STRESS_CHECKPOINT", 10_000).max(1);
    let slots = 64;

    let mailbox = Mailbox::default();
    let barrier = Barrier::new(threads);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (mailbox, barrier) = (&mailbox, &barrier);
                s.spawn(move || {
                    let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0xA076_1D64_78BD_642F));
                    let mut m = Machine::new(slots, mailbox, t as u64 + 1);
                    for i in 1..=ops {
                        let op = random_op(&mut rng, slots);
                        m.step(op);
                        if i % checkpoint == 0 {
                            barrier.wait();
                            if t == 0 {
                                if let Err(v) = strata::validate_heap() {
                                    panic!("seed {seed}: after {i} ops per thread: {v}");
                                }
                            }
                            barrier.wait();
                        }
                    }
                    m.clear();
                    m.ops
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let left = mailbox.drain();
    strata::validate_heap().unwrap_or_else(|v| panic!("seed {seed}: at the end: {v}"));
    println!(
        "stress_differential: {total} ops ran clean ({threads} threads, seed {seed}, {left} \
         blocks left in the mailbox, checked={}, {:.1}s)",
        strata::CHECKED,
        start.elapsed().as_secs_f64()
    );
}
