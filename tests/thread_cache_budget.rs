//! The adaptive thread-cache budget through the global allocator: a thread whose
//! working set overflows its own budget (2 MiB) caches more, borrowed from the
//! process-wide pool; many such threads together borrow no more than the pool; and
//! what a thread borrowed goes back when it exits. One test, in phases, so that no
//! other test of this binary borrows meanwhile.

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::MIB;

/// Eight rounds of: allocate `bytes` in blocks of 1-8 KiB (many classes, none
/// past its own cap), write them, free them all. A working set the thread cache
/// then holds: a list grows a batch a round (it runs empty between its
/// overflows), and a thread that does nothing else misses often, so it borrows.
fn churn(bytes: usize) {
    for _ in 0..8 {
        let mut blocks = Vec::new();
        let mut held = 0;
        let mut i = 0usize;
        while held < bytes {
            let size = 1024 + (i * 1031) % (7 << 10);
            blocks.push(vec![i as u8; size]);
            held += size;
            i += 1;
        }
        std::hint::black_box(&blocks);
        drop(blocks);
    }
}

#[test]
fn overflowing_threads_borrow_within_the_pool_and_give_back_at_exit() {
    let s = strata::stats();
    assert_eq!(
        s.thread_cache_pool_bytes,
        32 * MIB as u64,
        "the default pool"
    );
    let lent_before = s.thread_cache_lent_bytes;

    // One thread: 5 MiB overflows its 2 MiB budget; it keeps more than 2 MiB cached.
    let cached = thread::spawn(|| {
        churn(5 * MIB);
        strata::stats().thread_cached_bytes as usize
    })
    .join()
    .unwrap();
    if common::percpu_front_serves() {
        // STRATA_PERCPU in the environment: threads are served per CPU (all, or
        // all but the first ones), with no thread cache to borrow for.
        eprintln!("per-CPU front end on: the thread-cache budget is not exercised");
        return;
    }
    assert!(
        cached > 2 * MIB,
        "an overflowing thread cached {cached} bytes, no more than its own budget"
    );
    assert_eq!(strata::stats().thread_cache_lent_bytes, lent_before);

    // Sixteen threads at once with a pool of 8 MiB: together within it.
    strata::set_thread_cache_pool_bytes(8 * MIB);
    let (held, go) = (Arc::new(Barrier::new(17)), Arc::new(Barrier::new(17)));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (held, go) = (held.clone(), go.clone());
            thread::spawn(move || {
                churn(4 * MIB);
                held.wait();
                go.wait();
            })
        })
        .collect();
    held.wait();
    let s = strata::stats();
    assert!(s.thread_cache_lent_bytes > lent_before, "nothing borrowed");
    assert!(
        s.thread_cache_lent_bytes <= 8 * MIB as u64,
        "lent {} of a pool of 8 MiB",
        s.thread_cache_lent_bytes
    );
    go.wait();
    for t in threads {
        t.join().unwrap();
    }
    // Every exited thread gave its room back.
    assert_eq!(strata::stats().thread_cache_lent_bytes, lent_before);
    strata::set_thread_cache_pool_bytes(32 * MIB);
    strata::validate_heap().unwrap();
}
