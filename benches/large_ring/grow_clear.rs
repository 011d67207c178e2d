//! Grow-and-clear: a cache (`HashMap<u64, Box<[u8]>>`, values of 100 B-512 KiB,
//! uniform, every byte written) grown to TARGET bytes and then cleared, ROUNDS
//! times. Without a `#[global_allocator]` it runs on the C `malloc`, so
//! `LD_PRELOAD` picks the allocator. Prints the seconds of the fill-and-clear
//! rounds. Build: `rustc -O -o grow_clear benches/large_ring/grow_clear.rs`;
//! usage: `grow_clear [TARGET_MIB] [ROUNDS]` (default 512, 3).
use std::collections::HashMap;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let target_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let target = target_mib << 20;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut map: HashMap<u64, Box<[u8]>> = HashMap::new();
    let mut sum = 0u64;
    let start = Instant::now();
    for _ in 0..rounds {
        let mut bytes = 0;
        while bytes < target {
            let size = 100 + (next() % (512 * 1024 - 100 + 1)) as usize;
            let v = vec![next() as u8 | 1; size].into_boxed_slice();
            bytes += size;
            map.insert(next(), v);
        }
        sum += map.values().map(|v| u64::from(v[v.len() - 1])).sum::<u64>();
        map.clear();
        map.shrink_to_fit();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("checksum {sum}");
    println!("{secs:.3}");
}
