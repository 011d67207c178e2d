//! Producer/consumer: one thread allocates blocks of 16-512 bytes and passes
//! them, in batches of 64, over a lock-free single-producer/single-consumer
//! ring to a second thread, which frees them through the same allocator.
//!
//! This is the cross-thread-free pattern of a server handing responses to a
//! writer thread. The queue is a fixed array of batch slots, so passing a block
//! never allocates. Both threads stay alive across criterion iterations and
//! are started and stopped with a `Barrier` (`iter_custom`).
//!
//! The `one_to_many/<K>_consumers` groups run one producer feeding K consumers
//! (a dispatcher thread and its workers), each consumer with its own queue:
//! the producer deals batches round-robin, skipping a consumer whose queue is
//! full. Throughput counts blocks passed, whatever the number of consumers.
//!
//! ```text
//! cargo bench --bench producer_consumer
//! ```

use std::alloc::{GlobalAlloc, Layout, System, handle_alloc_error};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_utils::{Backoff, CachePadded};

const BATCH: usize = 64;
/// Batches in flight (a power of two).
const QUEUE: usize = 64;
const SIZES: usize = 1 << 14;
const MIN_SIZE: usize = 16;
const MAX_SIZE: usize = 512;
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

fn layout(size: usize) -> Layout {
    match Layout::from_size_align(size, ALIGN) {
        Ok(l) => l,
        Err(_) => unreachable!("sizes are small and ALIGN is a power of two"),
    }
}

#[derive(Clone, Copy)]
struct Batch {
    len: usize,
    blocks: [(*mut u8, usize); BATCH],
}

/// Bounded single-producer/single-consumer ring of batches.
struct Spsc {
    slots: Box<[UnsafeCell<Batch>]>,
    /// Next slot the consumer reads; written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes; written only by the producer.
    tail: CachePadded<AtomicUsize>,
}

// SAFETY: a slot is written only by the producer while `tail - head < QUEUE`
// says the consumer is not reading it, and read only by the consumer after the
// producer published it with a `Release` store of `tail` (observed with
// `Acquire`); the raw pointers inside are plain heap blocks that may be freed
// from any thread.
unsafe impl Sync for Spsc {}
// SAFETY: see above; nothing in `Spsc` is tied to a thread.
unsafe impl Send for Spsc {}

impl Spsc {
    fn new() -> Spsc {
        let empty = Batch {
            len: 0,
            blocks: [(std::ptr::null_mut(), 0); BATCH],
        };
        Spsc {
            slots: (0..QUEUE).map(|_| UnsafeCell::new(empty)).collect(),
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }
}

/// Blocks consumer `k` of `consumers` receives out of `n`.
fn share(n: u64, k: usize, consumers: usize) -> u64 {
    n / consumers as u64 + u64::from((k as u64) < n % consumers as u64)
}

/// Most consumers of one producer.
const MAX_CONSUMERS: usize = 8;

/// Passes `n` blocks to the consumers of `queues`, consumer `k` getting
/// `share(n, k, queues.len())` of them in batches of up to `BATCH`, dealt
/// round-robin; a full queue is skipped until it has room.
fn produce<A: GlobalAlloc>(
    alloc: &A,
    queues: &[Arc<Spsc>],
    sizes: &[usize],
    next: &mut usize,
    n: u64,
) {
    let k = queues.len();
    assert!(k <= MAX_CONSUMERS);
    let mut left = [0u64; MAX_CONSUMERS];
    let mut tails = [0usize; MAX_CONSUMERS];
    for (i, q) in queues.iter().enumerate() {
        left[i] = share(n, i, k);
        tails[i] = q.tail.load(Ordering::Relaxed);
    }
    let backoff = Backoff::new();
    while left[..k].iter().any(|&l| l > 0) {
        let mut pushed = false;
        for (i, q) in queues.iter().enumerate() {
            if left[i] == 0 || tails[i] - q.head.load(Ordering::Acquire) >= QUEUE {
                continue;
            }
            // SAFETY: the slot is free (the consumer is past it) and only this
            // thread writes slots; see `impl Sync for Spsc`.
            let slot = unsafe { &mut *q.slots[tails[i] % QUEUE].get() };
            let len = left[i].min(BATCH as u64) as usize;
            slot.len = len;
            for entry in &mut slot.blocks[..len] {
                let size = sizes[*next % SIZES];
                *next = next.wrapping_add(1);
                let l = layout(size);
                // SAFETY: non-zero size.
                let p = unsafe { alloc.alloc(l) };
                if p.is_null() {
                    handle_alloc_error(l);
                }
                // SAFETY: `p` is valid for `size >= 1` bytes.
                unsafe { p.write_volatile(size as u8) };
                *entry = (p, size);
            }
            left[i] -= len as u64;
            tails[i] += 1;
            q.tail.store(tails[i], Ordering::Release);
            pushed = true;
        }
        if pushed {
            backoff.reset();
        } else {
            backoff.snooze();
        }
    }
}

fn consume<A: GlobalAlloc>(alloc: &A, q: &Spsc, n: u64) {
    let mut left = n;
    let mut head = q.head.load(Ordering::Relaxed);
    while left > 0 {
        let backoff = Backoff::new();
        while q.tail.load(Ordering::Acquire) == head {
            backoff.snooze();
        }
        // SAFETY: the producer published this slot (Acquire above) and will
        // not touch it until we advance `head`.
        let slot = unsafe { &*q.slots[head % QUEUE].get() };
        for &(p, size) in &slot.blocks[..slot.len] {
            // SAFETY: the producer wrote this byte before publishing.
            let tag = unsafe { p.read_volatile() };
            assert_eq!(tag, size as u8, "block corrupted in transit");
            // SAFETY: `p` was allocated by `alloc` with this layout and is
            // freed exactly once.
            unsafe { alloc.dealloc(p, layout(size)) };
        }
        left -= slot.len as u64;
        head += 1;
        q.head.store(head, Ordering::Release);
    }
}

/// A producer and its consumer threads, alive across iterations.
struct Team {
    work: Arc<AtomicU64>,
    barrier: Arc<Barrier>,
    threads: Vec<JoinHandle<()>>,
}

impl Team {
    fn new<A: GlobalAlloc + Copy + Send + 'static>(alloc: A, consumers: usize) -> Team {
        let work = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier::new(consumers + 2));
        let queues: Vec<Arc<Spsc>> = (0..consumers).map(|_| Arc::new(Spsc::new())).collect();
        let mut threads = Vec::with_capacity(consumers + 1);
        {
            let (work, barrier, queues) = (work.clone(), barrier.clone(), queues.clone());
            threads.push(std::thread::spawn(move || {
                let sizes = sizes(0x2545_f491_4f6c_dd1d);
                let mut next = 0;
                loop {
                    barrier.wait();
                    let n = work.load(Ordering::Relaxed);
                    if n == STOP {
                        return;
                    }
                    produce(&alloc, &queues, &sizes, &mut next, n);
                    barrier.wait();
                }
            }));
        }
        for (k, queue) in queues.into_iter().enumerate() {
            let (work, barrier) = (work.clone(), barrier.clone());
            threads.push(std::thread::spawn(move || {
                loop {
                    barrier.wait();
                    let n = work.load(Ordering::Relaxed);
                    if n == STOP {
                        return;
                    }
                    consume(&alloc, &queue, share(n, k, consumers));
                    barrier.wait();
                }
            }));
        }
        Team {
            work,
            barrier,
            threads,
        }
    }

    /// Passes `n` blocks from the producer to the consumers; returns the wall
    /// time.
    fn run(&self, n: u64) -> Duration {
        self.work.store(n, Ordering::Relaxed);
        let start = Instant::now();
        self.barrier.wait();
        self.barrier.wait();
        start.elapsed()
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.work.store(STOP, Ordering::Relaxed);
        self.barrier.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn bench_producer_consumer(c: &mut Criterion) {
    let mut group = c.benchmark_group("producer_consumer");
    group.throughput(Throughput::Elements(1));
    // Threads live across criterion samples (the closure runs once per
    // sample); each `Team` is dropped (threads joined) before the next one.
    {
        let team = Team::new(strata::Strata, 1);
        group.bench_function("strata", |b| b.iter_custom(|iters| team.run(iters)));
    }
    {
        let team = Team::new(System, 1);
        group.bench_function("system", |b| b.iter_custom(|iters| team.run(iters)));
    }
    group.finish();
}

fn bench_one_to_many(c: &mut Criterion) {
    for consumers in [3, 7] {
        let mut group = c.benchmark_group(format!("one_to_many/{consumers}_consumers"));
        group.throughput(Throughput::Elements(1));
        {
            let team = Team::new(strata::Strata, consumers);
            group.bench_function("strata", |b| b.iter_custom(|iters| team.run(iters)));
        }
        {
            let team = Team::new(System, consumers);
            group.bench_function("system", |b| b.iter_custom(|iters| team.run(iters)));
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
    targets = bench_producer_consumer, bench_one_to_many
}
criterion_main!(benches);
