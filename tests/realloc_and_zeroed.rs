#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::{KIB, MIB, pattern};

// `realloc` content preservation across every size regime, zeroing guarantees
// of `alloc_zeroed` on recycled memory, and std collections running on strata.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;

/// Sizes from 1 byte to 32 MiB: x1.37 per step, plus +1 steps around the
/// boundaries where an allocator typically switches regime (size classes,
/// pages, spans, huge mappings).
fn realloc_ladder() -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut s = 1usize;
    while s < 32 * MIB {
        sizes.push(s);
        s = ((s as f64 * 1.37) as usize).max(s + 1);
    }
    for boundary in [
        8,
        16,
        1024,
        4 * KIB,
        32 * KIB,
        64 * KIB,
        256 * KIB,
        MIB,
        2 * MIB,
        4 * MIB,
    ] {
        sizes.extend(boundary - 2..=boundary + 2);
    }
    sizes.push(32 * MIB);
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

#[test]
fn realloc_preserves_contents_growing_to_32mib_and_shrinking_to_1_byte() {
    let ladder = realloc_ladder();
    for align in [8usize, 16, 64, 4096, 65536] {
        let seed = 0xC0FF_EE00 ^ align as u64;
        let mut layout = Layout::from_size_align(ladder[0], align).unwrap();
        // SAFETY: non-zero size.
        let mut p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` is a live block of `layout.size()` bytes.
        pattern::fill(
            unsafe { std::slice::from_raw_parts_mut(p, layout.size()) },
            seed,
        );

        let steps = ladder.iter().skip(1).chain(ladder.iter().rev().skip(1));
        for &new_size in steps {
            let old_size = layout.size();
            // SAFETY: `p` is live with `layout`; `new_size` is non-zero and far
            // below `isize::MAX`.
            let q = unsafe { GLOBAL.realloc(p, layout, new_size) };
            assert!(
                !q.is_null(),
                "realloc {old_size} -> {new_size} (align {align}) returned null"
            );
            assert_eq!(
                q as usize % align,
                0,
                "realloc {old_size} -> {new_size} misaligned {q:p} (align {align})"
            );
            p = q;
            layout = Layout::from_size_align(new_size, align).unwrap();
            // SAFETY: `p` is a live block of `new_size` bytes.
            let buf = unsafe { std::slice::from_raw_parts_mut(p, new_size) };
            let kept = old_size.min(new_size);
            pattern::check(
                &buf[..kept],
                seed,
                &format!("realloc {old_size} -> {new_size} (align {align})"),
            );
            if new_size > old_size {
                pattern::fill_from(&mut buf[old_size..], seed, old_size);
            }
        }
        assert_eq!(layout.size(), 1);
        // SAFETY: `p` is live with `layout`.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
}

#[test]
fn realloc_growth_does_not_clobber_neighbouring_blocks() {
    // Many blocks of one size are allocated back to back (likely adjacent);
    // every other one is grown (possibly in place) and shrunk, and all blocks,
    // grown or not, must keep their contents.
    for size in [
        8usize,
        24,
        100,
        512,
        2000,
        4096,
        9000,
        40_000,
        200_000,
        MIB + 8,
    ] {
        let count = (8 * MIB / size).clamp(4, 64);
        let mut blocks: Vec<(*mut u8, Layout, u64)> = (0..count)
            .map(|i| {
                let layout = Layout::from_size_align(size, 8).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { GLOBAL.alloc(layout) };
                assert!(!p.is_null());
                let seed = (size * 1000 + i) as u64;
                // SAFETY: `p` is a live block of `size` bytes.
                pattern::fill(unsafe { std::slice::from_raw_parts_mut(p, size) }, seed);
                (p, layout, seed)
            })
            .collect();
        for factor in [2usize, 3, 1] {
            for (p, layout, seed) in blocks.iter_mut().step_by(2) {
                let old = layout.size();
                let new = size * factor + factor;
                // SAFETY: `*p` is live with `*layout`.
                let q = unsafe { GLOBAL.realloc(*p, *layout, new) };
                assert!(!q.is_null(), "realloc {old} -> {new} returned null");
                *p = q;
                *layout = Layout::from_size_align(new, 8).unwrap();
                // SAFETY: `q` is a live block of `new` bytes.
                let buf = unsafe { std::slice::from_raw_parts_mut(q, new) };
                pattern::check(
                    &buf[..old.min(new)],
                    *seed,
                    &format!("realloc {old} -> {new}"),
                );
                if new > old {
                    pattern::fill_from(&mut buf[old..], *seed, old);
                }
            }
            for (p, layout, seed) in &blocks {
                // SAFETY: `*p` is a live block of `layout.size()` bytes.
                let buf = unsafe { std::slice::from_raw_parts(*p, layout.size()) };
                pattern::check(buf, *seed, &format!("neighbour of size {}", layout.size()));
            }
        }
        for (p, layout, _) in blocks {
            // SAFETY: `p` is live with `layout`.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
}

fn first_nonzero(buf: &[u8]) -> Option<usize> {
    // SAFETY: every bit pattern is a valid `u8` and a valid `u64`.
    let (pre, mid, post) = unsafe { buf.align_to::<u64>() };
    if let Some(i) = pre.iter().position(|&b| b != 0) {
        return Some(i);
    }
    if let Some(w) = mid.iter().position(|&w| w != 0) {
        let start = pre.len() + 8 * w;
        return (start..start + 8).find(|&i| buf[i] != 0);
    }
    post.iter()
        .position(|&b| b != 0)
        .map(|i| pre.len() + 8 * mid.len() + i)
}

/// Allocates `count` blocks of `layout` with `alloc`, dirties them with 0xAB
/// and frees them, `rounds` times.
fn dirty_and_free(layout: Layout, count: usize, rounds: usize) {
    for _ in 0..rounds {
        let ptrs: Vec<*mut u8> = (0..count)
            .map(|_| {
                // SAFETY: non-zero size.
                let p = unsafe { GLOBAL.alloc(layout) };
                assert!(!p.is_null());
                // SAFETY: `p` is a live block of `layout.size()` bytes.
                unsafe { p.write_bytes(0xAB, layout.size()) };
                p
            })
            .collect();
        for p in ptrs {
            // SAFETY: `p` is live with `layout`.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
}

/// `alloc_zeroed`s `count` blocks of `layout`, checks that every byte is zero,
/// then dirties and frees them.
fn check_zeroed(layout: Layout, count: usize, when: &str) {
    let ptrs: Vec<*mut u8> = (0..count)
        .map(|_| {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert!(!p.is_null(), "alloc_zeroed({layout:?}) returned null");
            assert_eq!(p as usize % layout.align(), 0);
            p
        })
        .collect();
    for &p in &ptrs {
        // SAFETY: `p` is a live block of `layout.size()` bytes.
        let buf = unsafe { std::slice::from_raw_parts(p, layout.size()) };
        if let Some(i) = first_nonzero(buf) {
            panic!(
                "alloc_zeroed({layout:?}) {when}: byte {i} is {:#04x}, not zero",
                buf[i]
            );
        }
    }
    for p in ptrs {
        // SAFETY: `p` is a live block of `layout.size()` bytes, then freed once.
        unsafe {
            p.write_bytes(0xAB, layout.size());
            GLOBAL.dealloc(p, layout);
        }
    }
}

fn zeroed_layouts() -> Vec<(Layout, usize)> {
    let sizes = [
        16,
        24,
        48,
        100,
        256,
        1000,
        4096,
        4097,
        10_000,
        32 * KIB,
        64 * KIB + 8,
        200_000,
        256 * KIB,
        MIB,
        MIB + 1,
        3 * MIB,
        4 * MIB,
        8 * MIB + 16,
        16 * MIB,
    ];
    let mut layouts = Vec::new();
    for align in [8usize, 64, 4096] {
        for size in sizes {
            // Several blocks per size so that recycled free lists are exercised,
            // bounded to ~8 MiB per layout.
            let count = (8 * MIB / size).clamp(1, 64);
            layouts.push((Layout::from_size_align(size, align).unwrap(), count));
        }
    }
    layouts
}

#[test]
fn alloc_zeroed_returns_zeroed_memory_after_dirty_frees() {
    for (layout, count) in zeroed_layouts() {
        dirty_and_free(layout, count, 3);
        check_zeroed(layout, count, "after dirty frees");
    }
}

#[test]
fn alloc_zeroed_returns_zeroed_memory_after_release_memory() {
    for (layout, count) in zeroed_layouts() {
        dirty_and_free(layout, count, 2);
        strata::release_memory();
        check_zeroed(layout, count, "after release_memory");
        // Dirty again, flush only the thread cache, and check once more.
        dirty_and_free(layout, count, 1);
        strata::flush_thread_cache();
        check_zeroed(layout, count, "after flush_thread_cache");
    }
}

#[test]
fn vec_grown_by_push_to_4mib_keeps_its_contents() {
    let n = 4 * MIB + 3;
    let mut v: Vec<u8> = Vec::new();
    for i in 0..n {
        v.push(pattern::byte(7, i));
    }
    assert_eq!(v.len(), n);
    pattern::check(&v, 7, "Vec<u8> grown by push");
    // Shrinking keeps the prefix.
    v.truncate(1000);
    v.shrink_to_fit();
    pattern::check(&v, 7, "Vec<u8> after shrink_to_fit");

    let mut words: Vec<u64> = Vec::new();
    for i in 0..(MIB as u64) {
        words.push(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    for (i, &w) in words.iter().enumerate() {
        assert_eq!(w, (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
}

#[test]
fn strings_built_by_appending_keep_their_contents() {
    let mut s = String::new();
    for i in 0..200_000u32 {
        s.push_str(&i.to_string());
        s.push(if i % 3 == 0 { 'é' } else { ',' });
    }
    let mut count = 0u32;
    for (i, part) in s.split([',', 'é']).filter(|p| !p.is_empty()).enumerate() {
        assert_eq!(part.parse::<u32>().unwrap(), i as u32);
        count += 1;
    }
    assert_eq!(count, 200_000);
    let upper = s.replace('é', "É");
    assert_eq!(upper.len(), s.len());
    assert!(!upper.contains('é'));
}

#[test]
fn hashmap_with_100k_entries_keeps_every_entry() {
    let mut map: HashMap<u64, String> = HashMap::new();
    for i in 0..100_000u64 {
        assert!(map.insert(i, format!("value-{i}-{}", i * 31)).is_none());
    }
    assert_eq!(map.len(), 100_000);
    for i in 0..100_000u64 {
        assert_eq!(map[&i], format!("value-{i}-{}", i * 31));
    }
    map.retain(|k, _| k % 2 == 0);
    assert_eq!(map.len(), 50_000);
    for i in 0..100_000u64 {
        assert_eq!(map.contains_key(&i), i % 2 == 0);
    }
    for i in 100_000..150_000u64 {
        map.insert(i, "x".repeat((i % 97) as usize));
    }
    for i in 100_000..150_000u64 {
        assert_eq!(map[&i].len(), (i % 97) as usize);
    }
    map.shrink_to_fit();
    assert_eq!(map.len(), 100_000);
}

#[test]
fn boxed_slices_of_many_lengths_keep_their_contents() {
    let mut boxes: Vec<Box<[u64]>> = Vec::new();
    let mut len = 1usize;
    while len <= 2 * MIB {
        let b: Box<[u64]> = (0..len as u64).map(|i| i ^ ((len as u64) << 32)).collect();
        boxes.push(b);
        len = len * 3 / 2 + 1;
    }
    for b in &boxes {
        let len = b.len() as u64;
        for (i, &x) in b.iter().enumerate() {
            assert_eq!(x, (i as u64) ^ (len << 32));
        }
    }
    let zeroed: Box<[u64]> = vec![0u64; 3 * MIB].into_boxed_slice();
    assert!(zeroed.iter().all(|&x| x == 0));
}
