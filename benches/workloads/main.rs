//! Workload runner: the allocation patterns that allocator comparisons use
//! (larson, xmalloc, cache-scratch, cache-thrash, mstress, rptest, alloc-test,
//! glibc's malloc microbenchmarks, malloc-large) and a thread-churn workload,
//! each written fresh from its published description.
//!
//! ```text
//! cargo bench --bench workloads -- --list
//! cargo bench --bench workloads -- --workload larson --threads 4 [--quick] [--seconds 1.0]
//! LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 \
//!     target/release/deps/workloads-<hash> --workload larson --threads 4
//! ```
//!
//! The runner has no `#[global_allocator]` and takes every workload block
//! straight from the C `malloc`/`calloc`/`free`, so it measures whatever
//! allocator the process has: glibc, or the library in `LD_PRELOAD`
//! (`libstrata.so` built from `capi/`, mimalloc,
//! jemalloc, tcmalloc). It names the allocator it finds (by looking up a symbol
//! only that library exports) in its output, and `--expect NAME` makes it fail
//! when that is not the one intended.
//!
//! Without `--workload`, the runner runs every workload once, each in a child
//! process (`cargo bench` does this; add `--quick` for a smoke test of a few
//! seconds). Each run is one process and one workload. Multi-threaded workloads run for
//! about `--seconds` (default 1.0; `--quick`: 0.15) and report operations per
//! second; the unit of "operation" is given per workload by `--list`. Every
//! block carries a stamp written when it is allocated (head and tail; the
//! whole block for mstress, every page for malloc-large) and checked before it
//! is freed; a mismatch prints `VERIFY FAILED` and exits with status 1. The
//! last line of output is
//!
//! ```text
//! RESULT workload=larson threads=4 allocator=strata ops=... seconds=... ops_per_sec=... peak_rss_kib=... verified=...
//! ```
//!
//! with the peak RSS read from `VmHWM` in `/proc/self/status` at the end, and
//! `verified` the number of blocks whose stamps were checked.
//!
//! `benches/compare.sh` runs every (allocator, workload, threads, repetition)
//! cell in its own process and writes `benches/results/`.

mod alloc_test;
mod cache;
mod common;
mod glibc;
mod larson;
mod malloc_large;
mod mstress;
mod rptest;
mod thread_churn;
mod xmalloc;

use std::ffi::CStr;
use std::process::ExitCode;
use std::time::Duration;

/// One workload: `run(threads, duration)` returns the operation count and the
/// measured time.
struct Workload {
    name: &'static str,
    /// Whether `--threads` means anything (otherwise only 1 is accepted).
    multi: bool,
    /// What one counted operation is.
    op: &'static str,
    about: &'static str,
    run: fn(usize, Duration) -> (u64, Duration),
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "larson",
        multi: true,
        op: "free+malloc",
        about: "server simulation: per thread 5,000 slots of 8-1,000 B replaced at random; \
                every 100,000 replacements the thread hands its slots to a new thread and exits",
        run: larson::run,
    },
    Workload {
        name: "xmalloc",
        multi: true,
        op: "block passed",
        about: "N threads only allocate 64 B blocks, N other threads only free them \
                (batches of 256 through a shared queue)",
        run: xmalloc::run,
    },
    Workload {
        name: "cache-scratch",
        multi: true,
        op: "object (alloc, 1,000 writes, free)",
        about: "passive false sharing: each thread first frees an 8 B object the main thread \
                allocated next to the other threads' ones, then allocates, writes and frees its own",
        run: cache::scratch,
    },
    Workload {
        name: "cache-thrash",
        multi: true,
        op: "object (alloc, 1,000 writes, free)",
        about: "active false sharing: every thread allocates an 8 B object, writes it 1,000 times, frees it",
        run: cache::thrash,
    },
    Workload {
        name: "mstress",
        multi: true,
        op: "calloc",
        about: "threads recreated each phase; calloc'd power-of-two word arrays (rarely up to 5 MiB), \
                some retained, some swapped through 1,000 shared slots, half the slots survive a phase",
        run: mstress::run,
    },
    Workload {
        name: "rptest",
        multi: true,
        op: "malloc",
        about: "each round a thread allocates 1,000 blocks of 8-16,000 B (log-uniform), replaces 100 \
                at random, and every other round hands the set to the next thread to free",
        run: rptest::run,
    },
    Workload {
        name: "alloc-test",
        multi: true,
        op: "malloc or free",
        about: "per thread 16,384 slots; a random slot is freed if full, else filled with a Pareto-sized \
                block (8 B minimum, alpha 1, capped at 64 KiB)",
        run: alloc_test::run,
    },
    Workload {
        name: "glibc-simple",
        multi: false,
        op: "malloc+free",
        about: "glibc bench-malloc-simple: n mallocs then n frees, n in 25..1600, sizes 16..2,048 B",
        run: glibc::simple,
    },
    Workload {
        name: "glibc-thread",
        multi: true,
        op: "free+malloc",
        about: "glibc bench-malloc-thread: per thread 1,024 slots, free a random one and malloc \
                4-32,768 B (inverse-square distribution)",
        run: glibc::thread,
    },
    Workload {
        name: "malloc-large",
        multi: false,
        op: "malloc",
        about: "20 slots; replace a random one with a 5-25 MiB block and touch every page",
        run: malloc_large::run,
    },
    Workload {
        name: "thread-churn",
        multi: true,
        op: "malloc",
        about: "generations of N short-lived threads: each frees what the previous generation left, \
                allocates 2,000 blocks of 16-512 B, frees 90 % and leaves the rest behind as it exits",
        run: thread_churn::run,
    },
];

const FULL_SECONDS: f64 = 1.0;
const QUICK_SECONDS: f64 = 0.15;

fn usage() -> ExitCode {
    eprintln!(
        "usage: workloads --workload NAME [--threads N] [--quick] [--seconds S] [--expect ALLOCATOR]\n       \
         workloads [--threads N] [--quick] [--seconds S] [--expect ALLOCATOR]   (every workload)\n       \
         workloads --list"
    );
    ExitCode::from(2)
}

/// The allocator serving `malloc` in this process, told by a symbol that only
/// that library exports.
fn detect_allocator() -> &'static str {
    let has = |name: &CStr| {
        // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the global
        // scope, where an LD_PRELOADed library comes first.
        !unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }.is_null()
    };
    if has(c"strata_release_memory") {
        "strata"
    } else if has(c"mi_version") {
        "mimalloc"
    } else if has(c"mallctl") {
        "jemalloc"
    } else if has(c"tc_version") {
        "tcmalloc"
    } else {
        "glibc"
    }
}

/// Peak resident set size (`VmHWM`) in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Without `--workload`: every workload once, each in a child process of this
/// executable (same environment, so the same `LD_PRELOAD`), multi-threaded
/// ones at `--threads` (default: the number of CPUs). This is what a plain
/// `cargo bench` runs. Fails if any child fails.
fn run_all(
    threads: Option<usize>,
    quick: bool,
    seconds: Option<f64>,
    expect: Option<&str>,
) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot locate own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(2);
    let allocator = detect_allocator();
    println!(
        "workloads under {allocator} (one process each; --list describes them; \
         benches/compare.sh compares allocators)"
    );
    let mut failed = Vec::new();
    for w in WORKLOADS {
        let t = if w.multi { threads } else { 1 };
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["--workload", w.name, "--threads", &t.to_string()]);
        if quick {
            cmd.arg("--quick");
        }
        if let Some(s) = seconds {
            cmd.args(["--seconds", &s.to_string()]);
        }
        if let Some(e) = expect {
            cmd.args(["--expect", e]);
        }
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) => {
                eprintln!("{}: cannot start: {e}", w.name);
                failed.push(w.name);
                continue;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find(|l| l.starts_with("RESULT ")) {
            Some(line) if out.status.success() => println!("{line}"),
            _ => {
                eprintln!(
                    "{}: FAILED ({})\n{stdout}{}",
                    w.name,
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                failed.push(w.name);
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let mut workload = None;
    let mut workload_arg = None;
    let mut threads_arg = None;
    let mut seconds = None;
    let mut quick = false;
    let mut expect = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => {
                for w in WORKLOADS {
                    let kind = if w.multi { "multi" } else { "single" };
                    println!("{}\t{kind}\t{}\t{}", w.name, w.op, w.about);
                }
                return ExitCode::SUCCESS;
            }
            "--quick" => quick = true,
            // `cargo bench` appends `--bench`.
            "--bench" => {}
            "--workload" | "--threads" | "--seconds" | "--expect" => {
                let Some(value) = args.next() else {
                    return usage();
                };
                match arg.as_str() {
                    "--workload" => {
                        workload = WORKLOADS.iter().find(|w| w.name == value);
                        workload_arg = Some(value);
                    }
                    "--threads" => match value.parse() {
                        Ok(n) if n > 0 => threads_arg = Some(n),
                        _ => return usage(),
                    },
                    "--seconds" => match value.parse::<f64>() {
                        Ok(s) if s > 0.0 && s < 3600.0 => seconds = Some(s),
                        _ => return usage(),
                    },
                    _ => expect = Some(value),
                }
            }
            _ => return usage(),
        }
    }
    let Some(w) = workload else {
        if workload_arg.is_some() {
            eprintln!("unknown workload; --list shows them");
            return usage();
        }
        return run_all(threads_arg, quick, seconds, expect.as_deref());
    };
    let threads = threads_arg.unwrap_or(1);
    if !w.multi && threads != 1 {
        eprintln!("{} is single-threaded: use --threads 1", w.name);
        return usage();
    }
    let allocator = detect_allocator();
    if let Some(want) = &expect
        && want != allocator
    {
        eprintln!("expected allocator {want}, but malloc is served by {allocator}");
        return ExitCode::from(3);
    }
    let seconds = seconds.unwrap_or(if quick { QUICK_SECONDS } else { FULL_SECONDS });

    let (ops, elapsed) = (w.run)(threads, Duration::from_secs_f64(seconds));

    let verified = common::verified_total();
    if ops == 0 || verified == 0 {
        eprintln!("{}: no work done (ops {ops}, verified {verified})", w.name);
        return ExitCode::FAILURE;
    }
    let secs = elapsed.as_secs_f64();
    println!(
        "RESULT workload={} threads={threads} allocator={allocator} ops={ops} seconds={secs:.6} \
         ops_per_sec={:.1} peak_rss_kib={} verified={verified}",
        w.name,
        ops as f64 / secs,
        peak_rss_kib(),
    );
    ExitCode::SUCCESS
}
