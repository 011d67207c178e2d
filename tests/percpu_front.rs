//! The per-CPU front end wired into the global allocator (`STRATA_PERCPU=1`): a
//! multi-threaded, content-checked churn with it on, in a child process (the
//! setting is read once, at the first allocation), checking through its counters
//! that it really served; that with `auto`, and by default, only the threads
//! beyond the first ones are served per CPU; and that a program with few threads
//! never builds it.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;
use common::child::{self, Env};
use std::sync::mpsc;

use strata::Strata;
use strata::percpu::{self, Mode, Slab};

#[global_allocator]
static A: Strata = Strata;

fn child(test: &str, percpu_setting: Option<&str>) -> String {
    // Clean: the CI step that sets STRATA_PERCPU=1 for everything must not decide
    // for the child that tests the default.
    match percpu_setting {
        Some(v) => child::pass(test, Env::Clean, &[("STRATA_PERCPU", v)]),
        None => child::pass(test, Env::Clean, &[]),
    }
}

/// What a child prints where the machine cannot run the front end.
const UNAVAILABLE: &str = "percpu front: unavailable on this machine";

/// Runs child `test` (in a clean environment with `vars`), which must pass and
/// print `ok`, or say that the machine cannot run the front end.
fn child_says(test: &str, vars: &[(&str, &str)], ok: &str) {
    let out = child::pass(test, Env::Clean, vars);
    assert!(out.contains(ok) || out.contains(UNAVAILABLE), "{out}");
}

/// The front end's counters in a child, or None where the machine cannot run it
/// (checked: if it can, the front end being off fails the test with `setting`).
fn counters_or_unavailable(setting: &str) -> Option<percpu::FrontCounters> {
    let counters = strata::percpu_front_counters();
    if counters.is_none() {
        assert!(
            !machine_allows_it(),
            "{setting}, and rseq + membarrier work here, but the front end is off"
        );
        println!("{UNAVAILABLE}");
    }
    counters
}

/// Whether this machine can run the per-CPU front end (rseq, and membarrier for
/// non-owners): if so, `STRATA_PERCPU=1` must turn it on.
fn machine_allows_it() -> bool {
    if percpu::mode() == Mode::Off {
        return false;
    }
    let Some(ncpu) = percpu::possible_cpus() else {
        return false;
    };
    Slab::new(ncpu, &[1], &[1]).is_ok_and(|s| s.can_fence().is_ok())
}

/// A block of `len` bytes whose every byte says who wrote it.
fn filled(len: usize, tag: u8) -> Vec<u8> {
    vec![tag; len]
}

fn check(v: &[u8], tag: u8) {
    assert!(v.iter().all(|&b| b == tag), "a block's content changed");
}

/// Each thread keeps a window of live blocks of mixed small sizes, checks and frees
/// the oldest, and hands every seventh to its neighbour to free (cross-thread).
fn churn(threads: usize, rounds: usize) {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| mpsc::channel::<(Vec<u8>, u8)>())
        .unzip();
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let next = txs[(t + 1) % threads].clone();
            std::thread::spawn(move || {
                let mut live: std::collections::VecDeque<(Vec<u8>, u8)> =
                    std::collections::VecDeque::new();
                let mut x = t as u64 * 0x9e37_79b9 + 1;
                for i in 0..rounds {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let len = 1 + (x % 2048) as usize;
                    let tag = (x >> 32) as u8;
                    live.push_back((filled(len, tag), tag));
                    if live.len() > 64 {
                        let (v, tag) = live.pop_front().unwrap();
                        check(&v, tag);
                        if i % 7 == 0 {
                            let _ = next.send((v, tag));
                        }
                    }
                    while let Ok((v, tag)) = rx.try_recv() {
                        check(&v, tag);
                    }
                }
                for (v, tag) in live {
                    check(&v, tag);
                }
                drop(next);
                rx
            })
        })
        .collect();
    drop(txs);
    let rxs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for rx in rxs {
        while let Ok((v, tag)) = rx.try_recv() {
            check(&v, tag);
        }
    }
}

#[test]
fn percpu_front_serves_when_enabled() {
    child_says(
        "child_percpu_on",
        &[("STRATA_PERCPU", "1")],
        "percpu front: on",
    );
}

#[test]
#[ignore = "run by percpu_front_serves_when_enabled in a child process"]
fn child_percpu_on() {
    // The first allocation decides; make one, then look.
    drop(Box::new(1u64));
    let Some(before) = counters_or_unavailable("STRATA_PERCPU=1") else {
        return;
    };
    churn(4, 100_000);
    let after = strata::percpu_front_counters().unwrap();
    // Refills are misses; every refilled object pushed onto a CPU's stack is later
    // a hit (or drained), so many refilled objects mean the per-CPU path served.
    assert!(after.refills > before.refills, "{after:?}");
    assert!(
        after.refilled_objects > before.refilled_objects + 1000,
        "{after:?}"
    );
    strata::validate_heap().unwrap();
    strata::flush_thread_cache();
    let drained = strata::percpu_front_counters().unwrap();
    assert_eq!(drained.cached_bytes, 0, "{drained:?}");
    assert!(drained.drains > after.drains);
    strata::validate_heap().unwrap();
    // Still serving after the drain.
    churn(2, 10_000);
    strata::release_memory();
    strata::validate_heap().unwrap();
    println!("percpu front: on ({after:?})");
}

/// `STRATA_PERCPU=auto`: at most one thread heap per possible CPU is live at a
/// time; the threads beyond those are served per CPU.
#[test]
fn auto_gives_thread_caches_to_the_first_threads_only() {
    child_says(
        "child_percpu_auto",
        &[("STRATA_PERCPU", "auto")],
        "percpu first threads: ok",
    );
}

#[test]
#[ignore = "run by auto_gives_thread_caches_to_the_first_threads_only in a child process"]
fn child_percpu_auto() {
    first_threads_then_per_cpu(percpu::possible_cpus().unwrap() as usize);
}

/// The default (`STRATA_PERCPU` unset): thread caches for the first threads live
/// at a time, `STRATA_PERCPU_AFTER` of them (by default max(128, 8 x CPUs)), and
/// per CPU beyond; the slab is built only then.
#[test]
fn by_default_threads_beyond_the_limit_are_served_per_cpu() {
    child_says(
        "child_percpu_after",
        &[("STRATA_PERCPU_AFTER", "2")],
        "percpu first threads: ok",
    );
}

#[test]
#[ignore = "run by by_default_threads_beyond_the_limit_are_served_per_cpu in a child process"]
fn child_percpu_after() {
    first_threads_then_per_cpu(2);
}

/// `first + 4` threads live at once, each with 2,000 blocks, content-checked: at
/// most `first` of them have a thread heap, and the others are served per CPU
/// (where the machine allows it), whose slab did not exist before them.
fn first_threads_then_per_cpu(first: usize) {
    drop(Box::new(1u64));
    // The main thread alone: a thread heap, and no slab yet.
    assert_eq!(strata::percpu_front_counters(), None);
    let threads = first + 4;
    let all_in = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
    let go_on = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (all_in, go_on) = (all_in.clone(), go_on.clone());
            std::thread::spawn(move || {
                let mut v: Vec<Vec<u8>> =
                    (0..2_000).map(|i| filled(16 + i % 500, t as u8)).collect();
                all_in.wait();
                go_on.wait();
                for (i, b) in v.iter().enumerate() {
                    assert_eq!(b.len(), 16 + i % 500);
                    check(b, t as u8);
                }
                v.clear();
            })
        })
        .collect();
    all_in.wait();
    let live = strata::stats().thread_heaps_live as usize;
    go_on.wait();
    for h in handles {
        h.join().unwrap();
    }
    let Some(after) =
        counters_or_unavailable(&format!("{threads} threads, {first} with thread caches"))
    else {
        return;
    };
    // The main thread's heap counts among the first.
    assert!(
        live <= first,
        "{live} thread heaps live, at most {first} wanted"
    );
    assert!(after.refills > 0, "no thread was served per CPU: {after:?}");
    strata::validate_heap().unwrap();
    println!("percpu first threads: ok ({live} thread heaps, {after:?})");
}

/// A program with fewer threads than the default limit never builds the front
/// end; `STRATA_PERCPU=0` keeps it off however many threads run.
#[test]
fn few_threads_or_percpu_0_never_build_the_front_end() {
    child("child_percpu_default", None);
    child("child_percpu_default", Some("0"));
    child::pass(
        "child_percpu_default",
        Env::Clean,
        &[("STRATA_PERCPU", "0"), ("STRATA_PERCPU_AFTER", "1")],
    );
}

#[test]
#[ignore = "run by few_threads_or_percpu_0_never_build_the_front_end in a child process"]
fn child_percpu_default() {
    churn(6, 10_000);
    assert_eq!(strata::percpu_front_counters(), None);
    strata::validate_heap().unwrap();
}

/// The default limit: 128 thread caches, or 8 per usable CPU where that is more.
#[test]
fn the_default_limit_is_128_or_8_per_cpu() {
    use strata::percpu::default_thread_caches;
    assert_eq!(default_thread_caches(1), 128);
    assert_eq!(default_thread_caches(16), 128);
    assert_eq!(default_thread_caches(17), 136);
    assert_eq!(default_thread_caches(256), 2048);
    assert_eq!(default_thread_caches(usize::MAX), usize::MAX);
}

#[test]
fn capacities_follow_demand_within_the_budget() {
    child_says(
        "child_capacities",
        &[("STRATA_PERCPU", "1")],
        "capacities: ok",
    );
}

#[test]
#[ignore = "run by capacities_follow_demand_within_the_budget in a child process"]
fn child_capacities() {
    drop(Box::new(1u64));
    let Some(start) = counters_or_unavailable("STRATA_PERCPU=1") else {
        return;
    };
    let ncpu = percpu::possible_cpus().unwrap() as u64;
    assert_eq!(start.budget_bytes, ncpu * (2 << 20), "{start:?}");
    // The capacities start at 8 KiB a class at most; churning many blocks of a few
    // classes makes those classes miss, and each miss widens them.
    churn(4, 100_000);
    let grown = strata::percpu_front_counters().unwrap();
    assert!(grown.grows > start.grows, "no class widened: {grown:?}");
    assert!(grown.capacity_bytes <= grown.budget_bytes, "{grown:?}");
    let s = strata::stats();
    assert_eq!(s.percpu_budget_bytes, grown.budget_bytes);
    assert!(s.percpu_capacity_bytes > 0 && s.to_string().contains("per-CPU caches"));
    // A budget below what they hold now: the background purge thread narrows
    // every CPU over its share, within a few passes, down to the initial
    // capacities at most (what fits in 8 KiB for each class up to 8 KiB: under
    // 512 KiB a CPU).
    strata::set_purge_delay_ms(20);
    assert!(strata::start_background_purge());
    let budget: u64 = 64 << 10;
    strata::set_percpu_cache_bytes(budget as usize);
    let floor = ncpu * (512 << 10);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let narrowed = loop {
        let f = strata::percpu_front_counters().unwrap();
        if f.capacity_bytes <= floor || std::time::Instant::now() > deadline {
            break f;
        }
        // Keep a CPU busy, so that it is narrowed for the budget, not only
        // drained as idle.
        churn(1, 2_000);
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        narrowed.capacity_bytes <= floor && narrowed.capacity_bytes < grown.capacity_bytes,
        "capacities stayed over the budget: {grown:?} -> {narrowed:?} (floor {floor})"
    );
    assert!(narrowed.shrinks > grown.shrinks, "{narrowed:?}");
    strata::validate_heap().unwrap();
    println!("capacities: ok ({start:?} -> {grown:?} -> {narrowed:?})");
}

#[test]
fn a_double_free_of_a_block_in_a_cpu_cache_stops_the_process_naming_it() {
    if !machine_allows_it() || !cfg!(feature = "harden") {
        return;
    }
    let out = child::run("child_double_free", Env::Clean, &[("STRATA_PERCPU", "1")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the double free went unnoticed: {stderr}"
    );
    assert!(
        stderr.contains("double free of 0x") && stderr.contains("per-CPU cache"),
        "{stderr}"
    );
}

#[test]
#[ignore = "run by a_double_free_of_a_block_in_a_cpu_cache_stops_the_process_naming_it in a child process"]
fn child_double_free() {
    use std::alloc::{GlobalAlloc, Layout};
    drop(Box::new(1u64));
    assert!(strata::percpu_front_counters().is_some(), "front end off");
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: a deliberate double free, which the allocator must catch before the
    // block could be handed out twice; the process is expected to stop.
    unsafe {
        let p = A.alloc(layout);
        assert!(!p.is_null());
        A.dealloc(p, layout);
        A.dealloc(p, layout);
    }
    println!("not caught");
}
