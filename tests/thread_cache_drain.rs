//! The caches of threads that sleep are drained by the background purge thread
//! (`front::thread_cache::drain`): what a sleeping thread cached goes back to the
//! central tier without its help, and the thread, when it wakes, goes on with its
//! heap as before: nothing lost, nothing handed out twice. Each case runs in a
//! child process of this binary, with a short purge delay and the purge thread on
//! from the start, so that no other test's threads count.

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::child::{self, Env};

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a slow, shared CI machine gets for what takes a few purge delays.
const PATIENCE: Duration = Duration::from_secs(30);

/// The settings every child runs with: thread caches only (no per-CPU caches
/// after many threads), a purge delay of 20 ms, the purge thread from the start.
const VARS: &[(&str, &str)] = &[
    ("STRATA_PERCPU", "0"),
    ("STRATA_PURGE_DELAY_MS", "20"),
    ("STRATA_BACKGROUND_PURGE", "1"),
];

fn run_child(name: &str) -> String {
    child::pass(name, Env::Clean, VARS)
}

/// Running `release_memory()` drains the caches of threads that sleep at the
/// moment, without the purge thread (off here) and without an idle delay.
#[test]
#[ignore = "a child of release_memory_drains_sleeping_threads"]
fn child_release() {
    assert!(
        !strata::background_purge().running,
        "STRATA_BACKGROUND_PURGE=0"
    );
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let h = thread::spawn(move || {
        let kept: Vec<(Vec<u8>, u64)> = (0..500u64).map(|i| (block(100, i), i)).collect();
        fill_and_free(4000, 3);
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        for (b, s) in &kept {
            check_block(b, *s);
        }
        fill_and_free(4000, 5);
        strata::validate_heap().expect("the woken thread's heap");
    });
    ready_rx.recv().unwrap();
    let before = strata::stats().thread_cached_bytes;
    // The thread blocks on its channel soon after it said it was ready.
    let drained = wait_for(|| {
        strata::release_memory();
        strata::stats().thread_cached_bytes < 512 << 10
    });
    let after = strata::stats().thread_cached_bytes;
    println!(
        "release: thread-cached {} KiB before, {} KiB after",
        before >> 10,
        after >> 10
    );
    assert!(before > 1 << 20, "the thread cached {before} bytes only");
    assert!(
        drained,
        "release_memory left {after} bytes in a sleeping thread's cache"
    );
    go_tx.send(()).unwrap();
    h.join().unwrap();
    strata::validate_heap().expect("after the thread");
}

#[test]
fn release_memory_drains_sleeping_threads() {
    let out = child::pass(
        "child_release",
        Env::Clean,
        &[("STRATA_PERCPU", "0"), ("STRATA_BACKGROUND_PURGE", "0")],
    );
    println!("{out}");
    assert!(out.contains("release: "), "{out}");
}

/// A block of `size` bytes filled with a pattern of `seed`.
fn block(size: usize, seed: u64) -> Vec<u8> {
    (0..size)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64)) as u8)
        .collect()
}

fn check_block(b: &[u8], seed: u64) {
    for (i, &x) in b.iter().enumerate() {
        assert_eq!(
            x,
            (seed.wrapping_mul(31).wrapping_add(i as u64)) as u8,
            "block of {} bytes (seed {seed}) changed at byte {i}",
            b.len()
        );
    }
}

/// Allocates `n` blocks of 16-1,024 bytes, checks and frees them: the thread's
/// cache ends up holding most of them.
fn fill_and_free(n: usize, seed: u64) {
    let blocks: Vec<(Vec<u8>, u64)> = (0..n as u64)
        .map(|i| {
            let s = seed.wrapping_add(i);
            (block(16 + (s * 7919 % 1009) as usize, s), s)
        })
        .collect();
    for (b, s) in &blocks {
        check_block(b, *s);
    }
}

/// Polls `f` every 10 ms until it holds or `PATIENCE` runs out.
fn wait_for(f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > PATIENCE {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
#[ignore = "a child of a_sleeping_threads_cache_is_drained_and_it_goes_on"]
fn child_sleeping_thread() {
    assert!(
        strata::background_purge().running,
        "STRATA_BACKGROUND_PURGE=1"
    );
    // Two threads fill their caches and sleep: one then goes on allocating, the
    // other exits without another allocation (its exit settles the drained heap).
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let mut wake = Vec::new();
    let mut handles = Vec::new();
    for t in 0..2u64 {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let ready = ready_tx.clone();
        wake.push(go_tx);
        handles.push(thread::spawn(move || {
            fill_and_free(4000, t * 100_000);
            let cached = strata::stats().thread_cached_bytes;
            ready.send(()).unwrap();
            go_rx.recv().unwrap();
            if t == 0 {
                // The heap was drained while this thread slept: it goes on.
                let kept: Vec<(Vec<u8>, u64)> = (0..3000u64)
                    .map(|i| (block(16 + (i * 13 % 1009) as usize, i), i))
                    .collect();
                fill_and_free(4000, 7);
                for (b, s) in &kept {
                    check_block(b, *s);
                }
                strata::validate_heap().expect("the woken thread's heap");
            }
            cached
        }));
    }
    ready_rx.recv().unwrap();
    ready_rx.recv().unwrap();
    // Each thread cached about 2 MiB; what stays is the two objects a list keeps
    // in the three heaps (the main thread's too: it sleeps in `wait_for`).
    let drained = wait_for(|| {
        strata::background_purge().thread_cache_drained_bytes >= 2 << 20
            && strata::stats().thread_cached_bytes < 1 << 20
    });
    let status = strata::background_purge();
    let stats = strata::stats();
    println!(
        "drained {} KiB from sleeping threads; thread-cached now {} KiB",
        status.thread_cache_drained_bytes >> 10,
        stats.thread_cached_bytes >> 10
    );
    assert!(
        drained,
        "the sleeping threads' caches were not drained: {status:?}"
    );
    strata::validate_heap().expect("the main thread's heap");
    fork_and_allocate();
    for w in &wake {
        w.send(()).unwrap();
    }
    for h in handles {
        let cached_before = h.join().unwrap();
        assert!(cached_before > 0);
    }
    strata::validate_heap().expect("after the threads");
}

/// Forks while heaps are drained (the sleeping threads', maybe this thread's):
/// the child allocates, checks its heap and exits within 10 s.
fn fork_and_allocate() {
    // SAFETY: the child calls only the allocator (made safe for that by its fork
    // handlers, which is part of what is tested) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let blocks: Vec<Vec<u8>> = (0..2000u64)
            .map(|i| block(16 + (i % 900) as usize, i))
            .collect();
        let ok = blocks.iter().enumerate().all(|(i, b)| {
            b.iter()
                .enumerate()
                .all(|(k, &x)| x == ((i as u64).wrapping_mul(31).wrapping_add(k as u64)) as u8)
        });
        drop(blocks);
        let code = if !ok {
            3
        } else if strata::validate_heap().is_err() {
            4
        } else {
            0
        };
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child, without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the forked child failed: status {status:#x}"
            );
            return;
        }
        if start.elapsed() > Duration::from_secs(10) {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child did not exit in 10 s");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_sleeping_threads_cache_is_drained_and_it_goes_on() {
    let out = run_child("child_sleeping_thread");
    println!("{out}");
    assert!(out.contains("drained "), "{out}");
}

/// Threads alternate bursts of allocation (a ring of live blocks whose contents
/// are checked at every replacement) with sleeps of 0-30 ms, two purge delays
/// or less, so that drains land on threads that wake during and right after
/// them.
fn burst_and_sleep(t: u64, until: Instant) -> u64 {
    let mut ring: Vec<(Vec<u8>, u64)> = Vec::with_capacity(256);
    let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut n = 0u64;
    while Instant::now() < until {
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = (block(8 + (x % 700) as usize, x), x);
            if ring.len() < 256 {
                ring.push(b);
            } else {
                let i = (x >> 20) as usize % ring.len();
                check_block(&ring[i].0, ring[i].1);
                ring[i] = b;
            }
            n += 1;
        }
        // Half the rounds free the whole ring: the cache is then full of it.
        if x & 1 == 0 {
            for (b, s) in ring.drain(..) {
                check_block(&b, s);
            }
        }
        thread::sleep(Duration::from_millis((x >> 40) % 31));
    }
    for (b, s) in &ring {
        check_block(b, *s);
    }
    strata::validate_heap().expect("a thread's heap after its bursts");
    n
}

#[test]
#[ignore = "a child of drains_race_with_threads_that_wake"]
fn child_bursts() {
    let until = Instant::now() + Duration::from_secs(3);
    let handles: Vec<_> = (0..8u64)
        .map(|t| thread::spawn(move || burst_and_sleep(t + 1, until)))
        .collect();
    let ops: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let status = strata::background_purge();
    println!(
        "bursts: {ops} allocations, {} KiB drained from sleeping threads in {} passes",
        status.thread_cache_drained_bytes >> 10,
        status.passes
    );
    assert!(
        status.thread_cache_drained_bytes > 0,
        "no drain happened: {status:?}"
    );
    strata::validate_heap().expect("after the bursts");
}

#[test]
fn drains_race_with_threads_that_wake() {
    let out = run_child("child_bursts");
    println!("{out}");
    assert!(out.contains("bursts: "), "{out}");
}
