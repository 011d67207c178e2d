//! Server-like workload: strata vs. the system allocator, side by side.
//!
//! ```text
//! cargo run --release --example demo
//! cargo run --release --example demo -- --threads 1,2,4,8 --reps 3 --requests 600000
//! ```
//!
//! A `#[global_allocator]` is fixed per binary, so the demo re-executes itself:
//! the parent process spawns `current_exe()` once per (thread count, allocator,
//! repetition) with `STRATA_DEMO_CHILD=strata|system` in the environment. The
//! child's global allocator is a tiny dispatcher that reads that variable with
//! `libc::getenv` (which does not allocate) on its very first call, caches the
//! answer in an atomic and never switches afterwards, so every block is freed
//! by the allocator that produced it.
//!
//! Each child performs a fixed number of "requests" (split evenly across its
//! worker threads) and prints one `RESULT ...` line with its throughput and its
//! peak RSS (`VmHWM` from `/proc/self/status`). The parent runs every
//! configuration `--reps` times, interleaving allocators, and prints the
//! medians.
//!
//! One request:
//! - formats a request line into a `String`, splits it into a `Vec<&str>` and
//!   parses the numeric fields into a `Vec<u64>`;
//! - allocates 3-8 payload objects of 16 B - 8 KiB (skewed towards small
//!   sizes), each filled with a pattern derived from a unique tag;
//! - keeps the local payloads in a small `HashMap` and renders a response
//!   header `String` from it;
//! - with probability 1/4 opens a new session (a `String` plus some of the
//!   payloads) in a per-thread CLOCK (LRU-ish) cache of 1,024 live sessions,
//!   evicting an old one; otherwise looks up a cached session and verifies it;
//! - hands ~25 % of the payloads, in batches of 32, to the next worker thread
//!   (a ring: worker `i` sends to worker `i + 1`), which verifies and frees
//!   them, like a server passing responses to a writer thread. With a single
//!   worker the "other thread" is the worker itself, so no free is remote.
//!
//! Every object is verified before it is freed; on a mismatch the child prints
//! an error and exits with status 1.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::ffi::CStr;
use std::io::IsTerminal;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::Instant;

// ---------------------------------------------------------------------------
// Runtime-selected global allocator
// ---------------------------------------------------------------------------

const CHILD_ENV: &str = "STRATA_DEMO_CHILD";
const CHILD_ENV_C: &CStr = c"STRATA_DEMO_CHILD";
const THREADS_ENV: &str = "STRATA_DEMO_THREADS";
const REQUESTS_ENV: &str = "STRATA_DEMO_REQUESTS";

const UNDECIDED: u8 = 0;
const USE_STRATA: u8 = 1;
const USE_SYSTEM: u8 = 2;

/// Which allocator this process uses; decided once, on the first allocation.
static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Forwards to `strata::Strata` or `std::alloc::System`, chosen once per
/// process from the `STRATA_DEMO_CHILD` environment variable.
struct Dispatch;

impl Dispatch {
    #[inline(always)]
    fn use_strata() -> bool {
        match CHOICE.load(Ordering::Relaxed) {
            USE_STRATA => true,
            USE_SYSTEM => false,
            _ => Self::decide(),
        }
    }

    /// Reads the environment without allocating. Threads racing here all read
    /// the same (never modified) environment, so they agree on the answer.
    #[cold]
    #[inline(never)]
    fn decide() -> bool {
        // SAFETY: the name is a valid NUL-terminated string, and nothing in
        // this program modifies the environment (`Command::env` only builds
        // the child's environment), so `getenv` cannot race with `setenv`.
        let value = unsafe { libc::getenv(CHILD_ENV_C.as_ptr()) };
        let strata = !value.is_null()
            // SAFETY: a non-null `getenv` result is a valid NUL-terminated
            // string that lives as long as the (unmodified) environment.
            && unsafe { CStr::from_ptr(value) }.to_bytes() == b"strata";
        CHOICE.store(
            if strata { USE_STRATA } else { USE_SYSTEM },
            Ordering::Relaxed,
        );
        strata
    }

    fn name() -> &'static str {
        if Self::use_strata() {
            "strata"
        } else {
            "system"
        }
    }
}

// SAFETY: every method forwards its arguments unchanged to one of two valid
// `GlobalAlloc` implementations, and the choice between them never changes
// during the life of the process, so each block is always returned to (and
// resized by) the allocator that handed it out.
unsafe impl GlobalAlloc for Dispatch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::use_strata() {
            // SAFETY: forwarded contract (see the impl comment).
            unsafe { strata::Strata.alloc(layout) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { System.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::use_strata() {
            // SAFETY: forwarded contract; `ptr` came from `Strata`.
            unsafe { strata::Strata.dealloc(ptr, layout) }
        } else {
            // SAFETY: forwarded contract; `ptr` came from `System`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::use_strata() {
            // SAFETY: forwarded contract.
            unsafe { strata::Strata.alloc_zeroed(layout) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::use_strata() {
            // SAFETY: forwarded contract; `ptr` came from `Strata`.
            unsafe { strata::Strata.realloc(ptr, layout, new_size) }
        } else {
            // SAFETY: forwarded contract; `ptr` came from `System`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

// ---------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------

const DEFAULT_THREADS: &[usize] = &[1, 2, 4, 8];
const DEFAULT_REPS: usize = 3;
const DEFAULT_REQUESTS: u64 = 600_000;

fn main() -> ExitCode {
    match std::env::var(CHILD_ENV) {
        Ok(which) => child_main(&which),
        Err(_) => parent_main(),
    }
}

// ---------------------------------------------------------------------------
// Parent: run the children and print the table
// ---------------------------------------------------------------------------

struct Config {
    threads: Vec<usize>,
    reps: usize,
    requests: u64,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: demo [--threads 1,2,4,8] [--reps {DEFAULT_REPS}] [--requests {DEFAULT_REQUESTS}]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Config> {
    let mut cfg = Config {
        threads: DEFAULT_THREADS.to_vec(),
        reps: DEFAULT_REPS,
        requests: DEFAULT_REQUESTS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next()?;
        match arg.as_str() {
            "--threads" => {
                cfg.threads = value
                    .split(',')
                    .map(|t| t.trim().parse().ok().filter(|&n: &usize| n > 0))
                    .collect::<Option<Vec<_>>>()?;
            }
            "--reps" => cfg.reps = value.parse().ok().filter(|&n| n > 0)?,
            "--requests" => cfg.requests = value.parse().ok().filter(|&n| n > 0)?,
            _ => return None,
        }
    }
    if cfg.threads.is_empty() {
        return None;
    }
    Some(cfg)
}

#[derive(Clone, Copy)]
struct Sample {
    ops_per_sec: f64,
    peak_rss_kib: f64,
}

const ALLOCATORS: [&str; 2] = ["strata", "system"];

fn parent_main() -> ExitCode {
    let Some(cfg) = parse_args() else {
        return usage();
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("demo: cannot locate own executable: {e}");
            return ExitCode::FAILURE;
        }
    };

    println!(
        "strata demo: server-like workload, {} requests per run (fixed work, split across threads)",
        cfg.requests
    );
    println!(
        "each configuration runs {} time(s) in a fresh child process, allocators interleaved; medians shown",
        cfg.reps
    );
    if cfg!(debug_assertions) {
        println!("warning: debug build; use `cargo run --release --example demo`");
    }

    // samples[thread index][allocator index] = one sample per repetition
    let mut samples = vec![[Vec::new(), Vec::new()]; cfg.threads.len()];
    let total_runs = cfg.reps * cfg.threads.len() * ALLOCATORS.len();
    let mut done = 0;
    let progress = std::io::stderr().is_terminal();
    for rep in 0..cfg.reps {
        for (ti, &threads) in cfg.threads.iter().enumerate() {
            // Alternate which allocator goes first to cancel drift.
            let order = if (rep + ti) % 2 == 0 { [0, 1] } else { [1, 0] };
            for ai in order {
                done += 1;
                if progress {
                    eprint!(
                        "\r  run {done:>2}/{total_runs}: {:<6} x {threads} thread(s)   ",
                        ALLOCATORS[ai]
                    );
                }
                match run_child(&exe, ALLOCATORS[ai], threads, cfg.requests) {
                    Ok(s) => samples[ti][ai].push(s),
                    Err(e) => {
                        eprintln!("\ndemo: child ({} x {threads}) failed: {e}", ALLOCATORS[ai]);
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    }
    if progress {
        eprint!("\r{:50}\r", "");
    }

    println!();
    println!(
        "{:>7}  {:<14}  {:>13}  {:>12}",
        "threads", "allocator", "ops/s", "peak RSS MiB"
    );
    println!("{:->7}  {:-<14}  {:->13}  {:->12}", "", "", "", "");
    for (ti, &threads) in cfg.threads.iter().enumerate() {
        let mut med = [Sample {
            ops_per_sec: 0.0,
            peak_rss_kib: 0.0,
        }; 2];
        for ai in 0..2 {
            let runs = &samples[ti][ai];
            med[ai] = Sample {
                ops_per_sec: median(runs.iter().map(|s| s.ops_per_sec)),
                peak_rss_kib: median(runs.iter().map(|s| s.peak_rss_kib)),
            };
            println!(
                "{:>7}  {:<14}  {:>13}  {:>12.1}",
                threads,
                ALLOCATORS[ai],
                group_thousands(med[ai].ops_per_sec),
                med[ai].peak_rss_kib / 1024.0
            );
        }
        println!(
            "{:>7}  {:<14}  {:>12.2}x  {:>11.2}x",
            "",
            "strata/system",
            med[0].ops_per_sec / med[1].ops_per_sec,
            med[0].peak_rss_kib / med[1].peak_rss_kib
        );
    }
    println!();
    println!(
        "ops = requests; ratio strata/system: ops/s higher is better, peak RSS lower is better"
    );
    ExitCode::SUCCESS
}

fn run_child(
    exe: &std::path::Path,
    allocator: &str,
    threads: usize,
    requests: u64,
) -> Result<Sample, String> {
    let out = Command::new(exe)
        .env(CHILD_ENV, allocator)
        .env(THREADS_ENV, threads.to_string())
        .env(REQUESTS_ENV, requests.to_string())
        .output()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{}\n{}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .ok_or_else(|| format!("no RESULT line in output: {stdout:?}"))?;
    let field = |key: &str| -> Result<&str, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| format!("missing {key} in {line:?}"))
    };
    if field("allocator")? != allocator {
        return Err(format!("child used the wrong allocator: {line:?}"));
    }
    let num = |key: &str| -> Result<f64, String> {
        field(key)?
            .parse::<f64>()
            .map_err(|e| format!("bad {key} in {line:?}: {e}"))
    };
    Ok(Sample {
        ops_per_sec: num("ops_per_sec")?,
        peak_rss_kib: num("peak_rss_kib")?,
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn group_thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// Child: the workload
// ---------------------------------------------------------------------------

fn child_main(which: &str) -> ExitCode {
    let active = Dispatch::name();
    if which != active {
        eprintln!("demo child: asked for {which:?} but the dispatcher chose {active:?}");
        return ExitCode::FAILURE;
    }
    let env_num = |key: &str, default: u64| -> u64 {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(default)
    };
    let threads = env_num(THREADS_ENV, 1) as usize;
    let requests = env_num(REQUESTS_ENV, DEFAULT_REQUESTS);

    // Worker i receives on channel i and sends to channel (i + 1) % threads.
    let (mut senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| sync_channel::<Batch>(64)).unzip();
    senders.rotate_left(1);

    let start = Instant::now();
    let verified: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(i, (tx, rx))| {
                // Spread the remainder so the total is exactly `requests`.
                let n =
                    requests / threads as u64 + u64::from((i as u64) < requests % threads as u64);
                s.spawn(move || Worker::new(i as u64, tx, rx).run(n))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| fail("worker thread panicked")))
            .sum()
    });
    let secs = start.elapsed().as_secs_f64();

    let peak_rss_kib = peak_rss_kib().unwrap_or(0);
    println!(
        "RESULT allocator={active} threads={threads} requests={requests} secs={secs:.4} \
         ops_per_sec={:.0} peak_rss_kib={peak_rss_kib} object_checks={verified}",
        requests as f64 / secs
    );
    ExitCode::SUCCESS
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn fail(msg: &str) -> ! {
    eprintln!("demo child: verification failed: {msg}");
    std::process::exit(1)
}

/// splitmix64 finaliser: a good 64-bit mixer.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64* generator.
struct Rng(u64);

impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Payload size for a tag: 16 B - 8 KiB, skewed towards small objects
/// (55 % <= 64 B, 25 % <= 256 B, 12 % <= 1 KiB, 6 % <= 4 KiB, 2 % <= 8 KiB).
#[inline]
fn payload_size(tag: u64) -> usize {
    let h = mix(tag);
    let (lo, hi) = match h % 100 {
        0..55 => (16usize, 64usize),
        55..80 => (65, 256),
        80..92 => (257, 1024),
        92..98 => (1025, 4096),
        _ => (4097, 8192),
    };
    lo + ((h >> 32) % (hi - lo + 1) as u64) as usize
}

#[inline]
fn fill_byte(tag: u64) -> u8 {
    (mix(tag ^ 0x5555) as u8) | 1
}

/// A heap payload whose size and contents are a function of its tag:
/// `[tag: 8 bytes][fill ...][!tag: 8 bytes]`.
struct Payload(Box<[u8]>);

impl Payload {
    fn new(tag: u64) -> Payload {
        let size = payload_size(tag);
        let mut buf = vec![fill_byte(tag); size];
        buf[..8].copy_from_slice(&tag.to_le_bytes());
        buf[size - 8..].copy_from_slice(&(!tag).to_le_bytes());
        Payload(buf.into_boxed_slice())
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Checks size, header, trailer and a byte in the middle.
    fn verify(&self) {
        let b = &self.0;
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
        };
        let Some(tag) = word(0) else {
            fail("payload shorter than 8 bytes")
        };
        let n = b.len();
        if n != payload_size(tag) {
            fail(&format!(
                "payload {tag:#x}: length {n}, expected {}",
                payload_size(tag)
            ));
        }
        if word(n - 8) != Some(!tag) {
            fail(&format!("payload {tag:#x}: corrupted trailer"));
        }
        let mid = n / 2;
        if mid >= 8 && mid < n - 8 && b[mid] != fill_byte(tag) {
            fail(&format!("payload {tag:#x}: corrupted body at {mid}"));
        }
    }
}

type Batch = Vec<Payload>;
const BATCH: usize = 32;
const SESSIONS: usize = 1024;

struct Session {
    id: u64,
    name: String,
    payloads: Vec<Payload>,
    referenced: bool,
}

impl Session {
    fn verify(&self) {
        let key = self
            .name
            .strip_prefix("user-")
            .and_then(|rest| rest.strip_suffix("@session"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        if key != Some(mix(self.id)) {
            fail(&format!(
                "session {}: corrupted name {:?}",
                self.id, self.name
            ));
        }
        self.payloads.iter().for_each(Payload::verify);
    }
}

/// `user-<hex>@session`, built piecewise like a server would.
fn session_name(id: u64) -> String {
    let mut name = String::new();
    name.push_str("user-");
    push_int(&mut name, mix(id), 16);
    name.push_str("@session");
    name
}

/// Appends `n` in the given radix (a cheap stand-in for `write!`, whose
/// formatting machinery would otherwise dominate the request cost).
fn push_int(s: &mut String, mut n: u64, radix: u64) {
    let mut buf = [0u8; 64];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("?"));
}

struct Worker {
    id: u64,
    rng: Rng,
    next_tag: u64,
    next_session: u64,
    sessions: Vec<Session>,
    clock_hand: usize,
    outbox: Batch,
    tx: SyncSender<Batch>,
    rx: Receiver<Batch>,
    verified: u64,
    checksum: u64,
}

impl Worker {
    fn new(id: u64, tx: SyncSender<Batch>, rx: Receiver<Batch>) -> Worker {
        Worker {
            id,
            rng: Rng(mix(id + 1) | 1),
            next_tag: 0,
            next_session: 0,
            sessions: Vec::with_capacity(SESSIONS),
            clock_hand: 0,
            outbox: Vec::with_capacity(BATCH),
            tx,
            rx,
            verified: 0,
            checksum: 0,
        }
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        (self.id << 48) | self.next_tag
    }

    /// Serves `n` requests, then drains the inbox until the previous worker
    /// has finished; returns how many object checks passed.
    fn run(mut self, n: u64) -> u64 {
        for _ in 0..n {
            self.request();
            self.drain_inbox();
        }
        if !self.outbox.is_empty() {
            let batch = std::mem::take(&mut self.outbox);
            self.send(batch);
        }
        for s in std::mem::take(&mut self.sessions) {
            s.verify();
            self.verified += s.payloads.len() as u64;
        }
        let Worker {
            tx,
            rx,
            mut verified,
            checksum,
            ..
        } = self;
        // Dropping our sender lets the next worker finish; then we drain our
        // own inbox until the previous worker has dropped its sender.
        drop(tx);
        for batch in rx {
            verified += consume(batch);
        }
        std::hint::black_box(checksum);
        verified
    }

    fn request(&mut self) {
        let r = self.rng.next();

        // Request line, split and parsed.
        let mut line = String::new();
        line.push_str("GET /api/v");
        push_int(&mut line, r % 3 + 1, 10);
        line.push_str("/users/");
        push_int(&mut line, (r >> 8) % 100_000, 10);
        line.push_str("/items?page=");
        push_int(&mut line, (r >> 24) % 50, 10);
        line.push_str("&limit=");
        push_int(&mut line, (r >> 32) % 100 + 1, 10);
        line.push_str("&sort=desc HTTP/1.1");
        let segments: Vec<&str> = line
            .split(['/', '?', '&', ' ', '='])
            .filter(|s| !s.is_empty())
            .collect();
        let numbers: Vec<u64> = segments.iter().filter_map(|s| s.parse().ok()).collect();

        // Payloads: 25 % go to the writer thread, ~10 % into a new session,
        // the rest live in the request's header map until the request ends.
        let new_session = r >> 62 == 0; // 1 in 4
        let count = 3 + self.rng.below(6);
        let mut headers: HashMap<u32, Payload> = HashMap::new();
        let mut for_session = Vec::new();
        for k in 0..count {
            let tag = self.tag();
            let p = Payload::new(tag);
            match self.rng.below(100) {
                0..25 => {
                    self.outbox.push(p);
                    if self.outbox.len() == BATCH {
                        let batch = std::mem::replace(&mut self.outbox, Vec::with_capacity(BATCH));
                        self.send(batch);
                    }
                }
                25..35 if new_session => for_session.push(p),
                _ => {
                    headers.insert(k as u32, p);
                }
            }
        }

        // Response header rendered from the map.
        let mut response = String::new();
        response.push_str("HTTP/1.1 200 OK\r\nx-segments: ");
        push_int(&mut response, segments.len() as u64, 10);
        response.push_str("\r\n");
        for (k, p) in &headers {
            response.push_str("x-part-");
            push_int(&mut response, u64::from(*k), 10);
            response.push_str(": ");
            push_int(&mut response, p.len() as u64, 10);
            response.push_str("\r\n");
        }
        self.checksum = self
            .checksum
            .wrapping_add(response.len() as u64 + numbers.iter().sum::<u64>());

        if new_session {
            self.open_session(for_session);
        } else if !self.sessions.is_empty() {
            let i = self.rng.below(self.sessions.len() as u64) as usize;
            let s = &mut self.sessions[i];
            s.verify();
            s.referenced = true;
            self.verified += s.payloads.len() as u64;
        }

        for p in headers.values() {
            p.verify();
        }
        self.verified += headers.len() as u64;
    }

    /// Inserts a session, evicting one chosen by the CLOCK algorithm.
    fn open_session(&mut self, mut payloads: Vec<Payload>) {
        let id = (self.id << 48) | self.next_session;
        self.next_session += 1;
        let tag = self.tag();
        payloads.push(Payload::new(tag));
        let session = Session {
            id,
            name: session_name(id),
            payloads,
            referenced: false,
        };
        if self.sessions.len() < SESSIONS {
            self.sessions.push(session);
            return;
        }
        loop {
            let hand = self.clock_hand;
            self.clock_hand = (hand + 1) % SESSIONS;
            let slot = &mut self.sessions[hand];
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            let old = std::mem::replace(slot, session);
            old.verify();
            self.verified += old.payloads.len() as u64;
            return;
        }
    }

    /// Hands a batch to the next worker; while its queue is full, keeps
    /// draining our own inbox so that the ring of workers cannot deadlock.
    fn send(&mut self, mut batch: Batch) {
        loop {
            match self.tx.try_send(batch) {
                Ok(()) => return,
                Err(TrySendError::Full(b)) => {
                    batch = b;
                    if !self.drain_inbox() {
                        std::thread::yield_now();
                    }
                }
                Err(TrySendError::Disconnected(b)) => {
                    self.verified += consume(b);
                    return;
                }
            }
        }
    }

    /// Frees everything waiting in the inbox; returns whether anything was.
    fn drain_inbox(&mut self) -> bool {
        let mut any = false;
        loop {
            match self.rx.try_recv() {
                Ok(batch) => {
                    self.verified += consume(batch);
                    any = true;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return any,
            }
        }
    }
}

/// The "writer" side: verify and free a batch produced by another thread.
fn consume(batch: Batch) -> u64 {
    let n = batch.len() as u64;
    for p in batch {
        p.verify();
    }
    n
}
