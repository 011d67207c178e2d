//! Single-thread churn: a ring of 1,024 live blocks of 8-1,024 bytes.
//!
//! Each operation frees the block in slot `i` and allocates the next size of a
//! precomputed pseudo-random sequence into it, touching one byte. Both
//! allocators are called directly through `GlobalAlloc`; the bench binary's
//! own global allocator stays the system one.
//!
//! ```text
//! cargo bench --bench churn
//! ```

use std::alloc::{GlobalAlloc, Layout, System, handle_alloc_error};
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RING: usize = 1024;
const SIZES: usize = 1 << 14;
const MIN_SIZE: usize = 8;
const MAX_SIZE: usize = 1024;
const ALIGN: usize = 8;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// xorshift64: deterministic size sequence.
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

/// A ring of live blocks owned by one allocator; freed on drop.
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

    /// One operation: free slot `i`, allocate a new block into it.
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

fn bench_churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn");
    group.throughput(Throughput::Elements(1));
    // The ring lives across criterion samples (the closure runs once per
    // sample), so every sample measures the same steady state.
    {
        let mut ring = Ring::new(strata::Strata, SEED);
        group.bench_function("strata", |b| b.iter(|| ring.step()));
    }
    {
        let mut ring = Ring::new(System, SEED);
        group.bench_function("system", |b| b.iter(|| ring.step()));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bench_churn
}
criterion_main!(benches);
