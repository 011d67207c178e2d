//! Every multi-lock walk, thread set-up and exit, and `fork()` at once, beside
//! allocating threads: nothing may deadlock, and every forked child must allocate and
//! exit in time. Built without `c-abi`: a plain `#[global_allocator]` program, whose
//! fork handlers strata registers itself (the C library's constructor does not run).
//!
//! A hang must fail, not stall CI: each test runs under a watchdog thread that
//! aborts the process with a message after `WATCHDOG`, and a child that has not
//! exited after `CHILD_TIMEOUT` is killed and counted.

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The longest a whole test may take (it runs a few seconds).
const WATCHDOG: Duration = Duration::from_secs(60); // the message says so too
/// The longest a forked child may take to allocate and exit.
const CHILD_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed children after which a test stops forking (each hung one costs
/// `CHILD_TIMEOUT`; the watchdog must not fire first).
const MAX_FAILURES: usize = 3;
/// How long the walks loop beside each other.
const RUN: Duration = Duration::from_millis(2500);

/// Aborts the process if not dropped within `WATCHDOG`. The message goes out with
/// `write(2)` and nothing is allocated on the way: a hung allocator may hold a lock
/// that any allocation would wait for.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn start(what: &'static str) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        thread::spawn(move || {
            let start = Instant::now();
            while !d.load(Ordering::Relaxed) {
                if start.elapsed() > WATCHDOG {
                    // Nothing here may allocate: the allocator may be the one stuck.
                    let parts: [&str; 3] = [
                        "\nlock_order watchdog: `",
                        what,
                        "` did not finish within 60 s: deadlock; aborting\n",
                    ];
                    // SAFETY: writes live buffers to stderr; abort does not return.
                    unsafe {
                        for p in parts {
                            libc::write(2, p.as_ptr().cast(), p.len());
                        }
                        libc::abort();
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Whether `v` still holds `tag` at its ends and in the middle (a full check would
/// make debug builds crawl).
fn intact(v: &[u8], tag: u8) -> bool {
    let n = v.len();
    let ends = n.min(64);
    v[..ends].iter().chain(&v[n - ends..]).all(|&b| b == tag) && v[n / 2] == tag
}

/// A content-checked allocation loop: small, Large and huge blocks, freed in a
/// shuffled order, until `stop`.
fn allocate_until(stop: &AtomicBool, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut slots: Vec<Option<Vec<u8>>> = (0..64).map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % 64) as usize;
        if let Some(v) = slots[i].take() {
            assert!(intact(&v, v.len() as u8), "a block changed under its owner");
        }
        let size = match (x >> 8) % 200 {
            0 => 2 << 20,                         // huge
            1..=4 => 300 << 10,                   // Large
            _ => 1 + ((x >> 16) % 4096) as usize, // small
        };
        slots[i] = Some(vec![size as u8; size]);
    }
}

/// Forks once; the child allocates small, Large and huge blocks, checks them and
/// `_exit`s. Returns None if the child exited 0 in time, else what went wrong (a
/// child still running after `CHILD_TIMEOUT` is killed).
fn fork_and_wait(check_heap: bool) -> Option<String> {
    // SAFETY: the child calls only the allocator and async-signal-safe functions
    // (the allocator is made safe for that by its fork handlers, which is what is
    // tested), and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let mut blocks = Vec::new();
        for i in 0..200usize {
            let size = match i % 50 {
                0 => 3 << 20,
                1 | 2 => 200 << 10,
                _ => 8 + i * 13,
            };
            blocks.push(vec![i as u8; size]);
        }
        let ok = blocks.iter().enumerate().all(|(i, b)| intact(b, i as u8));
        drop(blocks);
        let code = if !ok {
            3
        } else if check_heap && strata::validate_heap().is_err() {
            4
        } else {
            0
        };
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "waitpid: {}", std::io::Error::last_os_error());
        if start.elapsed() > CHILD_TIMEOUT {
            // SAFETY: kills and reaps our own hung child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Some(format!(
                "child {pid} still running after {CHILD_TIMEOUT:?} (deadlocked), killed"
            ));
        }
        thread::sleep(Duration::from_millis(1));
    }
    if libc::WIFSIGNALED(status) {
        Some(format!(
            "child {pid} died of signal {}",
            libc::WTERMSIG(status)
        ))
    } else if libc::WEXITSTATUS(status) != 0 {
        Some(format!(
            "child {pid} exited with {}",
            libc::WEXITSTATUS(status)
        ))
    } else {
        None
    }
}

/// Issue 12, defect 2: `validate_heap` took the class locks and then the pool lock,
/// `stats` and the fork handler the other way round; a loop of each hung within
/// milliseconds. Now every walk takes its locks in the one rank order.
#[test]
fn walks_thread_exits_and_forks_looping_together_never_deadlock() {
    let _dog = Watchdog::start("walks_thread_exits_and_forks_looping_together_never_deadlock");
    let stop = AtomicBool::new(false);
    let rounds: [AtomicUsize; 7] = Default::default();
    let mut failures = Vec::new();
    thread::scope(|s| {
        for t in 0..2 {
            let stop = &stop;
            s.spawn(move || allocate_until(stop, t + 1));
        }
        let walks: [(usize, fn()); 4] = [
            (0, || strata::validate_heap().expect("heap invariants")),
            (1, || {
                std::hint::black_box(strata::stats());
            }),
            (2, || {
                std::hint::black_box(strata::heap_map());
            }),
            (3, || {
                std::hint::black_box(strata::release_memory());
            }),
        ];
        for (i, walk) in walks {
            let (stop, rounds) = (&stop, &rounds);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    walk();
                    rounds[i].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Threads that set up a heap, allocate, and exit (the key destructor
        // flushes and pools the heap: class locks, then the pool lock).
        {
            let (stop, rounds) = (&stop, &rounds);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::spawn(|| {
                        let v: Vec<Box<[u8; 64]>> = (0..100).map(|_| Box::new([7; 64])).collect();
                        std::hint::black_box(v);
                    })
                    .join()
                    .unwrap();
                    rounds[4].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let start = Instant::now();
        while start.elapsed() < RUN && failures.len() < MAX_FAILURES {
            if let Some(e) = fork_and_wait(true) {
                failures.push(e);
            }
            rounds[5].fetch_add(1, Ordering::Relaxed);
        }
        stop.store(true, Ordering::Relaxed);
    });
    let r: Vec<usize> = rounds.iter().map(|r| r.load(Ordering::Relaxed)).collect();
    println!(
        "validate {} stats {} heap_map {} release {} thread exits {} forks {}",
        r[0], r[1], r[2], r[3], r[4], r[5]
    );
    assert!(
        failures.is_empty(),
        "{} of {} forked children failed (stopped after {MAX_FAILURES}): {failures:#?}",
        failures.len(),
        r[5]
    );
    assert!(r.iter().take(6).all(|&n| n > 0), "a loop never ran: {r:?}");
    strata::validate_heap().expect("heap intact at the end");
}

/// Issue 12, defect 3: the fork handlers were registered only by the C library's
/// constructor, so a `#[global_allocator]` program that forked while other threads
/// allocated left children hung on a lock held by a thread that does not exist in
/// them (71 of 200). Now the first thread heap registers them in every build.
#[test]
fn a_global_allocator_program_forks_200_times_while_3_threads_allocate() {
    let _dog =
        Watchdog::start("a_global_allocator_program_forks_200_times_while_3_threads_allocate");
    let stop = AtomicBool::new(false);
    let (mut failures, mut forks) = (Vec::new(), 0);
    thread::scope(|s| {
        for t in 0..3 {
            let stop = &stop;
            s.spawn(move || allocate_until(stop, 100 + t));
        }
        while forks < 200 && failures.len() < MAX_FAILURES {
            forks += 1;
            if let Some(e) = fork_and_wait(false) {
                failures.push(e);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        failures.is_empty(),
        "{} of {forks} forked children failed (stopped after {MAX_FAILURES}): {failures:#?}",
        failures.len()
    );
}
