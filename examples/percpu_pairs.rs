//! Cost of one push+pop pair on the per-CPU slab (the rseq critical sections),
//! single thread, pinned to one CPU, against the same pair on a plain array stack
//! (what a thread cache's free list costs at best).
//!
//! ```text
//! cargo run --release --example percpu_pairs [N]      (N defaults to 50_000_000)
//! ```
//!
//! Prints ns per pair for both, the rseq mode, and the aborts seen. The measured
//! loops are `#[inline(never)]` functions (`measured_percpu`, `measured_array`), so
//! `objdump -d` shows the inlined sections, and an instruction counter can be
//! toggled on them. Under valgrind the `rseq` system call is not supported (glibc
//! does not register, ours gets ENOSYS), so the mode is `Off` and nothing runs.

use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use strata::percpu::{self, RseqArea, Slab};

const DEFAULT_N: usize = 50_000_000;

#[inline(never)]
fn measured_percpu(s: &Slab, area: NonNull<RseqArea>, n: usize) -> usize {
    let p = NonNull::new(0x1000 as *mut u8).unwrap();
    let mut hits = 0;
    for _ in 0..n {
        // SAFETY: the calling thread's area; class 0 exists; `p` is pushed and popped
        // back before the next push, so it is never in two slots.
        unsafe {
            if s.push(area, 0, black_box(p)) {
                hits += s.pop(area, 0).is_some() as usize;
            }
        }
    }
    hits
}

#[inline(never)]
fn measured_array(stack: &mut [usize; 64], top: &mut usize, n: usize) -> usize {
    let mut hits = 0;
    for _ in 0..n {
        if *top < stack.len() {
            stack[*top] = black_box(0x1000);
            *top += 1;
            *top -= 1;
            hits += (black_box(stack[*top]) != 0) as usize;
        }
    }
    hits
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(DEFAULT_N);
    let mode = percpu::mode();
    let ncpu = percpu::possible_cpus().unwrap_or(0);
    println!("rseq mode {mode:?}, possible CPUs {ncpu}");
    let Some(area) = percpu::current() else {
        println!("no rseq area: nothing to measure");
        return;
    };
    // Pin to the current CPU, so that the pair does not migrate mid-measurement.
    // SAFETY: the cpu_set_t calls only touch the local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(libc::sched_getcpu() as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
    let s = Slab::new(ncpu, &[64], &[64]).unwrap();
    let a0 = percpu::aborts();
    measured_percpu(&s, area, n / 10);
    let t = Instant::now();
    let hits = measured_percpu(&s, area, n);
    let percpu_ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    assert_eq!(hits, n);

    let mut stack = [0usize; 64];
    let mut top = 0;
    measured_array(&mut stack, &mut top, n / 10);
    let t = Instant::now();
    let hits = measured_array(&mut stack, &mut top, n);
    let array_ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    assert_eq!(hits, n);
    println!(
        "push+pop pair: per-CPU slab {percpu_ns:.2} ns, plain array {array_ns:.2} ns ({n} pairs, {} aborts)",
        percpu::aborts() - a0
    );
}
