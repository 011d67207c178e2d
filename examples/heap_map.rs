//! Heap maps of a fragmenting workload, before and after.
//!
//! ```text
//! cargo run --release --example heap_map            # writes into target/
//! cargo run --release --example heap_map -- DIR
//! ```
//!
//! Allocates about 24 MiB in blocks of mixed sizes (mostly small objects of many
//! classes, some Large blocks, one huge block), in random order, each written so
//! that its pages are resident; writes `heap-map-before.svg`. Then frees a random
//! 80 % of the blocks, keeps the rest and writes `heap-map-freed.svg` (emptied spans
//! free but still resident), then calls `strata::release_memory()` (which flushes
//! the thread's cache and returns every free page to the OS) and writes
//! `heap-map-after.svg`: spans that kept a few live objects stay, light and
//! scattered, between purged holes.

#[global_allocator]
static A: strata::Strata = strata::Strata;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Bytes to allocate before the first map.
const TARGET_BYTES: usize = 24 << 20;
/// Share of the blocks that survive, in percent.
const KEEP_PERCENT: u64 = 20;

// Deterministic, so every run draws the same maps.
#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

impl Rng {
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo)
    }
    /// A block size: many small objects, fewer medium ones, a few Large blocks.
    fn size(&mut self) -> usize {
        match self.next() % 1000 {
            0..850 => self.range(16, 512),
            850..950 => self.range(512, 8 << 10),
            950..990 => self.range(8 << 10, 64 << 10),
            990..998 => self.range(64 << 10, 256 << 10),
            _ => self.range(256 << 10, 1 << 20),
        }
    }
}

fn write_map(dir: &Path, name: &str) -> std::io::Result<strata::HeapMapSummary> {
    let path = dir.join(name);
    let mut out = BufWriter::new(File::create(&path)?);
    let s = strata::write_heap_map(&mut out)?;
    drop(out);
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "{}: {} chunks, {} small spans ({} live objects), {} large blocks, {} huge; \
         free {} KiB resident, {} KiB purged; {} KiB of SVG",
        path.display(),
        s.chunks,
        s.small_spans(),
        s.live_objects(),
        s.large_spans,
        s.huge_blocks,
        s.free_resident_bytes() >> 10,
        s.free_purged_bytes() >> 10,
        bytes >> 10,
    );
    Ok(s)
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target".into()));
    std::fs::create_dir_all(&dir)?;
    let mut rng = Rng(0x5EED_1234_ABCD_0001);

    let mut blocks: Vec<Box<[u8]>> = Vec::with_capacity(16 << 10);
    blocks.push(vec![0xAB; 3 << 20].into_boxed_slice()); // one huge block
    let mut total = 0;
    while total < TARGET_BYTES {
        let size = rng.size();
        blocks.push(vec![blocks.len() as u8 | 1; size].into_boxed_slice());
        total += size;
    }
    println!("allocated {} blocks, {} KiB", blocks.len(), total >> 10);
    write_map(&dir, "heap-map-before.svg")?;

    // Keep the huge block and a random fifth of the rest.
    let mut i = 0;
    blocks.retain(|_| {
        i += 1;
        i == 1 || rng.next() % 100 < KEEP_PERCENT
    });
    for (i, b) in blocks.iter().enumerate().skip(1) {
        assert!(b.iter().all(|&x| x == b[0]), "block {i} lost its content");
    }
    // Freed but not yet purged (the purge delay is 1 s): emptied spans are free and
    // still resident; objects freed from spans that keep live ones sit in the
    // thread's cache and the central tier, still counted live.
    println!("kept {} blocks", blocks.len());
    write_map(&dir, "heap-map-freed.svg")?;
    let released = strata::release_memory();
    println!("release_memory() returned {} KiB", released >> 10);
    write_map(&dir, "heap-map-after.svg")?;
    drop(blocks);
    Ok(())
}
