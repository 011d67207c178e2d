//! xmalloc-like (Lever and Boreham's xmalloc-test): N threads only allocate,
//! N other threads only free.
//!
//! Producers allocate 64-byte blocks, link them into chains of 256 through the
//! blocks themselves (no container is allocated) and push each chain onto a
//! shared bounded queue; consumers pop chains, verify every block and free it.
//! Every free is remote. The figure is blocks passed (allocated by one thread
//! and freed by another) per second; `--threads N` runs 2N threads.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::common::{Block, Gate, timed};

const SIZE: usize = 64;
const CHAIN: usize = 256;
/// Chains the queue holds per producer before producers wait.
const QUEUE_PER_PRODUCER: usize = 16;
const WHAT: &str = "xmalloc";
/// Offset of the link word: between the block's head and tail stamps.
const LINK: usize = 8;

/// A singly linked list of 64-byte blocks, linked through the word at `LINK`.
struct Chain {
    head: Option<NonNull<u8>>,
    len: usize,
}

// SAFETY: a chain owns its blocks exclusively (they are only reachable from
// it), and heap blocks may be freed by any thread.
unsafe impl Send for Chain {}

impl Chain {
    fn new() -> Chain {
        Chain { head: None, len: 0 }
    }

    fn push(&mut self, b: Block) {
        let p = b.into_raw();
        let next = self.head.map_or(std::ptr::null_mut(), NonNull::as_ptr);
        // SAFETY: the block is live and `SIZE` bytes long, so bytes
        // LINK..LINK + 8 lie inside it, clear of the stamps at 0..8 and
        // SIZE - 8..SIZE.
        unsafe { p.as_ptr().add(LINK).cast::<*mut u8>().write_unaligned(next) };
        self.head = Some(p);
        self.len += 1;
    }

    /// Verifies and frees every block; returns how many there were.
    fn free_all(self) -> u64 {
        let mut next = self.head;
        let mut n = 0;
        while let Some(p) = next {
            // SAFETY: `p` is a live block pushed by `push`, which wrote the
            // link word; it is read before the block is freed.
            next = NonNull::new(unsafe { p.as_ptr().add(LINK).cast::<*mut u8>().read_unaligned() });
            // SAFETY: `p` came from `Block::into_raw` in `push` (a block of
            // `SIZE` bytes) and is taken back exactly once, here.
            unsafe { Block::from_raw(p, SIZE) }.free(WHAT);
            n += 1;
        }
        debug_assert_eq!(n, self.len as u64);
        n
    }
}

struct Queue {
    chains: VecDeque<Chain>,
    producers_left: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    not_empty: Condvar,
    not_full: Condvar,
    cap: usize,
}

fn producer(shared: &Shared, gate: &Gate) -> u64 {
    gate.begin();
    while gate.running() {
        let mut chain = Chain::new();
        for _ in 0..CHAIN {
            chain.push(Block::new(SIZE));
        }
        let mut q = shared.queue.lock().expect("queue lock");
        while q.chains.len() >= shared.cap {
            q = shared.not_full.wait(q).expect("queue lock");
        }
        q.chains.push_back(chain);
        drop(q);
        shared.not_empty.notify_one();
    }
    let mut q = shared.queue.lock().expect("queue lock");
    q.producers_left -= 1;
    drop(q);
    shared.not_empty.notify_all();
    gate.finish();
    0
}

fn consumer(shared: &Shared, gate: &Gate) -> u64 {
    gate.begin();
    let mut passed = 0;
    loop {
        let mut q = shared.queue.lock().expect("queue lock");
        while q.chains.is_empty() && q.producers_left > 0 {
            q = shared.not_empty.wait(q).expect("queue lock");
        }
        let Some(chain) = q.chains.pop_front() else {
            break; // empty and every producer has finished
        };
        drop(q);
        shared.not_full.notify_one();
        passed += chain.free_all();
    }
    gate.finish();
    passed
}

pub fn run(threads: usize, dur: Duration) -> (u64, Duration) {
    let cap = QUEUE_PER_PRODUCER * threads;
    let shared = Shared {
        queue: Mutex::new(Queue {
            chains: VecDeque::with_capacity(cap),
            producers_left: threads,
        }),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
        cap,
    };
    timed(2 * threads, dur, |t, gate| {
        if t < threads {
            producer(&shared, gate)
        } else {
            consumer(&shared, gate)
        }
    })
}
