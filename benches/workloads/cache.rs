//! cache-scratch and cache-thrash (Berger et al., "Hoard: a scalable memory
//! allocator for multithreaded applications", ASPLOS 2000): false sharing that
//! the allocator causes.
//!
//! In both, every thread repeatedly allocates an 8-byte object, writes each of
//! its bytes 1,000 times (reading each back) and frees it. If the allocator
//! hands objects on one cache line to different threads, those writes bounce
//! the line between cores.
//!
//! - cache-thrash (active false sharing): the threads allocate concurrently;
//!   an allocator that serves them from a shared pool places their objects side
//!   by side.
//! - cache-scratch (passive false sharing): the main thread first allocates one
//!   object per thread, back to back, and gives one to each thread, which frees
//!   it before it starts. An allocator that lets the freeing thread reuse that
//!   object hands every thread a piece of the same cache line.
//!
//! The figure is objects (allocate, 8,000 writes, free) per second over all
//! threads; with 1 thread both are the same.

use std::sync::Mutex;
use std::time::Duration;

use crate::common::{Block, Gate, timed};

const OBJ: usize = 8;
const WRITES: usize = 1000;

/// The measured loop of one thread; returns objects done.
fn work(gate: &Gate, what: &str) -> u64 {
    let mut n = 0;
    while gate.running() {
        let b = Block::new(OBJ);
        let p = b.as_ptr();
        for r in 0..WRITES {
            for k in 0..OBJ {
                // SAFETY: `k < OBJ`, inside the live block.
                unsafe {
                    p.add(k).write_volatile((k + r) as u8);
                    let _ = p.add(k).read_volatile();
                }
            }
        }
        for k in 0..OBJ {
            // SAFETY: `k < OBJ`, inside the live block.
            let got = unsafe { p.add(k).read_volatile() };
            let want = (k + WRITES - 1) as u8;
            if got != want {
                crate::common::corrupt(what, p, OBJ, u64::from(got), u64::from(want));
            }
        }
        b.stamp();
        b.free(what);
        n += 1;
    }
    n
}

pub fn thrash(threads: usize, dur: Duration) -> (u64, Duration) {
    timed(threads, dur, |_, gate| {
        gate.begin();
        let n = work(gate, "cache-thrash");
        gate.finish();
        n
    })
}

pub fn scratch(threads: usize, dur: Duration) -> (u64, Duration) {
    let given: Vec<Mutex<Option<Block>>> = (0..threads)
        .map(|_| Mutex::new(Some(Block::new(OBJ))))
        .collect();
    timed(threads, dur, |t, gate| {
        let mine = given[t].lock().expect("lock").take();
        gate.begin();
        if let Some(b) = mine {
            b.free("cache-scratch");
        }
        let n = work(gate, "cache-scratch");
        gate.finish();
        n
    })
}
