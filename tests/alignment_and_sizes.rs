#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::{KIB, MIB, pattern};

// Alignment and size coverage for `strata::Strata`, driven directly through
// `GlobalAlloc`: every power-of-two alignment, every small size, a geometric
// ladder of sizes up to 64 MiB, and requests that cannot be satisfied.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::VecDeque;

fn seed_for(size: usize, addr: usize) -> u64 {
    (size as u64).wrapping_mul(0xA24B_AED4_963E_E407) ^ (addr as u64).rotate_left(17)
}

/// A live block allocated through `GLOBAL`, filled with a pattern.
struct Block {
    ptr: *mut u8,
    layout: Layout,
    seed: u64,
}

impl Block {
    #[track_caller]
    fn new(layout: Layout) -> Block {
        // SAFETY: every layout used in this file has a non-zero size.
        let ptr = unsafe { GLOBAL.alloc(layout) };
        assert!(!ptr.is_null(), "alloc({layout:?}) returned null");
        assert_eq!(
            ptr as usize % layout.align(),
            0,
            "alloc({layout:?}) returned misaligned {ptr:p}"
        );
        let mut block = Block {
            ptr,
            layout,
            seed: seed_for(layout.size(), ptr as usize),
        };
        let seed = block.seed;
        pattern::fill(block.bytes_mut(), seed);
        block
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes owned
        // exclusively by `self`, which is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }

    #[track_caller]
    fn check(&self) {
        let what = format!("block {:p} {:?}", self.ptr, self.layout);
        pattern::check(self.bytes(), self.seed, &what);
    }

    #[track_caller]
    fn free(self) {
        self.check();
        // SAFETY: `ptr` was returned by `GLOBAL.alloc(layout)` and is freed once.
        unsafe { GLOBAL.dealloc(self.ptr, self.layout) };
    }
}

fn assert_disjoint(blocks: &[Block]) {
    let mut ranges: Vec<(usize, usize)> = blocks
        .iter()
        .map(|b| (b.ptr as usize, b.ptr as usize + b.layout.size()))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "live blocks overlap: [{:#x}, {:#x}) and [{:#x}, {:#x})",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
}

#[test]
fn every_power_of_two_alignment_up_to_4mib_is_honoured_for_many_sizes() {
    for shift in 0..=22 {
        let align = 1usize << shift;
        let sizes = [1, (align - 1).max(1), align, align + 1, 3 * align, 100];
        // All sizes of one alignment are live at once, so overlaps are caught.
        let blocks: Vec<Block> = sizes
            .iter()
            .map(|&size| Block::new(Layout::from_size_align(size, align).unwrap()))
            .collect();
        assert_disjoint(&blocks);
        for b in &blocks {
            b.check();
        }
        for b in blocks {
            b.free();
        }
    }
}

#[test]
fn alignments_up_to_1gib_are_honoured_for_small_blocks() {
    for shift in 23..=30 {
        let align = 1usize << shift;
        let layout = Layout::from_size_align(64, align).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null(), "alloc({layout:?}) returned null");
        assert_eq!(p as usize % align, 0, "alloc({layout:?}) misaligned: {p:p}");
        // SAFETY: `p` points to 64 writable bytes.
        unsafe {
            p.write_volatile(0x5A);
            p.add(63).write_volatile(0xA5);
            assert_eq!(p.read_volatile(), 0x5A);
            assert_eq!(p.add(63).read_volatile(), 0xA5);
            GLOBAL.dealloc(p, layout);
        }
    }
}

#[test]
fn every_size_from_1_to_4096_gets_a_disjoint_writable_block() {
    for align in [1usize, 8, 16] {
        // Allocate all sizes first, so that every block is live at once.
        let mut blocks: Vec<Block> = (1..=4096)
            .map(|size| Block::new(Layout::from_size_align(size, align).unwrap()))
            .collect();
        assert_disjoint(&blocks);
        for b in &blocks {
            b.check();
        }
        // Free every odd size and allocate it again while the even sizes stay
        // live: recycled slots must not hand out memory that is still in use.
        let mut kept = Vec::with_capacity(blocks.len());
        for b in blocks.drain(..) {
            if b.layout.size() % 2 == 1 {
                b.free();
            } else {
                kept.push(b);
            }
        }
        for size in (1..=4096).step_by(2) {
            kept.push(Block::new(Layout::from_size_align(size, align).unwrap()));
        }
        assert_disjoint(&kept);
        for b in &kept {
            b.check();
        }
        for b in kept {
            b.free();
        }
    }
}

#[test]
fn sizes_growing_by_12_percent_up_to_64mib_are_fully_writable() {
    let mut sizes = Vec::new();
    let mut size = 4097;
    while size < 64 * MIB {
        sizes.push(size);
        size += size / 8 + 1;
    }
    sizes.extend([256 * KIB, MIB, 4 * MIB, 64 * MIB - 1, 64 * MIB]);
    sizes.sort_unstable();
    sizes.dedup();
    // A sliding window of live blocks: each new block is written while the
    // three previous ones are still live, and they are re-verified afterwards.
    let mut window: VecDeque<Block> = VecDeque::new();
    for &size in &sizes {
        let b = Block::new(Layout::from_size_align(size, 8).unwrap());
        window.push_back(b);
        for b in &window {
            b.check();
        }
        if window.len() > 3 {
            window.pop_front().unwrap().free();
        }
    }
    for b in window {
        b.free();
    }
}

#[test]
fn impossible_requests_return_null_without_aborting() {
    let impossible = [
        Layout::from_size_align(isize::MAX as usize - 4096, 8).unwrap(),
        Layout::from_size_align(isize::MAX as usize / 2, 4096).unwrap(),
        Layout::from_size_align(isize::MAX as usize / 2, 1).unwrap(),
        // 128 TiB: larger than the user address space of x86-64 / aarch64 (48-bit).
        Layout::from_size_align(1 << 47, 8).unwrap(),
        Layout::from_size_align(1 << 47, 1 << 21).unwrap(),
    ];
    // 64 and 16 TiB fit the address space but no machine's RAM and swap: the
    // kernel refuses such a mapping under the default overcommit heuristic (mode
    // 0) and under strict accounting (mode 2), so the allocation fails at the call
    // (as glibc's does) instead of returning memory that kills the program when
    // touched. Mode 1 (always overcommit) grants it: not checked there.
    let overcommit_always =
        std::fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|m| m.trim() == "1");
    let unbacked = [
        Layout::from_size_align(1 << 46, 8).unwrap(),
        Layout::from_size_align(1 << 44, 4096).unwrap(),
    ];
    let unbacked = if overcommit_always {
        &[][..]
    } else {
        &unbacked[..]
    };
    for &layout in impossible.iter().chain(unbacked) {
        // SAFETY: non-zero size; a null result is the expected outcome.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(p.is_null(), "alloc({layout:?}) returned {p:p}");
        // SAFETY: as above.
        let p = unsafe { GLOBAL.alloc_zeroed(layout) };
        assert!(p.is_null(), "alloc_zeroed({layout:?}) returned {p:p}");
    }

    // realloc to an impossible size returns null and leaves the block intact.
    for old_size in [24, 1000, 70_000, 3 * MIB] {
        for &layout in impossible.iter().chain(unbacked) {
            let old = Layout::from_size_align(old_size, layout.align()).unwrap();
            let mut b = Block::new(old);
            // SAFETY: `b.ptr` is live with layout `old`; the new size rounded
            // up to `old.align()` does not exceed `isize::MAX`.
            let q = unsafe { GLOBAL.realloc(b.ptr, old, layout.size()) };
            assert!(
                q.is_null(),
                "realloc({old:?} -> {}) returned {q:p}",
                layout.size()
            );
            b.check();
            // The block is still usable: write it again and free it.
            let seed = b.seed;
            pattern::fill(b.bytes_mut(), seed ^ 1);
            pattern::check(b.bytes(), seed ^ 1, "rewritten block after failed realloc");
            pattern::fill(b.bytes_mut(), seed);
            b.free();
        }
    }

    // The allocator still works normally after all those failures.
    let blocks: Vec<Block> = [1, 64, 5000, 2 * MIB]
        .iter()
        .map(|&s| Block::new(Layout::from_size_align(s, 8).unwrap()))
        .collect();
    for b in blocks {
        b.free();
    }
}
