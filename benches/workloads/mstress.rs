//! mstress-like (mimalloc-bench's mstress): server-like allocation where objects
//! migrate between threads, some live long, and threads are destroyed and
//! recreated each phase with some objects surviving between phases.
//!
//! A phase starts N threads; thread `t` makes `1,000 * (t % 8 + 1)` short-lived
//! and half as many retained allocations (so threads have unequal work). Each
//! allocation is `calloc`'d: an array of 1-16 (retained: 1-64) words, and 1 % of
//! them 100 times larger, 0.1 % 1,000 and 0.01 % 10,000 times larger (up to
//! 5 MiB). After each allocation a thread frees a random short-lived object
//! with probability 2/3 and, with probability 1/4, swaps one with a random
//! slot of 1,000 shared by all threads, so objects move between threads. At
//! the end of the phase a thread frees what it holds and exits; the main
//! thread then frees about half of the shared slots, the rest survive into the
//! next phase. Phases repeat until the duration is reached.
//!
//! Every word of an object is written when allocated and checked before it is
//! freed; `calloc`'s zeroing is checked on the last word (see `Items::new`).
//! The figure is allocations per second.
//!
//! `MSTRESS_PHASES=N` in the environment ends the run after at most `N` phases
//! (or the duration, whichever comes first). The phases are the same in every
//! run (their random numbers are seeded by the phase number), so peak RSS can
//! then be compared over the same work: a timed run's peak depends on how many
//! phases the allocator got through.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Rng, corrupt, count_verified, counted};

const TRANSFERS: usize = 1000;
const ALLOCS_PER_THREAD: usize = 1000;
const COOKIE: u64 = 0xbf58_476d_1ce4_e5b9;
/// The largest object, in words: 64 words times 10,000.
const MAX_WORDS: usize = 640_000;
const WHAT: &str = "mstress";

/// A `calloc`'d array of words whose first word encodes its length.
struct Items {
    ptr: NonNull<u64>,
    n: usize,
}

// SAFETY: an `Items` is the only handle to its allocation (the shared slots
// hold it as a raw pointer only while no `Items` exists for it).
unsafe impl Send for Items {}

impl Items {
    fn new(rng: &mut Rng, mut n: usize) -> Items {
        if rng.chance(1) {
            if rng.chance(1) {
                n *= 10_000;
            } else if rng.chance(10) {
                n *= 1000;
            } else {
                n *= 100;
            }
        }
        // SAFETY: plain C allocation, checked for null below.
        let p = unsafe { libc::calloc(n, 8) }.cast::<u64>();
        let Some(ptr) = NonNull::new(p) else {
            eprintln!("calloc of {n} words failed");
            std::process::exit(crate::common::EXIT_VERIFY)
        };
        // The words are written without being read first, as in the original:
        // reading an untouched page maps the shared zero page, and the write
        // that follows then costs a second fault and a TLB shootdown across
        // the process's CPUs, which would charge allocators that return fresh
        // pages from `calloc` for the benchmark's own check. `calloc`'s zeroing
        // is checked on the last word of arrays of two words or more, read
        // only after the word before it (on the same page) has been written.
        for i in 0..n - 1 {
            // SAFETY: `i < n`, inside the live array of `n` words.
            unsafe { p.add(i).write((n - i) as u64 ^ COOKIE) };
        }
        // SAFETY: `n - 1 < n`, inside the live array.
        let last = unsafe { p.add(n - 1) };
        if n > 1 && (last as usize) % 4096 != 0 {
            // SAFETY: as above; the word before it, on the same page, was
            // just written.
            let old = unsafe { last.read() };
            if old != 0 {
                corrupt("mstress (calloc not zeroed)", p.cast(), n * 8, old, 0);
            }
        }
        // SAFETY: as above.
        unsafe { last.write(1 ^ COOKIE) };
        Items { ptr, n }
    }

    fn free(self) {
        let p = self.ptr.as_ptr();
        for i in 0..self.n {
            // SAFETY: `i < n`, inside the live array.
            let w = unsafe { p.add(i).read() };
            let want = (self.n - i) as u64 ^ COOKIE;
            if w != want {
                corrupt(WHAT, p.cast(), self.n * 8, w, want);
            }
        }
        count_verified();
        // SAFETY: the array came from `calloc` and this is its only handle.
        unsafe { libc::free(p.cast()) };
    }

    fn into_raw(self) -> *mut u64 {
        self.ptr.as_ptr()
    }

    /// Takes back an array stored in a shared slot (null: none).
    fn from_raw(p: *mut u64) -> Option<Items> {
        let ptr = NonNull::new(p)?;
        // SAFETY: a non-null slot value is a live array put there by
        // `into_raw` and taken out by exactly one swap (this one); its first
        // word was written before the `AcqRel` swap that published it.
        let w = unsafe { ptr.as_ptr().read() };
        let n = (w ^ COOKIE) as usize;
        if n == 0 || n > MAX_WORDS {
            corrupt("mstress (length word)", p.cast(), 8, w, 0);
        }
        Some(Items { ptr, n })
    }
}

fn stress(tid: usize, phase: u64, transfer: &[AtomicPtr<u64>]) -> u64 {
    let mut rng = Rng::new(phase.wrapping_mul(0x1_0000) + tid as u64 * 43);
    let mut allocs = ALLOCS_PER_THREAD * (tid % 8 + 1);
    let mut retain = allocs / 2;
    let mut data: Vec<Option<Items>> = Vec::new();
    let mut retained: Vec<Items> = Vec::new();
    let mut ops = 0;
    while allocs > 0 || retain > 0 {
        if retain == 0 || (allocs > 0 && rng.chance(50)) {
            allocs -= 1;
            let n = 1 << rng.below(5);
            data.push(Some(Items::new(&mut rng, n)));
        } else {
            retain -= 1;
            let n = 1 << rng.below(7);
            retained.push(Items::new(&mut rng, n));
        }
        ops += 1;
        if !data.is_empty() && rng.chance(66) {
            let i = rng.below(data.len());
            if let Some(x) = data[i].take() {
                x.free();
            }
        }
        if !data.is_empty() && rng.chance(25) {
            let i = rng.below(data.len());
            let j = rng.below(TRANSFERS);
            let mine = data[i].take().map_or(std::ptr::null_mut(), Items::into_raw);
            let theirs = transfer[j].swap(mine, Ordering::AcqRel);
            data[i] = Items::from_raw(theirs);
        }
    }
    for x in retained {
        x.free();
    }
    for x in data.into_iter().flatten() {
        x.free();
    }
    ops
}

pub fn run(threads: usize, dur: Duration) -> (u64, Duration) {
    let transfer: Vec<AtomicPtr<u64>> = (0..TRANSFERS)
        .map(|_| AtomicPtr::new(std::ptr::null_mut()))
        .collect();
    let mut rng = Rng::new(42);
    let mut ops = 0;
    let start = Instant::now();
    let mut phase = 0u64;
    let max_phases = std::env::var("MSTRESS_PHASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    loop {
        phase += 1;
        ops += std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let transfer = &transfer;
                    s.spawn(move || counted(|| stress(t, phase, transfer)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("mstress thread panicked"))
                .sum::<u64>()
        });
        let last = start.elapsed() >= dur || phase >= max_phases;
        for slot in &transfer {
            if last || rng.chance(50) {
                if let Some(x) = Items::from_raw(slot.swap(std::ptr::null_mut(), Ordering::AcqRel))
                {
                    x.free();
                }
            }
        }
        if last {
            break;
        }
    }
    (ops, start.elapsed())
}
