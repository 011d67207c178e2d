//! Fragmentation over time: resident vs allocated bytes during a long mixed workload.
//!
//! ```text
//! cargo run --release --example fragmentation                 # ~15 s, 4 threads
//! cargo run --release --example fragmentation -- --quick      # ~2 s (CI smoke)
//! cargo run --release --example fragmentation -- --seconds 30 --interval-ms 20 --out DIR
//! cargo run --release --example fragmentation -- --background-purge   # idle pages go back
//! ```
//!
//! Four worker threads run five phases, each a share of `--seconds`:
//! 1. ramp-up: every thread grows a pool of small (8 B-4 KiB, skewed small), medium
//!    (8-256 KiB) and a few large (1-8 MiB) blocks, at a steady pace;
//! 2. churn: random free + alloc, realloc (grow or shrink), and blocks handed in
//!    batches to the next thread, which frees them (cross-thread frees);
//! 3. fragmenting release: each thread frees a random 90 % of its small blocks and
//!    keeps the rest, so most small spans stay in use with few live objects;
//! 4. idle: sleep past the purge delay, then every thread flushes its cache and the
//!    main thread calls `strata::release_memory()`;
//! 5. re-grow: the pools fill up again, then churn until the end.
//!
//! A sampler thread calls `strata::stats()` every `--interval-ms` (never allocates;
//! its sample vector is allocated up front) and reads the RSS from
//! `/proc/self/statm`. Output, in `--out` (default `target/fragmentation/`):
//! `samples.csv` (one row per sample) and `fragmentation.svg` (a line chart, drawn
//! here without a plotting crate). A summary goes to stdout: per phase the peaks and
//! the ratio resident/allocated at its end, then the final `strata::stats()` table.
//!
//! Every block carries a byte pattern derived from its seed and is checked before it
//! is freed, and after every realloc. The exit status is 1 if any check fails or any
//! snapshot breaks `allocated ≤ active ≤ mapped` or `resident ≤ mapped`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

const THREADS: usize = 4;
const PHASES: [&str; 5] = ["ramp-up", "churn", "fragment", "idle+release", "re-grow"];
/// Share of the run each phase takes.
const PHASE_SHARE: [f64; 5] = [0.15, 0.35, 0.15, 0.20, 0.15];
const MIB: f64 = 1024.0 * 1024.0;

/// Content checks that failed (every failure is also printed).
static FAILURES: AtomicU64 = AtomicU64::new(0);
/// The phase the workload is in, for the sampler.
static PHASE: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

struct Opts {
    seconds: f64,
    interval_ms: u64,
    out: PathBuf,
    /// Blocks per thread: small, medium, large.
    targets: [usize; 3],
    purge_delay_ms: Option<u64>,
    /// Start strata's background purge thread first.
    background_purge: bool,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        seconds: 15.0,
        interval_ms: 50,
        out: PathBuf::from("target/fragmentation"),
        targets: [40_000, 120, 3],
        purge_delay_ms: None,
        background_purge: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.seconds = 2.0;
                o.targets = [10_000, 30, 1];
                // The idle phase is 0.4 s: purge well within it.
                o.purge_delay_ms.get_or_insert(100);
            }
            "--seconds" => o.seconds = val(&a)?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--interval-ms" => {
                o.interval_ms = val(&a)?.parse().map_err(|e| format!("{a}: {e}"))?;
                o.interval_ms = o.interval_ms.max(1);
            }
            "--out" => o.out = PathBuf::from(val(&a)?),
            "--purge-delay-ms" => {
                o.purge_delay_ms = Some(val(&a)?.parse().map_err(|e| format!("{a}: {e}"))?)
            }
            "--background-purge" => o.background_purge = true,
            "-h" | "--help" => {
                return Err(
                    "usage: fragmentation [--quick] [--seconds N] [--interval-ms N] \
                            [--out DIR] [--purge-delay-ms N] [--background-purge]"
                        .into(),
                );
            }
            _ => return Err(format!("unknown argument {a} (try --help)")),
        }
    }
    if o.seconds.is_nan() || o.seconds <= 0.0 {
        return Err("--seconds must be positive".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------
// Blocks: sizes, content pattern, checks
// ---------------------------------------------------------------------------

#[path = "common/frag_report.rs"]
mod frag_report;
#[path = "common/rng.rs"]
mod rng;
use frag_report::{svg, write_csv};
use rng::Rng;

const SMALL: usize = 0;
const MEDIUM: usize = 1;
const LARGE: usize = 2;

/// A size of kind `k`: small 8 B-4 KiB (exponent skewed towards small), medium
/// 8-256 KiB, large 1-8 MiB.
fn size_of_kind(rng: &mut Rng, k: usize) -> usize {
    match k {
        SMALL => {
            let e = 3 + rng.below(10).min(rng.below(10));
            ((1 << e) + rng.below(1 << e)).min(4096)
        }
        MEDIUM => (8 << 10) + rng.below(248 << 10),
        _ => (1 << 20) + rng.below(7 << 20),
    }
}

struct Block {
    data: Vec<u8>,
    seed: u64,
}

/// The pattern byte at offset `i` of a block with `seed`: differs between blocks and
/// along a block, so a lost, shifted or overwritten range is caught.
#[inline]
fn pattern(seed: u64, i: usize) -> u8 {
    (seed as u8) ^ (i as u8) ^ ((i >> 8) as u8).wrapping_mul((seed >> 8) as u8 | 1)
}

fn fill_from(buf: &mut [u8], seed: u64, base: usize) {
    for (j, b) in buf[base..].iter_mut().enumerate() {
        *b = pattern(seed, base + j);
    }
}

fn check(b: &Block, what: &str) -> bool {
    let bad = b
        .data
        .iter()
        .enumerate()
        .position(|(i, &v)| v != pattern(b.seed, i));
    if let Some(i) = bad {
        FAILURES.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "CONTENT CHECK FAILED ({what}): block of {} B, seed {:#x}, offset {i}",
            b.data.len(),
            b.seed
        );
        return false;
    }
    true
}

fn new_block(rng: &mut Rng, k: usize) -> Block {
    let n = size_of_kind(rng, k);
    let seed = rng.next();
    // Zeroed (calloc's path), then stamped; capacity equals length.
    let mut data = vec![0u8; n];
    fill_from(&mut data, seed, 0);
    Block { data, seed }
}

/// Checks then frees.
fn free_block(b: Block, what: &str) {
    check(&b, what);
    drop(b);
}

/// Reallocates `b` to a new size of its kind, through `realloc` (capacity is kept
/// equal to the length), and checks that the kept prefix survived.
fn realloc_block(rng: &mut Rng, b: &mut Block, k: usize) {
    let (old, new) = (b.data.len(), size_of_kind(rng, k));
    if new > old {
        b.data.reserve_exact(new - old);
        b.data.resize(new, 0);
        fill_from(&mut b.data, b.seed, old);
    } else {
        b.data.truncate(new);
        b.data.shrink_to_fit();
    }
    check(b, "after realloc");
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

/// What the main thread shares with the workers: phase deadlines and one barrier
/// (workers + main) at the end of each phase.
struct Plan {
    start: Instant,
    /// End of each phase, from `start`.
    ends: [Duration; 5],
    /// When, in the idle phase, caches are flushed and memory released.
    release_at: Duration,
    barrier: Barrier,
    targets: [usize; 3],
}

struct Worker {
    rng: Rng,
    pools: [Vec<Block>; 3],
    to_next: Sender<Vec<Block>>,
    from_prev: Receiver<Vec<Block>>,
    outbox: Vec<Block>,
    plan: Arc<Plan>,
}

impl Worker {
    fn now(&self) -> Duration {
        self.plan.start.elapsed()
    }

    /// A kind for one operation: 90 % small, 9 % medium, 1 % large.
    fn pick_kind(&mut self) -> usize {
        match self.rng.below(100) {
            0 => LARGE,
            1..=9 => MEDIUM,
            _ => SMALL,
        }
    }

    /// Frees (after checking) the blocks other threads handed over.
    fn drain_inbox(&mut self) {
        while let Ok(batch) = self.from_prev.try_recv() {
            for b in batch {
                free_block(b, "cross-thread free");
            }
        }
    }

    /// Grows the pools linearly towards the targets until `reach`, then churns until
    /// `end`.
    fn grow(&mut self, from: Duration, reach: Duration, end: Duration) {
        let span = (reach - from).as_secs_f64().max(1e-3);
        loop {
            let now = self.now();
            if now >= end {
                return;
            }
            if now >= reach {
                return self.churn(end);
            }
            let frac = ((now - from).as_secs_f64() / span).min(1.0);
            let mut grew = false;
            for k in 0..3 {
                let want = (self.plan.targets[k] as f64 * frac).ceil() as usize;
                // A bounded step per kind, so that the deadline is checked often.
                for _ in 0..64 {
                    if self.pools[k].len() >= want {
                        break;
                    }
                    let b = new_block(&mut self.rng, k);
                    self.pools[k].push(b);
                    grew = true;
                }
            }
            if !grew {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Random operations around the targets until `end`.
    fn churn(&mut self, end: Duration) {
        while self.now() < end {
            for _ in 0..64 {
                self.churn_op();
            }
            self.drain_inbox();
        }
        if !self.outbox.is_empty() {
            let _ = self.to_next.send(std::mem::take(&mut self.outbox));
        }
    }

    fn churn_op(&mut self) {
        let k = self.pick_kind();
        let target = self.plan.targets[k];
        if self.pools[k].is_empty() {
            let b = new_block(&mut self.rng, k);
            self.pools[k].push(b);
            return;
        }
        let i = self.rng.below(self.pools[k].len());
        match self.rng.below(100) {
            // Free one, allocate a replacement.
            0..=34 => {
                let b = new_block(&mut self.rng, k);
                let old = std::mem::replace(&mut self.pools[k][i], b);
                free_block(old, "churn free");
            }
            // Realloc, bigger or smaller.
            35..=59 => {
                let mut b = std::mem::replace(&mut self.pools[k][i], Block::empty());
                realloc_block(&mut self.rng, &mut b, k);
                self.pools[k][i] = b;
            }
            // Hand one to the next thread (it frees it), allocate a replacement.
            60..=79 if k != LARGE => {
                let b = new_block(&mut self.rng, k);
                let old = std::mem::replace(&mut self.pools[k][i], b);
                self.outbox.push(old);
                if self.outbox.len() == 32 {
                    let _ = self.to_next.send(std::mem::take(&mut self.outbox));
                }
            }
            // A random walk around the target count.
            _ => {
                if self.pools[k].len() < target + target / 10 && self.rng.below(2) == 0 {
                    let b = new_block(&mut self.rng, k);
                    self.pools[k].push(b);
                } else if self.pools[k].len() > target.saturating_sub(target / 10) {
                    let old = self.pools[k].swap_remove(i);
                    free_block(old, "churn free");
                }
            }
        }
    }

    /// Frees a random 90 % of the small blocks (checked), keeps the rest, then holds.
    fn fragment(&mut self, end: Duration) {
        let pool = std::mem::take(&mut self.pools[SMALL]);
        let mut kept = Vec::with_capacity(pool.len() / 8);
        for b in pool {
            if self.rng.below(10) == 0 {
                kept.push(b);
            } else {
                free_block(b, "fragmenting free");
            }
        }
        self.pools[SMALL] = kept;
        sleep_until(self.plan.start, end);
    }

    /// Waits at the end of a phase: once so that every thread stops sending, then
    /// frees what it was sent, then once more so the main thread can take a quiescent
    /// snapshot.
    fn end_phase(&mut self) {
        self.plan.barrier.wait();
        self.drain_inbox();
        self.plan.barrier.wait();
        self.plan.barrier.wait();
    }

    fn run(mut self) {
        let p = Arc::clone(&self.plan);
        let e = p.ends;
        self.grow(Duration::ZERO, e[0], e[0]);
        self.end_phase();
        self.churn(e[1]);
        self.end_phase();
        self.fragment(e[2]);
        self.end_phase();
        // Idle: nothing runs; then hand the caches back for release_memory().
        sleep_until(p.start, p.release_at);
        strata::flush_thread_cache();
        p.barrier.wait(); // main calls release_memory() now
        p.barrier.wait();
        sleep_until(p.start, e[3]);
        self.end_phase();
        let reach = e[3] + (e[4] - e[3]).mul_f64(0.6);
        self.grow(e[3], reach, e[4]);
        self.end_phase();
        // Teardown, every block checked.
        for pool in std::mem::take(&mut self.pools) {
            for b in pool {
                free_block(b, "teardown");
            }
        }
        p.barrier.wait();
        self.drain_inbox();
    }
}

impl Block {
    fn empty() -> Block {
        Block {
            data: Vec::new(),
            seed: 0,
        }
    }
}

fn sleep_until(start: Instant, at: Duration) {
    let now = start.elapsed();
    if at > now {
        std::thread::sleep(at - now);
    }
}

// ---------------------------------------------------------------------------
// Sampler
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Sample {
    t: f64,
    phase: usize,
    allocated: u64,
    active: u64,
    resident: u64,
    mapped: u64,
    thread_cached: u64,
    central_cached: u64,
    span_free: u64,
    page_free: u64,
    page_purged: u64,
    rss: u64,
}

/// Reads the RSS from /proc/self/statm without allocating (a kept-open file, a stack
/// buffer).
struct RssReader {
    file: File,
    page: u64,
}

impl RssReader {
    fn new() -> RssReader {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let file = File::open("/proc/self/statm").expect("open /proc/self/statm");
        RssReader { file, page }
    }

    fn bytes(&self) -> u64 {
        let mut buf = [0u8; 128];
        let n = self.file.read_at(&mut buf, 0).unwrap_or(0);
        // Second field: resident pages.
        let mut fields = buf[..n].split(|&c| c == b' ');
        let pages = fields
            .nth(1)
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        pages * self.page
    }
}

/// Checks a snapshot's identities; prints and counts a violation.
fn identities_hold(s: &strata::Stats, when: &str) -> bool {
    let ok = s.allocated_bytes <= s.active_bytes
        && s.active_bytes <= s.mapped_bytes
        && s.resident_bytes <= s.mapped_bytes;
    if !ok {
        eprintln!(
            "STATS IDENTITY BROKEN ({when}): allocated {} active {} resident {} mapped {}",
            s.allocated_bytes, s.active_bytes, s.resident_bytes, s.mapped_bytes
        );
    }
    ok
}

/// Samples until STOP; returns the samples and the number of broken identities.
fn sample(start: Instant, interval: Duration, capacity: usize) -> (Vec<Sample>, u64) {
    let rss = RssReader::new();
    let mut v = Vec::with_capacity(capacity);
    let mut broken = 0;
    let mut next = Duration::ZERO;
    while !STOP.load(Ordering::Relaxed) && v.len() < capacity {
        let s = strata::stats();
        let t = start.elapsed();
        if !identities_hold(&s, "sample") {
            broken += 1;
        }
        v.push(Sample {
            t: t.as_secs_f64(),
            phase: PHASE.load(Ordering::Relaxed),
            allocated: s.allocated_bytes,
            active: s.active_bytes,
            resident: s.resident_bytes,
            mapped: s.mapped_bytes,
            thread_cached: s.thread_cached_bytes,
            central_cached: s.central_cached_bytes,
            span_free: s.span_free_bytes,
            page_free: s.page_free_bytes,
            page_purged: s.page_purged_bytes,
            rss: rss.bytes(),
        });
        next += interval;
        sleep_until(start, next.max(t));
    }
    (v, broken)
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(ms) = opts.purge_delay_ms {
        strata::set_purge_delay_ms(ms);
    }
    if opts.background_purge && !strata::start_background_purge() {
        eprintln!("fragmentation: the background purge thread did not start");
        return ExitCode::FAILURE;
    }
    let purge_delay = Duration::from_millis(opts.purge_delay_ms.unwrap_or(1000));
    let total = Duration::from_secs_f64(opts.seconds);
    let mut ends = [Duration::ZERO; 5];
    let mut acc = 0.0;
    for (i, share) in PHASE_SHARE.iter().enumerate() {
        acc += share;
        ends[i] = total.mul_f64(acc);
    }
    // Idle: release once the purge delay has passed, with margin, and not later than
    // 80 % into the phase.
    let idle = ends[3] - ends[2];
    let release_at = ends[2] + (purge_delay + purge_delay / 4).min(idle.mul_f64(0.8));

    let start = Instant::now();
    let plan = Arc::new(Plan {
        start,
        ends,
        release_at,
        barrier: Barrier::new(THREADS + 1),
        targets: opts.targets,
    });
    let interval = Duration::from_millis(opts.interval_ms);
    let capacity = (opts.seconds * 1000.0 / opts.interval_ms as f64) as usize * 2 + 1000;
    let sampler = std::thread::spawn(move || sample(start, interval, capacity));

    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| channel()).unzip();
    let mut workers = Vec::new();
    for (id, from_prev) in receivers.into_iter().enumerate() {
        let w = Worker {
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) << 32)),
            pools: [
                Vec::with_capacity(opts.targets[SMALL] * 2),
                Vec::with_capacity(opts.targets[MEDIUM] * 2),
                Vec::with_capacity(opts.targets[LARGE] * 2),
            ],
            to_next: senders[(id + 1) % THREADS].clone(),
            from_prev,
            outbox: Vec::with_capacity(32),
            plan: Arc::clone(&plan),
        };
        workers.push(std::thread::spawn(move || w.run()));
    }
    drop(senders);

    // The main thread: end-of-phase snapshots, the phase counter, release_memory().
    let rss = RssReader::new();
    let mut phase_starts = vec![0.0];
    let mut phase_end: Vec<(strata::Stats, u64)> = Vec::new();
    let mut release_t = 0.0;
    let mut released = 0;
    let mut before_release = (0, 0);
    let mut broken = 0;
    for (p, name) in PHASES.iter().enumerate() {
        if p == 3 {
            plan.barrier.wait(); // workers have flushed their caches
            release_t = start.elapsed().as_secs_f64();
            before_release = (strata::stats().resident_bytes, rss.bytes());
            released = strata::release_memory();
            plan.barrier.wait();
        }
        plan.barrier.wait(); // every thread stopped sending
        plan.barrier.wait(); // every inbox drained
        let s = strata::stats();
        broken += u64::from(!identities_hold(&s, name));
        phase_end.push((s, rss.bytes()));
        if p + 1 < PHASES.len() {
            PHASE.store(p + 1, Ordering::Relaxed);
            phase_starts.push(start.elapsed().as_secs_f64());
        } else {
            // The chart ends with the workload, before the teardown.
            STOP.store(true, Ordering::Relaxed);
        }
        plan.barrier.wait();
    }
    plan.barrier.wait(); // teardown done
    for w in workers {
        w.join().expect("worker panicked");
    }
    let (samples, sample_broken) = sampler.join().expect("sampler panicked");
    broken += sample_broken;
    let t_end = samples.last().map_or(0.0, |x| x.t);
    let after = strata::stats();
    broken += u64::from(!identities_hold(&after, "after teardown"));

    // Output files.
    let out = &opts.out;
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let csv = out.join("samples.csv");
    let chart = out.join("fragmentation.svg");
    let title = format!(
        "strata: resident vs allocated, {THREADS} threads, {:.0} s, purge delay {} ms",
        opts.seconds,
        purge_delay.as_millis()
    );
    let drawn = svg(&samples, &phase_starts, release_t, &title);
    if let Err(e) = write_csv(&csv, &samples).and_then(|_| std::fs::write(&chart, &drawn)) {
        eprintln!("cannot write output: {e}");
        return ExitCode::FAILURE;
    }

    // Summary.
    println!(
        "{} samples over {t_end:.1} s (every {} ms); {} and {} ({} KB)",
        samples.len(),
        opts.interval_ms,
        csv.display(),
        chart.display(),
        drawn.len() / 1000
    );
    println!(
        "{:<14} {:>8} {:>11} {:>11} {:>11} {:>11} {:>11} {:>12}",
        "phase",
        "ends (s)",
        "peak alloc",
        "peak resid",
        "peak RSS",
        "end alloc",
        "end resid",
        "resid/alloc"
    );
    for (p, (s, _rss)) in phase_end.iter().enumerate() {
        let of = |f: fn(&Sample) -> u64| {
            samples
                .iter()
                .filter(|x| x.phase == p)
                .map(f)
                .max()
                .unwrap_or(0) as f64
                / MIB
        };
        let end_t = phase_starts.get(p + 1).copied().unwrap_or(t_end);
        println!(
            "{:<14} {:>8.1} {:>7.1} MiB {:>7.1} MiB {:>7.1} MiB {:>7.1} MiB {:>7.1} MiB {:>12.2}",
            PHASES[p],
            end_t,
            of(|x| x.allocated),
            of(|x| x.resident),
            of(|x| x.rss),
            s.allocated_bytes as f64 / MIB,
            s.resident_bytes as f64 / MIB,
            s.resident_bytes as f64 / s.allocated_bytes.max(1) as f64
        );
    }
    println!(
        "release_memory() at {release_t:.2} s (resident {:.1} MiB, RSS {:.1} MiB just before; \
         background purge {}) returned {:.1} MiB",
        before_release.0 as f64 / MIB,
        before_release.1 as f64 / MIB,
        if opts.background_purge { "on" } else { "off" },
        released as f64 / MIB
    );
    println!(
        "\nfinal snapshot, end of phase 5 (before teardown):\n{}",
        phase_end[4].0
    );
    println!(
        "after teardown: allocated {:.1} MiB, resident {:.1} MiB, mapped {:.1} MiB, RSS {:.1} MiB",
        after.allocated_bytes as f64 / MIB,
        after.resident_bytes as f64 / MIB,
        after.mapped_bytes as f64 / MIB,
        rss.bytes() as f64 / MIB
    );
    let failures = FAILURES.load(Ordering::Relaxed);
    if failures > 0 || broken > 0 {
        eprintln!("FAILED: {failures} content checks, {broken} broken stats identities");
        return ExitCode::FAILURE;
    }
    println!("every block checked; every snapshot consistent");
    ExitCode::SUCCESS
}
