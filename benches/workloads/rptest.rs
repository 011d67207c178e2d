//! rptest-like (rpmalloc's benchmark): sizes 8-16,000 bytes, with frees by other
//! threads.
//!
//! Each round a thread allocates a set of 1,000 blocks (log-uniform sizes from
//! 8 to 16,000 bytes), replaces 100 of them at random, and then either frees
//! the set itself or, every other round, hands the whole set to the next
//! thread (a ring) to free; it also frees the sets other threads handed to it.
//! A set is freed locally instead when the next thread already has 4 waiting,
//! which bounds memory when threads outnumber cores. With one thread the
//! "next thread" is itself. The figure is allocations per second.

use std::sync::Mutex;
use std::time::Duration;

use crate::common::{Block, Rng, SizeTable, timed};

const MIN: usize = 8;
const MAX: usize = 16_000;
const SET: usize = 1000;
const REPLACE: usize = 100;
const MAX_WAITING: usize = 4;
const WHAT: &str = "rptest";

fn free_set(set: Vec<Block>) {
    for b in set {
        b.free(WHAT);
    }
}

pub fn run(threads: usize, dur: Duration) -> (u64, Duration) {
    let mailboxes: Vec<Mutex<Vec<Vec<Block>>>> = (0..threads)
        .map(|_| Mutex::new(Vec::with_capacity(MAX_WAITING + 1)))
        .collect();
    let (ops, elapsed) = timed(threads, dur, |t, gate| {
        let mut rng = Rng::new(0x7270_7465_7374 + t as u64);
        let ratio = (MAX as f64 / MIN as f64).ln();
        let sizes = SizeTable::new(&mut rng, |r| {
            ((MIN as f64 * (ratio * r.unit()).exp()) as usize).clamp(MIN, MAX)
        });
        let next = &mailboxes[(t + 1) % threads];
        let mine = &mailboxes[t];
        let mut inbox: Vec<Vec<Block>> = Vec::with_capacity(MAX_WAITING + 1);
        let mut ops = 0;
        let mut round = 0u64;
        gate.begin();
        while gate.running() {
            round += 1;
            let mut set: Vec<Block> = Vec::with_capacity(SET);
            for _ in 0..SET {
                set.push(Block::new(sizes.pick(&mut rng)));
            }
            for _ in 0..REPLACE {
                let i = rng.below(SET);
                let fresh = Block::new(sizes.pick(&mut rng));
                std::mem::replace(&mut set[i], fresh).free(WHAT);
            }
            ops += (SET + REPLACE) as u64;
            if round % 2 == 0 {
                let mut q = next.lock().expect("mailbox lock");
                if q.len() < MAX_WAITING {
                    q.push(set);
                    set = Vec::new();
                }
            }
            free_set(set);
            std::mem::swap(&mut inbox, &mut *mine.lock().expect("mailbox lock"));
            for s in inbox.drain(..) {
                free_set(s);
            }
        }
        gate.finish();
        ops
    });
    for m in mailboxes {
        for s in m.into_inner().expect("mailbox lock") {
            free_set(s);
        }
    }
    (ops, elapsed)
}
