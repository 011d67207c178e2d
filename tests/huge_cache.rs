#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::MIB;

// The cache of freed huge mappings (src/huge.rs, "The cache"): a freed huge block is
// kept and reused, taken whole, split (its tail cached) or grown; zeroed requests reuse it too and
// never see old bytes; old, excess and oversized mappings are unmapped; release empties it. The
// exact checks run on private backends (nothing else allocates huge blocks there).

use strata::internals::{Backend, CACHE_SLOTS, SysOs};

/// A private backend with the default 64 MiB cache (checked builds default to none).
fn backend() -> &'static Backend<SysOs> {
    let be = Box::leak(Box::new(Backend::new(SysOs)));
    be.set_huge_cache_budget(64 * MIB);
    be
}

/// (live huge blocks, their bytes, cached bytes), after checking every invariant.
fn totals(be: &Backend<SysOs>) -> (usize, usize, usize) {
    be.validate().unwrap();
    be.huge.totals()
}

/// Writes `len` bytes of `v` at `p`.
fn fill(p: *mut u8, len: usize, v: u8) {
    // SAFETY: callers pass a live block of at least `len` bytes.
    unsafe { p.write_bytes(v, len) };
}

fn all(p: *const u8, len: usize, v: u8) -> bool {
    // SAFETY: callers pass a live block of at least `len` bytes.
    unsafe { std::slice::from_raw_parts(p, len) }
        .iter()
        .all(|&b| b == v)
}

#[test]
fn a_freed_huge_block_is_reused_whole_shrunk_or_grown() {
    let be = backend();
    let p = be.alloc_huge(3 * MIB, 8, false);
    assert!(!p.is_null());
    fill(p, 3 * MIB, 0xAB);
    // SAFETY: live, given up.
    unsafe { be.free_huge(p) };
    assert_eq!(totals(be), (0, 0, 3 * MIB));
    assert_eq!(be.stats().huge_cached_bytes, 3 * MIB as u64);

    // Same size: the same mapping, its pages still there.
    let q = be.alloc_huge(3 * MIB, 8, false);
    assert_eq!(q, p);
    assert!(all(q, 3 * MIB, 0xAB), "the mapping was not kept");
    assert_eq!(totals(be), (1, 3 * MIB, 0));
    // SAFETY: live, given up.
    unsafe { be.free_huge(q) };

    // Up to a quarter smaller: taken whole (the block is 3 MiB long).
    let q = be.alloc_huge(5 * MIB / 2, 8, false);
    assert_eq!(q, p);
    assert_eq!(be.usable_size(q), Some(3 * MIB));
    // SAFETY: live, given up.
    unsafe { be.free_huge(q) };

    // Much smaller: split; the block is the head, and the tail (1.5 MiB, at least
    // the huge threshold) goes back to the cache with its pages.
    let half = MIB + MIB / 2;
    let q = be.alloc_huge(half, 8, false);
    assert_eq!(q, p);
    assert_eq!(be.usable_size(q), Some(half));
    assert_eq!(totals(be), (1, half, half));
    // The tail is taken whole by the next such request, its old bytes still there.
    let t = be.alloc_huge(half, 8, false);
    assert_eq!(t as usize, p as usize + half);
    assert!(all(t, half, 0xAB), "the tail's pages were not kept");
    assert_eq!(totals(be), (2, 3 * MIB, 0));
    // SAFETY: live, given up.
    unsafe {
        be.free_huge(q);
        be.free_huge(t);
    }

    // Larger than anything cached: built from the cached mappings, moved with their
    // pages (old bytes first), and fresh pages after them.
    let q = be.alloc_huge(6 * MIB, 8, false);
    assert!(!q.is_null());
    assert_eq!(be.usable_size(q), Some(6 * MIB));
    assert_eq!(totals(be), (1, 6 * MIB, 0));
    assert!(all(q, 3 * MIB, 0xAB), "the cached pages were not moved in");
    assert!(
        all(q.wrapping_add(3 * MIB), 3 * MIB, 0),
        "fresh pages not zero"
    );
    fill(q, 6 * MIB, 0xCD);
    // SAFETY: live, given up.
    unsafe { be.free_huge(q) };

    // Zeroed requests take cached mappings too, and get zeros: whole, built on (the
    // new pages are fresh) and split (8 MiB of the 10 go back to the cache).
    for (i, (mib, cached)) in [(6, 0), (10, 0), (2, 8 * MIB)].into_iter().enumerate() {
        let z = be.alloc_huge(mib * MIB, 8, true);
        assert!(!z.is_null());
        assert!(
            all(z, mib * MIB, 0),
            "zeroed block {i} ({mib} MiB) is not zero"
        );
        assert_eq!(
            totals(be),
            (1, mib * MIB, cached),
            "zeroed block {i} did not reuse"
        );
        fill(z, mib * MIB, 0xEE);
        // SAFETY: live, given up.
        unsafe { be.free_huge(z) };
    }

    // Release empties the cache.
    let before = be.stats();
    let cached = 8 * MIB + 2 * MIB;
    assert_eq!(before.huge_cached_bytes, cached as u64);
    assert!(be.release_shared() >= cached);
    assert_eq!(totals(be), (0, 0, 0));
    let after = be.stats();
    assert_eq!(after.mapped_bytes + cached as u64, before.mapped_bytes);
}

#[test]
fn a_block_built_from_cached_mappings_can_be_reallocated() {
    let be = backend();
    // Two 4 MiB mappings far apart (a 2 MiB block between them stays live), so
    // that the 8 MiB block built from them spans several OS mappings.
    let (a, keep, b) = (
        be.alloc_huge(4 * MIB, 8, false),
        be.alloc_huge(2 * MIB, 8, false),
        be.alloc_huge(4 * MIB, 8, false),
    );
    fill(a, 4 * MIB, 1);
    fill(b, 4 * MIB, 2);
    // SAFETY: live, given up.
    unsafe {
        be.free_huge(a);
        be.free_huge(b);
    }
    let mut q = be.alloc_huge(9 * MIB, 8, false);
    assert_eq!(totals(be), (2, 11 * MIB, 0), "not built from both");
    assert!(all(q, 4 * MIB, 2) && all(q.wrapping_add(4 * MIB), 4 * MIB, 1));
    fill(q, 9 * MIB, 3);
    // Grown and shrunk: by mremap where the OS allows, else moved to a new block.
    for mib in [20, 12, 5] {
        // SAFETY: `q` is a live huge block of this backend.
        let r = unsafe { be.realloc_huge(q, mib * MIB) };
        assert!(!r.is_null(), "realloc to {mib} MiB failed");
        assert!(all(r, 5 * MIB, 3), "realloc to {mib} MiB lost the contents");
        assert_eq!(be.usable_size(r), Some(mib * MIB));
        q = r;
    }
    // SAFETY: live, given up.
    unsafe {
        be.free_huge(q);
        be.free_huge(keep);
    }
    totals(be);
}

#[test]
fn the_cache_keeps_to_its_budget_its_slots_and_its_largest_block() {
    let be = backend();
    let free = |p: *mut u8| {
        // SAFETY: live blocks of this backend, given up once.
        unsafe { be.free_huge(p) }
    };
    // One 1 MiB block more than the slots: the oldest one unmapped.
    let blocks: Vec<*mut u8> = (0..=CACHE_SLOTS)
        .map(|_| be.alloc_huge(MIB, 8, false))
        .collect();
    blocks.iter().copied().for_each(free);
    assert_eq!(totals(be), (0, 0, CACHE_SLOTS * MIB));

    // A 20 MiB block pushes out the oldest until it fits the 64 MiB budget...
    let big: Vec<*mut u8> = (0..3).map(|_| be.alloc_huge(20 * MIB, 8, false)).collect();
    big.iter().copied().for_each(free);
    let (_, _, cached) = totals(be);
    assert!((60 * MIB..=64 * MIB).contains(&cached), "{cached}");

    // ...and one above 32 MiB is never kept.
    be.release_shared();
    free(be.alloc_huge(40 * MIB, 8, false));
    assert_eq!(totals(be), (0, 0, 0));

    // A budget of 0 turns the cache off.
    be.set_huge_cache_budget(0);
    free(be.alloc_huge(2 * MIB, 8, false));
    assert_eq!(totals(be), (0, 0, 0));
}

#[test]
fn cached_mappings_expire_after_the_purge_delay() {
    let be = backend();
    be.page_heap.set_purge_delay_ms(5);
    let a = be.alloc_huge(2 * MIB, 8, false);
    let b = be.alloc_huge(3 * MIB, 8, false);
    // SAFETY: live, given up.
    unsafe { be.free_huge(a) };
    assert_eq!(totals(be), (1, 3 * MIB, 2 * MIB));
    std::thread::sleep(std::time::Duration::from_millis(50));
    // The next huge operation unmaps what waited longer than the delay.
    // SAFETY: live, given up.
    unsafe { be.free_huge(b) };
    assert_eq!(totals(be), (0, 0, 3 * MIB));
}

/// Through the global allocator: a dirty huge block, freed, must not come back as
/// the memory of a zeroed allocation (`calloc`, `vec![0; n]`), and reuse keeps
/// contents intact through realloc.
#[test]
fn zeroed_huge_allocations_after_dirty_frees_are_zero() {
    for round in 0..4 {
        let dirty = vec![0xEEu8; 8 * MIB + round * 4096];
        drop(std::hint::black_box(dirty));
        let zero = vec![0u8; 8 * MIB + round * 4096];
        assert!(zero.iter().all(|&b| b == 0), "round {round}");
        let mut v = vec![round as u8; 5 * MIB];
        v.resize(12 * MIB, 7);
        assert!(v[..5 * MIB].iter().all(|&b| b == round as u8));
        assert!(v[5 * MIB..].iter().all(|&b| b == 7));
    }
    strata::validate_heap().unwrap();
}

#[test]
fn threads_building_blocks_from_the_cache_keep_every_block_intact() {
    let be = backend();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15 ^ (t + 1);
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let mut live: Vec<(usize, usize, u8)> = Vec::new();
                for i in 0..200 {
                    let len = MIB + (next() as usize % (7 * MIB));
                    let tag = (t as u8) << 5 | (i % 31) as u8;
                    let p = be.alloc_huge(len, 8, i % 3 == 0);
                    assert!(!p.is_null());
                    fill(p, len, tag);
                    live.push((p as usize, len, tag));
                    if live.len() > 4 {
                        let (q, qlen, qtag) = live.swap_remove(next() as usize % live.len());
                        assert!(all(q as *const u8, qlen, qtag), "thread {t}: block changed");
                        if i % 5 == 0 {
                            let nlen = qlen + MIB;
                            // SAFETY: a live huge block of this backend.
                            let r = unsafe { be.realloc_huge(q as *mut u8, nlen) };
                            assert!(!r.is_null());
                            assert!(all(r, qlen, qtag), "thread {t}: realloc lost bytes");
                            // SAFETY: live, given up.
                            unsafe { be.free_huge(r) };
                        } else {
                            // SAFETY: live, given up.
                            unsafe { be.free_huge(q as *mut u8) };
                        }
                    }
                }
                for (q, qlen, qtag) in live {
                    assert!(all(q as *const u8, qlen, qtag), "thread {t}: block changed");
                    // SAFETY: live, given up.
                    unsafe { be.free_huge(q as *mut u8) };
                }
            });
        }
    });
    let (count, bytes, _) = totals(be);
    assert_eq!((count, bytes), (0, 0));
}

/// The OS mappings (`/proc/self/maps` lines) that overlap `[p, p+len)`.
fn os_mappings_in(p: usize, len: usize) -> u32 {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .filter(|&(a, b)| a < p + len && p < b)
        .count() as u32
}

/// Blocks built from cached mappings, split and built again (malloc-large's pattern:
/// each new block allocated before the old one is freed) keep an account of the OS
/// mappings they span that is never below what the kernel shows, and stays close to
/// it: counting only their number let both parts of every split keep the whole
/// count, which reached the 64 a block may span within a few hundred replacements
/// and then stopped every build.
#[test]
fn built_blocks_count_the_os_mappings_they_really_span() {
    let be = backend();
    be.set_huge_cache_budget(16 * MIB);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let page = strata::internals::page_size();
    let mut slots = [(0usize, 0usize); 8];
    for i in 0..300 {
        let len = (MIB + next() as usize % (6 * MIB)).next_multiple_of(page);
        let p = be.alloc_huge(len, 8, false);
        assert!(!p.is_null());
        fill(p, len, i as u8);
        let k = next() as usize % slots.len();
        let (q, _) = std::mem::replace(&mut slots[k], (p as usize, len));
        if q != 0 {
            // SAFETY: live, given up.
            unsafe { be.free_huge(q as *mut u8) };
        }
    }
    totals(be);
    let (mut recorded, mut real) = (0, 0);
    for &(p, _) in &slots {
        let len = be.usable_size(p as *mut u8).unwrap();
        let (r, k) = (
            be.huge.vmas_of(p as *const u8).unwrap(),
            os_mappings_in(p, len),
        );
        assert!(
            r >= k,
            "a block of {len} bytes counted {r} OS mappings, spans {k}"
        );
        (recorded, real) = (recorded + r, real + k);
    }
    assert!(real > slots.len() as u32, "no block was built from pieces");
    assert!(
        recorded <= 2 * real,
        "{recorded} OS mappings counted for {real} in the blocks"
    );
    for &(p, _) in &slots {
        // SAFETY: live, given up.
        unsafe { be.free_huge(p as *mut u8) };
    }
}

/// A block built from cached mappings starts with the one that has the most bytes
/// per OS mapping, not the longest: `mremap` moves a range one OS mapping at a time.
#[test]
fn blocks_are_built_first_from_the_mappings_with_the_most_bytes_per_os_mapping() {
    let be = backend();
    let free = |p: *mut u8| {
        // SAFETY: live blocks of this backend, given up once.
        unsafe { be.free_huge(p) }
    };
    // An 8 MiB block of two OS mappings, built from two 4 MiB ones kept apart.
    let (a, gap1, b, gap2) = (
        be.alloc_huge(4 * MIB, 8, false),
        be.alloc_huge(2 * MIB, 8, false),
        be.alloc_huge(4 * MIB, 8, false),
        be.alloc_huge(2 * MIB, 8, false),
    );
    free(a);
    free(b);
    let x = be.alloc_huge(8 * MIB, 8, false);
    assert_eq!(be.huge.vmas_of(x), Some(2));
    fill(x, 8 * MIB, 3);
    // And a 6 MiB one of one OS mapping.
    let c = be.alloc_huge(6 * MIB, 8, false);
    assert_eq!(be.huge.vmas_of(c), Some(1));
    fill(c, 6 * MIB, 4);
    free(x);
    free(c);
    assert_eq!(totals(be), (2, 4 * MIB, 14 * MIB));
    // Neither fits 13 MiB: the 6 MiB mapping (6 MiB per OS mapping) goes first,
    // then 7 MiB of the 8 MiB one (4 MiB per OS mapping).
    let q = be.alloc_huge(13 * MIB, 8, false);
    assert!(all(q, 6 * MIB, 4) && all(q.wrapping_add(6 * MIB), 7 * MIB, 3));
    assert_eq!(be.huge.vmas_of(q), Some(3));
    free(q);
    free(gap1);
    free(gap2);
    totals(be);
}
