//! Fast path, single thread, strata and `System` side by side:
//!
//! - `pair/<size>`: one allocation and its free, the block touched in between;
//! - `batch/<size>`: 64 allocations, then their 64 frees (in allocation order);
//! - `alloc_zeroed/<size>`: a zeroed allocation and its free;
//! - `realloc/doubling`: a block grown from 16 B to 1 MiB by doubling
//!   (16 reallocs), then freed;
//! - `realloc/steps`: a block grown from 16 B to 16 KiB in 16-byte steps
//!   (1,023 reallocs), then freed.
//!
//! Sizes: 16, 64, 256 B, 1, 4, 64 KiB and 1 MiB (`alloc_zeroed`: 64 B, 4 KiB,
//! 64 KiB, 1 MiB). Throughput counts allocations (pairs, batch members,
//! reallocs). Both allocators are called directly through `GlobalAlloc`; the
//! bench binary's own global allocator stays the system one.
//!
//! ```text
//! cargo bench --bench fast_path
//! cargo bench --bench fast_path -- 'pair/'      # a subset
//! ```

use std::alloc::{GlobalAlloc, Layout, System, handle_alloc_error};
use std::hint::black_box;
use std::time::Duration;

use criterion::{Bencher, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: &[usize] = &[16, 64, 256, 1 << 10, 4 << 10, 64 << 10, 1 << 20];
const ZEROED_SIZES: &[usize] = &[64, 4 << 10, 64 << 10, 1 << 20];
const BATCH: usize = 64;
const ALIGN: usize = 8;

fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

fn layout(size: usize) -> Layout {
    match Layout::from_size_align(size, ALIGN) {
        Ok(l) => l,
        Err(_) => unreachable!("sizes are small and ALIGN is a power of two"),
    }
}

#[inline(always)]
fn alloc_touch<A: GlobalAlloc>(alloc: &A, layout: Layout) -> *mut u8 {
    // SAFETY: every layout here has a non-zero size.
    let p = unsafe { alloc.alloc(layout) };
    if p.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `p` is valid for `layout.size() >= 1` bytes.
    unsafe { p.write_volatile(1) };
    p
}

/// Runs `f(bencher, allocator)` as one benchmark per allocator in `group`.
fn both(c: &mut Criterion, group: &str, elements: u64, mut f: impl FnMut(&mut Bencher<'_>, Alloc)) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(elements));
    g.bench_function("strata", |b| f(b, Alloc::Strata));
    g.bench_function("system", |b| f(b, Alloc::System));
    g.finish();
}

/// The allocator under test, dispatched statically in each benchmark body.
#[derive(Clone, Copy)]
enum Alloc {
    Strata,
    System,
}

/// Calls `$body` with `$a` bound to the chosen allocator (monomorphised, so
/// the dispatch is outside the measured loop).
macro_rules! with_alloc {
    ($which:expr, $a:ident => $body:expr) => {
        match $which {
            Alloc::Strata => {
                let $a = &strata::Strata;
                $body
            }
            Alloc::System => {
                let $a = &System;
                $body
            }
        }
    };
}

fn pairs(c: &mut Criterion) {
    for &size in SIZES {
        let l = layout(size);
        both(c, &format!("pair/{}", label(size)), 1, |b, which| {
            with_alloc!(which, a => b.iter(|| {
                let p = alloc_touch(a, l);
                // SAFETY: `p` was just allocated by `a` with `l`.
                unsafe { a.dealloc(black_box(p), l) };
            }))
        });
    }
}

fn batches(c: &mut Criterion) {
    for &size in SIZES {
        let l = layout(size);
        both(
            c,
            &format!("batch/{}", label(size)),
            BATCH as u64,
            |b, which| {
                let mut held = [std::ptr::null_mut::<u8>(); BATCH];
                with_alloc!(which, a => b.iter(|| {
                    for slot in held.iter_mut() {
                        *slot = alloc_touch(a, l);
                    }
                    for &p in held.iter() {
                        // SAFETY: every slot holds a block just allocated
                        // by `a` with `l`, freed once.
                        unsafe { a.dealloc(black_box(p), l) };
                    }
                }))
            },
        );
    }
}

fn zeroed(c: &mut Criterion) {
    for &size in ZEROED_SIZES {
        let l = layout(size);
        both(
            c,
            &format!("alloc_zeroed/{}", label(size)),
            1,
            |b, which| {
                with_alloc!(which, a => b.iter(|| {
                    // SAFETY: non-zero size.
                    let p = unsafe { a.alloc_zeroed(l) };
                    if p.is_null() {
                        handle_alloc_error(l);
                    }
                    // SAFETY: `p` is valid for `size` bytes; reading the last
                    // one checks the zeroing lightly and keeps the call alive.
                    assert_eq!(unsafe { p.add(size - 1).read_volatile() }, 0);
                    // SAFETY: `p` was just allocated by `a` with `l`.
                    unsafe { a.dealloc(p, l) };
                }))
            },
        );
    }
}

/// Grows a block from `from` bytes through every size of `steps`, checking
/// that the first byte survives each move; returns nothing, frees the block.
#[inline(always)]
fn grow<A: GlobalAlloc>(a: &A, from: usize, steps: impl Iterator<Item = usize>) {
    let mut l = layout(from);
    let p0 = alloc_touch(a, l);
    let mut p = p0;
    for new_size in steps {
        // SAFETY: `p` is live with layout `l`; `new_size` is non-zero and
        // small enough not to overflow when rounded to ALIGN.
        p = unsafe { a.realloc(p, l, new_size) };
        if p.is_null() {
            handle_alloc_error(layout(new_size));
        }
        l = layout(new_size);
        // SAFETY: `p` is valid for `new_size` bytes.
        unsafe {
            assert_eq!(p.read_volatile(), 1, "realloc lost the contents");
            p.add(new_size - 1).write_volatile(2);
        }
    }
    // SAFETY: `p` is the live block, with layout `l`.
    unsafe { a.dealloc(black_box(p), l) };
}

fn reallocs(c: &mut Criterion) {
    // 16 B -> 1 MiB by doubling: 16 reallocs.
    let doubling = || (5..=20).map(|k| 1usize << k);
    both(
        c,
        "realloc/doubling",
        doubling().count() as u64,
        |b, which| with_alloc!(which, a => b.iter(|| grow(a, 16, doubling()))),
    );
    // 16 B -> 16 KiB in 16-byte steps: 1,023 reallocs.
    let steps = || (2..=1024).map(|k| 16 * k);
    both(
        c,
        "realloc/steps",
        steps().count() as u64,
        |b, which| with_alloc!(which, a => b.iter(|| grow(a, 16, steps()))),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    targets = pairs, batches, zeroed, reallocs
}
criterion_main!(benches);
