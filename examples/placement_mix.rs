//! A long-running random mix of Large blocks and small objects, sampled over time:
//! what the page heap's placement policy (`STRATA_PLACEMENT`) does to fragmentation.
//!
//! ```text
//! STRATA_PLACEMENT=first cargo run --release --example placement_mix -- --seconds 20 --out DIR
//! cargo run --release --example placement_mix -- --quick     # 3 s
//! ```
//!
//! `--threads` workers (default 2) each keep a pool of live blocks whose target
//! size rises and falls in waves (by operation count, so every policy sees the same
//! sequence of requests per thread): mostly small objects (16 B-32 KiB), some
//! medium ones (32-256 KiB, multi-page spans of the size classes) and Large blocks
//! (256 KiB-1 MiB, page spans of their own), freed in random order. Every block has
//! one byte per page written (so its pages are resident) and checked before it is
//! freed.
//!
//! `--ops N` stops each worker after N operations (rounded up to 256), so that a
//! fixed amount of work can be compared (`valgrind --tool=callgrind`); the run
//! still ends at `--seconds`.
//!
//! With `--heap-map`, `DIR/heap-map.svg` is the heap map at the end of the run,
//! taken while the workers still run (before they free their pools).
//!
//! A sampler calls `strata::stats()` every `--interval-ms` and writes
//! `DIR/series.csv`: time, allocated, resident, mapped, free pages, free spans,
//! the largest free span, RSS and operations so far. The last line of stdout is
//! `RESULT placement=... ops_per_sec=... peak_rss_kib=... mean_resident_ratio=...
//! final_free_spans=... final_largest_free_kib=...`; the exit status is 1 if a
//! check failed.

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

use std::alloc::Layout;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

static OPS: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
/// Workers that have done their `--ops`.
static DONE: AtomicU64 = AtomicU64::new(0);

/// Live blocks per thread at the crest of a wave.
const MAX_LIVE: usize = 1_000;
/// Operations per wave (one rise and fall of the pool).
const WAVE_OPS: f64 = 20_000.0;

struct Opts {
    seconds: f64,
    threads: usize,
    interval_ms: u64,
    out: PathBuf,
    heap_map: bool,
    ops: u64,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        seconds: 20.0,
        threads: 2,
        interval_ms: 50,
        out: PathBuf::from("target/placement_mix"),
        heap_map: false,
        ops: u64::MAX,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => o.seconds = 3.0,
            "--seconds" => o.seconds = val()?.parse().map_err(|e| format!("{e}"))?,
            "--threads" => o.threads = val()?.parse().map_err(|e| format!("{e}"))?,
            "--interval-ms" => o.interval_ms = val()?.parse().map_err(|e| format!("{e}"))?,
            "--out" => o.out = PathBuf::from(val()?),
            "--heap-map" => o.heap_map = true,
            "--ops" => o.ops = val()?.parse().map_err(|e| format!("{e}"))?,
            _ => {
                return Err(format!(
                    "unknown argument {a}; usage: placement_mix [--quick] [--seconds N] \
                     [--threads N] [--interval-ms N] [--out DIR] [--heap-map] [--ops N]"
                ));
            }
        }
    }
    Ok(o)
}

fn size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..70 => 16 + rng.below(32 << 10),
        70..93 => (32 << 10) + rng.below(224 << 10),
        _ => (256 << 10) + rng.below(768 << 10),
    }
}

/// A block from the global allocator (strata) with one byte per 4 KiB written,
/// derived from its tag, and its last byte (the tag, written last); checked and
/// freed on drop.
struct Block {
    p: *mut u8,
    n: usize,
    tag: u8,
}

// SAFETY: the block is owned by whoever holds it; nothing else refers to it.
unsafe impl Send for Block {}

impl Block {
    fn layout(n: usize) -> Layout {
        Layout::from_size_align(n, 1).expect("layout")
    }

    fn new(n: usize, tag: u8) -> Block {
        // SAFETY: `n > 0`.
        let p = unsafe { std::alloc::alloc(Block::layout(n)) };
        assert!(!p.is_null(), "out of memory");
        for i in (0..n).step_by(4096) {
            // SAFETY: `i < n`, inside the block.
            unsafe { p.add(i).write(tag.wrapping_add((i >> 12) as u8)) };
        }
        // SAFETY: the last byte of the block.
        unsafe { p.add(n - 1).write(tag) };
        Block { p, n, tag }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let (p, n, tag) = (self.p, self.n, self.tag);
        // SAFETY: every byte read was written by `new` (the stride and the last
        // byte); the block is live until the dealloc below.
        let ok = unsafe {
            (0..n)
                .step_by(4096)
                .all(|i| i == n - 1 || *p.add(i) == tag.wrapping_add((i >> 12) as u8))
                && *p.add(n - 1) == tag
        };
        if !ok {
            FAILURES.fetch_add(1, Ordering::Relaxed);
            eprintln!("placement_mix: a block's content changed");
        }
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(p, Block::layout(n)) };
    }
}

fn worker(seed: u64, max_ops: u64) {
    let mut rng = Rng(seed);
    let mut live: Vec<Block> = Vec::with_capacity(MAX_LIVE + 1);
    let mut ops = 0u64;
    while !STOP.load(Ordering::Relaxed) && ops < max_ops {
        for _ in 0..256 {
            let phase = (ops as f64 / WAVE_OPS) * std::f64::consts::TAU;
            let target = (MAX_LIVE as f64 * (0.55 + 0.45 * phase.sin())) as usize;
            if live.len() < target || live.is_empty() {
                let tag = rng.next() as u8;
                live.push(Block::new(size(&mut rng), tag));
            } else {
                drop(live.swap_remove(rng.below(live.len())));
            }
            ops += 1;
        }
        OPS.fetch_add(256, Ordering::Relaxed);
    }
    drop(live);
    DONE.fetch_add(1, Ordering::Relaxed);
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() -> std::process::ExitCode {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    std::fs::create_dir_all(&o.out).expect("create --out");
    let mut csv = String::with_capacity(1 << 20);
    csv.push_str(
        "t_s,allocated,resident,mapped,page_free,free_spans,largest_free_span,rss_kib,ops\n",
    );
    let start = Instant::now();
    let workers: Vec<_> = (0..o.threads)
        .map(|i| {
            let ops = o.ops;
            std::thread::spawn(move || worker(0x5eed_0000 + i as u64 * 7919, ops))
        })
        .collect();
    let (mut ratio_sum, mut ratio_n) = (0.0, 0u64);
    let end = start + Duration::from_secs_f64(o.seconds);
    let interval = Duration::from_millis(o.interval_ms);
    let mut next_sample = start + interval;
    while Instant::now() < end && DONE.load(Ordering::Relaxed) < o.threads as u64 {
        // Short naps, so that a run of `--ops` ends soon after its workers.
        std::thread::sleep(Duration::from_millis(5).min(interval));
        if Instant::now() < next_sample {
            continue;
        }
        next_sample += interval;
        let s = strata::stats();
        let t = start.elapsed().as_secs_f64();
        if s.allocated_bytes > 0 {
            ratio_sum += s.resident_bytes as f64 / s.allocated_bytes as f64;
            ratio_n += 1;
        }
        let _ = writeln!(
            csv,
            "{t:.3},{},{},{},{},{},{},{},{}",
            s.allocated_bytes,
            s.resident_bytes,
            s.mapped_bytes,
            s.page_free_bytes,
            s.free_spans,
            s.largest_free_span_bytes,
            rss_kib(),
            OPS.load(Ordering::Relaxed)
        );
    }
    if o.heap_map {
        // The heap as the workers leave it mid-run (they keep running meanwhile).
        let path = o.out.join("heap-map.svg");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("heap map"));
        let sum = strata::write_heap_map(&mut f).expect("write heap map");
        println!("{}: {} chunks", path.display(), sum.chunks);
    }
    STOP.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let ops = OPS.load(Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let s = strata::stats();
    std::fs::write(o.out.join("series.csv"), csv).expect("write series.csv");
    if let Err(v) = strata::validate_heap() {
        eprintln!("placement_mix: {v}");
        return std::process::ExitCode::from(1);
    }
    println!(
        "RESULT placement={} threads={} seconds={elapsed:.2} ops={ops} ops_per_sec={:.0} \
         peak_rss_kib={} mean_resident_ratio={:.3} final_free_spans={} final_largest_free_kib={}",
        strata::placement(),
        o.threads,
        ops as f64 / elapsed,
        peak_rss_kib(),
        ratio_sum / ratio_n.max(1) as f64,
        s.free_spans,
        s.largest_free_span_bytes >> 10
    );
    if FAILURES.load(Ordering::Relaxed) > 0 {
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}
