//! Four workloads built from real crates, the same code in every binary; each
//! binary under `src/bin/` picks one `#[global_allocator]` and calls [`main`].
//!
//! Usage: `<binary> rayon|json|tokio|cache`. Sizes: `PEERS_SCALE` (a float,
//! default 1) scales the work; `PEERS_CACHE_MB` (default 1024) is the cache's size.

// Benchmark code: it may allocate and format (the repository's clippy.toml bans
// that for the allocator's own code).
#![allow(clippy::disallowed_macros)]

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A small xorshift generator: the same input for every allocator, no `rand` crate.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// Log-uniform in `lo..=hi`: as many values between 100 B and 1 KiB as between
    /// 64 KiB and 640 KiB, as in caches of mixed objects.
    pub fn log_range(&mut self, lo: usize, hi: usize) -> usize {
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((l + u * (h - l)).exp() as usize).clamp(lo, hi)
    }
}

fn scale() -> f64 {
    std::env::var("PEERS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(1)
}

/// rayon: 2 M random strings sorted in parallel, then a `HashMap<String, Vec<u32>>`
/// from their 3-letter prefixes built by parallel fold + reduce, all dropped; x5.
pub fn rayon_work() -> u64 {
    use rayon::prelude::*;
    let n = scaled(2_000_000);
    let mut check = 0u64;
    for round in 0..5u64 {
        let mut v: Vec<String> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut r = Rng::new(i as u64 * 31 + round);
                let len = r.range(4, 40);
                (0..len)
                    .map(|_| (b'a' + (r.next_u64() % 26) as u8) as char)
                    .collect()
            })
            .collect();
        v.par_sort_unstable();
        let map: HashMap<String, Vec<u32>> = v
            .par_iter()
            .enumerate()
            .fold(HashMap::new, |mut m: HashMap<String, Vec<u32>>, (i, s)| {
                m.entry(s[..3].to_string()).or_default().push(i as u32);
                m
            })
            .reduce(HashMap::new, |mut a, b| {
                for (k, mut list) in b {
                    a.entry(k).or_default().append(&mut list);
                }
                a
            });
        check = check.wrapping_add(map.len() as u64 + v[n / 2].len() as u64);
    }
    check
}

/// A JSON document of about `bytes` bytes: an array of records with nested objects,
/// arrays, strings and numbers.
pub fn json_document(bytes: usize, seed: u64) -> String {
    let mut r = Rng::new(seed);
    let mut out = String::with_capacity(bytes + 4096);
    out.push('[');
    let mut first = true;
    while out.len() < bytes {
        if !first {
            out.push(',');
        }
        first = false;
        let id = r.next_u64() % 1_000_000;
        let ntags = r.range(0, 8);
        let tags: Vec<String> = (0..ntags)
            .map(|t| format!("\"tag{}\"", (id + t as u64) % 97))
            .collect();
        let nvals = r.range(1, 16);
        let vals: Vec<String> = (0..nvals)
            .map(|_| format!("{}.{}", r.next_u64() % 1000, r.next_u64() % 100))
            .collect();
        let name: String = (0..r.range(4, 24))
            .map(|_| (b'a' + (r.next_u64() % 26) as u8) as char)
            .collect();
        out.push_str(&format!(
            "{{\"id\":{id},\"name\":\"{name}\",\"active\":{},\"tags\":[{}],\"values\":[{}],\
             \"meta\":{{\"created\":{},\"owner\":{{\"uid\":{},\"group\":\"g{}\"}},\"note\":null}}}}",
            r.next_u64().is_multiple_of(2),
            tags.join(","),
            vals.join(","),
            r.next_u64() % 2_000_000_000,
            r.next_u64() % 65536,
            r.next_u64() % 100,
        ));
    }
    out.push(']');
    out
}

/// serde_json: 2 threads, each generates a ~25 MB document (50 MB in all), parses it
/// to a `Value`, writes it back to a string and drops both; x2.
pub fn json_work() -> u64 {
    let bytes = scaled(25 << 20);
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut check = 0u64;
                for round in 0..2 {
                    let doc = json_document(bytes, t * 7 + round);
                    let v: serde_json::Value = serde_json::from_str(&doc).expect("valid json");
                    let back = serde_json::to_string(&v).expect("serialises");
                    check = check.wrapping_add(
                        back.len() as u64 + v.as_array().map_or(0, |a| a.len()) as u64,
                    );
                }
                check
            })
        })
        .collect();
    threads.into_iter().map(|h| h.join().expect("thread")).sum()
}

/// What the tokio tasks send each other.
pub enum Msg {
    Buf(Vec<u8>),
    Map(BTreeMap<u32, u64>),
}

/// tokio: 4 worker threads, 10,000 tasks; task i sends `per_task` messages (1-64 KiB
/// buffers or `BTreeMap`s of 16-256 entries) to task `(7919 i + 1) mod N` over a
/// bounded channel and receives as many, dropping what it receives (so most
/// blocks are freed by a task other than the one that allocated them).
pub fn tokio_work() -> u64 {
    const TASKS: usize = 10_000;
    let per_task = scaled(40);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut txs = Vec::with_capacity(TASKS);
        let mut rxs = Vec::with_capacity(TASKS);
        for _ in 0..TASKS {
            let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(4);
            txs.push(Some(tx));
            rxs.push(rx);
        }
        let mut handles = Vec::with_capacity(TASKS);
        for (i, mut rx) in rxs.into_iter().enumerate() {
            let tx = txs[(7919 * i + 1) % TASKS].take().expect("a permutation");
            handles.push(tokio::spawn(async move {
                let mut r = Rng::new(i as u64 + 1);
                let send = async {
                    for k in 0..per_task {
                        let msg = if k % 3 == 2 {
                            let n = r.range(16, 256);
                            Msg::Map(
                                (0..n as u32)
                                    .map(|j| (j.wrapping_mul(2654435761), j as u64))
                                    .collect(),
                            )
                        } else {
                            let n = r.range(1 << 10, 64 << 10);
                            Msg::Buf(vec![(i + k) as u8 | 1; n])
                        };
                        tx.send(msg).await.expect("receiver lives");
                    }
                };
                let recv = async {
                    let mut sum = 0u64;
                    for _ in 0..per_task {
                        match rx.recv().await.expect("sender lives") {
                            Msg::Buf(b) => sum += b[b.len() - 1] as u64 + b.len() as u64,
                            Msg::Map(m) => sum += m.len() as u64,
                        }
                    }
                    sum
                };
                let ((), sum) = tokio::join!(send, recv);
                sum
            }));
        }
        let mut total = 0u64;
        for h in handles {
            total = total.wrapping_add(h.await.expect("task"));
        }
        total
    })
}

/// A cache: `HashMap<u64, Box<[u8]>>` of written values of 100 B-512 KiB
/// (log-uniform) grown to `PEERS_CACHE_MB` (default 1024) and cleared; x3.
pub fn cache_work() -> u64 {
    let mb: usize = std::env::var("PEERS_CACHE_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let limit = mb << 20;
    let mut r = Rng::new(42);
    let mut map: HashMap<u64, Box<[u8]>> = HashMap::new();
    let mut check = 0u64;
    for round in 0..3u64 {
        let mut bytes = 0usize;
        let mut key = 0u64;
        while bytes < limit {
            let n = r.log_range(100, 512 << 10);
            let v = vec![(key as u8) | 1; n].into_boxed_slice();
            bytes += n;
            map.insert(key, v);
            key += 1;
        }
        check = check.wrapping_add(map.len() as u64 + round);
        map.clear();
    }
    check
}

/// Runs the workload named by the first argument and prints its time.
pub fn main() {
    let w = std::env::args().nth(1).unwrap_or_default();
    let t = Instant::now();
    let check = match w.as_str() {
        "rayon" => rayon_work(),
        "json" => json_work(),
        "tokio" => tokio_work(),
        "cache" => cache_work(),
        _ => {
            eprintln!(
                "usage: {} rayon|json|tokio|cache",
                std::env::args().next().unwrap_or_default()
            );
            std::process::exit(2);
        }
    };
    println!("{w} {:.3} s (check {check})", t.elapsed().as_secs_f64());
}
