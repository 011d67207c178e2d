//! Thread scaling: every thread churns its own ring of 1,024 live blocks of
//! 8-1,024 bytes (as in `churn.rs`), at 1, 2, 4, 8, 16, 32 and 64 threads:
//! past the core count on purpose, since servers oversubscribe.
//!
//! One criterion iteration is one free+allocate operation on *each* thread, and
//! the reported throughput counts all threads' operations, so perfect scaling
//! shows as throughput growing with the thread count (up to the core count)
//! and staying flat beyond it.
//! The worker threads are created once per (allocator, thread count), keep
//! their rings alive across iterations, and are started and stopped with a
//! `Barrier` (`iter_custom`).
//!
//! ```text
//! cargo bench --bench scaling
//! ```

use std::alloc::{GlobalAlloc, Layout, System, handle_alloc_error};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const THREADS: &[usize] = &[1, 2, 4, 8, 16, 32, 64];
const RING: usize = 1024;
const SIZES: usize = 1 << 14;
const MIN_SIZE: usize = 8;
const MAX_SIZE: usize = 1024;
const ALIGN: usize = 8;
const STOP: u64 = u64::MAX;

fn sizes(seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    (0..SIZES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            MIN_SIZE + (x % (MAX_SIZE - MIN_SIZE + 1) as u64) as usize
        })
        .collect()
}

/// A thread's ring of live blocks; freed on drop.
struct Ring<A: GlobalAlloc> {
    alloc: A,
    slots: Vec<(*mut u8, Layout)>,
    sizes: Vec<usize>,
    next: usize,
}

impl<A: GlobalAlloc> Ring<A> {
    fn new(alloc: A, seed: u64) -> Self {
        let mut ring = Ring {
            alloc,
            slots: Vec::with_capacity(RING),
            sizes: sizes(seed),
            next: 0,
        };
        for _ in 0..RING {
            let layout = ring.next_layout();
            let p = ring.alloc_touch(layout);
            ring.slots.push((p, layout));
        }
        ring
    }

    #[inline(always)]
    fn next_layout(&mut self) -> Layout {
        let size = self.sizes[self.next % SIZES];
        self.next = self.next.wrapping_add(1);
        match Layout::from_size_align(size, ALIGN) {
            Ok(l) => l,
            Err(_) => unreachable!("sizes are small and ALIGN is a power of two"),
        }
    }

    #[inline(always)]
    fn alloc_touch(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { self.alloc.alloc(layout) };
        if p.is_null() {
            handle_alloc_error(layout);
        }
        // SAFETY: `p` is valid for `layout.size() >= 1` bytes.
        unsafe { p.write_volatile(self.next as u8) };
        p
    }

    #[inline(always)]
    fn step(&mut self) {
        let i = self.next % RING;
        let (old, old_layout) = self.slots[i];
        // SAFETY: `old` was allocated by `self.alloc` with `old_layout` and is
        // freed exactly once (the slot is overwritten right below).
        unsafe { self.alloc.dealloc(black_box(old), old_layout) };
        let layout = self.next_layout();
        self.slots[i] = (self.alloc_touch(layout), layout);
    }
}

impl<A: GlobalAlloc> Drop for Ring<A> {
    fn drop(&mut self) {
        for &(p, layout) in &self.slots {
            // SAFETY: every slot holds a live block from `self.alloc`.
            unsafe { self.alloc.dealloc(p, layout) };
        }
    }
}

/// `threads` workers, each with its own ring, kept alive across iterations.
struct Pool {
    work: Arc<AtomicU64>,
    barrier: Arc<Barrier>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new<A: GlobalAlloc + Copy + Send + 'static>(alloc: A, threads: usize) -> Pool {
        let work = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier::new(threads + 1));
        let workers = (0..threads)
            .map(|t| {
                let (work, barrier) = (work.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let seed = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(t as u64 + 1);
                    let mut ring = Ring::new(alloc, seed);
                    loop {
                        barrier.wait();
                        let n = work.load(Ordering::Relaxed);
                        if n == STOP {
                            return;
                        }
                        for _ in 0..n {
                            ring.step();
                        }
                        barrier.wait();
                    }
                })
            })
            .collect();
        Pool {
            work,
            barrier,
            workers,
        }
    }

    /// Every worker performs `n` operations; returns the wall time.
    fn run(&self, n: u64) -> Duration {
        self.work.store(n, Ordering::Relaxed);
        let start = Instant::now();
        self.barrier.wait();
        self.barrier.wait();
        start.elapsed()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.work.store(STOP, Ordering::Relaxed);
        self.barrier.wait();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn bench_scaling(c: &mut Criterion) {
    for &threads in THREADS {
        let mut group = c.benchmark_group(format!("scaling/{threads}_threads"));
        group.throughput(Throughput::Elements(threads as u64));
        // Pools live across criterion samples (the closure runs once per
        // sample); each is dropped (threads joined) before the next starts.
        {
            let pool = Pool::new(strata::Strata, threads);
            group.bench_function("strata", |b| b.iter_custom(|iters| pool.run(iters)));
        }
        {
            let pool = Pool::new(System, threads);
            group.bench_function("system", |b| b.iter_custom(|iters| pool.run(iters)));
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bench_scaling
}
criterion_main!(benches);
