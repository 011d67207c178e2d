//! What a read of `strata::gauges()` costs, next to a `strata::stats()` snapshot,
//! on a heap of a few hundred MiB spread over four threads.
//!
//! ```text
//! cargo run --release --example gauges_cost
//! ```

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

const READS: u32 = 1_000_000;
const SNAPSHOTS: u32 = 100;

fn main() {
    // A heap worth walking: 4 threads × 64 MiB of small objects, kept live while
    // the main thread reads.
    let (built, done) = (Barrier::new(5), Barrier::new(5));
    thread::scope(|s| {
        for t in 0..4u8 {
            let (built, done) = (&built, &done);
            s.spawn(move || {
                let keep: Vec<Vec<u8>> = (0..(64 << 20) / 256)
                    .map(|i| vec![t ^ i as u8; 64 + i % 384])
                    .collect();
                built.wait();
                done.wait();
                drop(black_box(keep));
            });
        }
        built.wait();

        let t0 = Instant::now();
        let mut sum = 0u64;
        for _ in 0..READS {
            let g = black_box(strata::gauges());
            sum = sum.wrapping_add(g.allocated_bytes ^ g.resident_bytes);
        }
        let per_read = t0.elapsed().as_nanos() as f64 / READS as f64;

        let t0 = Instant::now();
        for _ in 0..SNAPSHOTS {
            let st = black_box(strata::stats());
            sum = sum.wrapping_add(st.allocated_bytes);
        }
        let per_snapshot = t0.elapsed().as_nanos() as f64 / SNAPSHOTS as f64;

        let (g, st) = (strata::gauges(), strata::stats());
        println!("gauges(): {per_read:.1} ns/read over {READS} reads");
        println!(
            "stats():  {:.1} µs/snapshot over {SNAPSHOTS} snapshots ({:.0}× a gauges read)",
            per_snapshot / 1e3,
            per_snapshot / per_read
        );
        println!(
            "allocated {} MiB (stats: {} live + {} thread-cached), resident {} MiB (stats {}), mapped {} MiB",
            g.allocated_bytes >> 20,
            st.allocated_bytes >> 20,
            st.thread_cached_bytes >> 20,
            g.resident_bytes >> 20,
            st.resident_bytes >> 20,
            g.mapped_bytes >> 20
        );
        black_box(sum);
        done.wait();
    });
}
