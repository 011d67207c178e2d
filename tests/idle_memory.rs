//! Idle memory goes back to the OS without the program calling anything: once the
//! heap has grown past 64 MiB the background purge thread starts on its own, and
//! memory that threads freed and then left alone (in the central tier after they
//! exited, or in per-CPU caches while they sleep) is returned within a few purge
//! delays. Each case runs in a child process of this binary, so that the setting
//! it needs is in the environment at load time and no other test's heap counts.

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::MIB;
use common::child::{self, Env};

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "STRATA_IDLE_MEMORY_CHILD";
/// Threads that churn, then idle or exit.
const THREADS: usize = 48;
/// How long a slow, shared CI machine gets for what takes about two purge delays.
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs the `child` test of this binary with `action` and `vars` (and none of the
/// parent's `STRATA_*`); panics with its output if it fails.
fn run_child(action: &str, vars: &[(&str, &str)]) -> String {
    let mut all = vec![(CHILD_ENV, action)];
    all.extend_from_slice(vars);
    child::pass("child", Env::Clean, &all)
}

/// Each thread churns a ring of 512 blocks of 16-1,024 B (as in the issue's
/// measurement), frees it all, and then waits at `idle` until told to go on.
fn churn(seed: usize) {
    let mut ring: Vec<Vec<u8>> = Vec::with_capacity(512);
    let mut x = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in 0..20_000usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = 16 + (x % 1009) as usize;
        let v = vec![(i & 0xff) as u8; size];
        if ring.len() < 512 {
            ring.push(v);
        } else {
            ring[i % 512] = v;
        }
    }
    drop(ring);
}

/// Grows the heap past the automatic start (80 MiB of 256 KiB blocks), frees it.
fn grow_and_free() {
    let blocks: Vec<Vec<u8>> = (0..320).map(|i| vec![i as u8; 256 << 10]).collect();
    std::hint::black_box(&blocks);
    drop(blocks);
}

/// Waits until the allocator's resident bytes fall to `limit`; the last reading.
fn wait_resident_below(limit: u64) -> u64 {
    let start = Instant::now();
    loop {
        let r = strata::gauges().resident_bytes;
        if r <= limit || start.elapsed() > PATIENCE {
            return r;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 20 ms until it returns something or `PATIENCE` runs out.
fn wait_until<T>(f: impl Fn() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > PATIENCE {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// What a child does; a plain test run (no `STRATA_IDLE_MEMORY_CHILD`) does nothing.
#[test]
fn child() {
    let Ok(action) = std::env::var(CHILD_ENV) else {
        return;
    };
    // The settings module already ran: the thread is armed, not running.
    assert!(
        !strata::background_purge().running,
        "the thread runs before the heap grew"
    );
    let small: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 16 + i]).collect();
    assert!(
        !strata::background_purge().running || action == "off",
        "a small heap started the thread"
    );
    drop(small);
    if action == "threaded" {
        threads_that_exit_under_64_mib();
        return;
    }
    grow_and_free();
    let status = strata::background_purge();
    match action.as_str() {
        "off" => {
            assert!(!status.running, "STRATA_BACKGROUND_PURGE=0 started it");
            println!("ok");
            return;
        }
        _ => assert!(
            status.running && status.auto_started,
            "the heap grew past 64 MiB and the thread did not start: {status:?}"
        ),
    }
    let go = Arc::new(Barrier::new(THREADS + 1));
    let churned = Arc::new(Barrier::new(THREADS + 1));
    let exit_threads = action == "exit";
    let mut handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (go, churned) = (go.clone(), churned.clone());
            thread::spawn(move || {
                churn(t + 1);
                churned.wait();
                if !exit_threads {
                    // Alive and idle until the parent has looked.
                    go.wait();
                }
            })
        })
        .collect();
    churned.wait();
    if exit_threads {
        for h in handles.drain(..) {
            h.join().unwrap();
        }
    }
    let busy = strata::gauges();
    // Allocated now: the test's own few blocks. Resident should come down to a
    // few MiB over that (chunk reserve, metadata, what the main thread caches).
    let limit = busy.allocated_bytes + 12 * MIB as u64;
    let after = wait_resident_below(limit);
    let status = strata::background_purge();
    println!(
        "{action}: resident {:.1} MiB while busy, {:.1} MiB after idling (allocated {:.1} MiB); {status:?}",
        busy.resident_bytes as f64 / MIB as f64,
        after as f64 / MIB as f64,
        busy.allocated_bytes as f64 / MIB as f64,
    );
    assert!(
        after <= limit,
        "idle memory was not given back: resident {after} > {limit} after {PATIENCE:?}; {status:?}"
    );
    if action == "idle" {
        // What the sleeping threads' CPUs held went back too (their caches, not
        // only the pages behind the central tier): at most what the polling main
        // thread itself uses on its CPU.
        let cached = wait_until(|| {
            let f = strata::percpu_front_counters().expect("the per-CPU front end is on");
            (f.cached_bytes <= 64 << 10).then_some(f.cached_bytes)
        });
        assert!(
            cached.is_some(),
            "idle CPUs were not drained: {:?}",
            strata::percpu_front_counters()
        );
    }
    if !exit_threads {
        go.wait();
        for h in handles {
            h.join().unwrap();
        }
    }
}

/// 12 threads (more than the 8 that make a process threaded) each hold 2 MiB of
/// small blocks at once, so the heap passes 16 MiB but stays far below 64 MiB,
/// then free them and exit: the purge thread starts on its own, and the memory
/// their caches left in the central tier goes back to the OS.
fn threads_that_exit_under_64_mib() {
    let go = Arc::new(Barrier::new(13));
    let handles: Vec<_> = (0..12)
        .map(|t| {
            let go = go.clone();
            thread::spawn(move || {
                let v: Vec<Vec<u8>> = (0..4096).map(|i| vec![t as u8; 256 + i % 256]).collect();
                go.wait();
                assert!(v.iter().all(|b| b.iter().all(|&x| x == t as u8)));
            })
        })
        .collect();
    go.wait();
    let busy = strata::gauges();
    for h in handles {
        h.join().unwrap();
    }
    let status = strata::background_purge();
    assert!(
        busy.mapped_bytes < 64 * MIB as u64,
        "the heap grew to {} bytes: the 64 MiB start, not the threaded one",
        busy.mapped_bytes
    );
    assert!(
        status.running && status.auto_started,
        "12 threads and a heap of {} bytes, and the thread did not start: {status:?}",
        busy.mapped_bytes
    );
    let limit = strata::gauges().allocated_bytes + 8 * MIB as u64;
    let after = wait_resident_below(limit);
    println!(
        "threaded: resident {:.1} MiB while busy, {:.1} MiB after the threads exited; {status:?}",
        busy.resident_bytes as f64 / MIB as f64,
        after as f64 / MIB as f64,
    );
    assert!(
        after <= limit,
        "idle memory was not given back: resident {after} > {limit} after {PATIENCE:?}"
    );
}

#[test]
fn a_threaded_program_gets_the_purge_thread_before_64_mib() {
    let out = run_child("threaded", &[("STRATA_PURGE_DELAY_MS", "200")]);
    println!("{out}");
    assert!(out.contains("threaded: resident"), "{out}");
}

#[test]
fn after_threads_exit_idle_memory_goes_back_without_a_call() {
    let out = run_child("exit", &[("STRATA_PURGE_DELAY_MS", "200")]);
    println!("{out}");
    assert!(out.contains("exit: resident"), "{out}");
}

#[test]
fn per_cpu_caches_of_idle_threads_are_drained_without_a_call() {
    let out = run_child(
        "idle",
        &[("STRATA_PURGE_DELAY_MS", "200"), ("STRATA_PERCPU", "1")],
    );
    println!("{out}");
    assert!(out.contains("idle: resident"), "{out}");
}

#[test]
fn background_purge_0_keeps_the_thread_off_however_the_heap_grows() {
    let out = run_child("off", &[("STRATA_BACKGROUND_PURGE", "0")]);
    assert!(out.contains("ok"), "{out}");
}
