#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::{KIB, MIB, Rng, mib, pattern, rss};

// After 512 MiB of small objects, allocated on 4 threads and freed on other
// threads, `strata::release_memory()` must give (almost) all of it back to the
// OS; and what it says it gave back must be what the resident bytes fell by. The
// tests of this binary run one at a time (SERIAL) so that nothing else in the
// process perturbs the RSS measurements.

use std::alloc::{GlobalAlloc, Layout};
use std::panic;
use std::sync::{Barrier, Mutex, MutexGuard};
use std::thread;

static SERIAL: Mutex<()> = Mutex::new(());

/// Keeps the background purge thread from starting (it would on its own once the
/// heap maps 64 MiB, which these tests do): its passes purge and drain while a
/// test measures, and `release_memory` is exact only when nothing else changes
/// the resident bytes meanwhile.
fn no_background_purge() {
    strata::stop_background_purge();
}

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const THREADS: usize = 4;
const BYTES_PER_THREAD: usize = 512 * MIB / THREADS;

impl Rng {
    /// Small object size in 16..=1024.
    fn small_size(&mut self) -> usize {
        16 + (self.next() % 1009) as usize
    }
}

fn block_seed(thread: usize, index: usize) -> u64 {
    pattern::word(thread as u64, index as u64)
}

/// Allocates small blocks totalling `BYTES_PER_THREAD` with sizes drawn from
/// `Rng::new(thread)`, writing every byte. Returns the addresses.
fn allocate(thread: usize) -> Vec<usize> {
    let mut rng = Rng::new(thread as u64);
    let mut ptrs = Vec::new();
    let mut total = 0;
    while total < BYTES_PER_THREAD {
        let size = rng.small_size();
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null(), "alloc({layout:?}) returned null");
        // SAFETY: `p` is a live block of `size` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(p, size) };
        pattern::fill(buf, block_seed(thread, ptrs.len()));
        ptrs.push(p as usize);
        total += size;
    }
    ptrs
}

/// Verifies and frees the blocks `allocate(thread)` returned, replaying the
/// same size sequence.
fn free_all(thread: usize, ptrs: Vec<usize>) {
    let mut rng = Rng::new(thread as u64);
    for (i, p) in ptrs.into_iter().enumerate() {
        let size = rng.small_size();
        let p = p as *mut u8;
        // SAFETY: `p` is a live block of `size` bytes allocated by `allocate`.
        let buf = unsafe { std::slice::from_raw_parts(p, size) };
        pattern::check(buf, block_seed(thread, i), "small block freed cross-thread");
        // SAFETY: `p` was allocated with this layout and is freed once.
        unsafe { GLOBAL.dealloc(p, Layout::from_size_align(size, 8).unwrap()) };
    }
}

#[test]
fn release_memory_returns_freed_small_objects_to_the_os() {
    let _serial = serial();
    no_background_purge();
    let before = rss();
    let lists: Mutex<Vec<Option<Vec<usize>>>> = Mutex::new(vec![None; THREADS]);
    let allocated = Barrier::new(THREADS + 1);
    let measured = Barrier::new(THREADS + 1);
    let live = thread::scope(|s| {
        for t in 0..THREADS {
            let (lists, allocated, measured) = (&lists, &allocated, &measured);
            s.spawn(move || {
                // A panic must not leave the other threads stuck at the barriers.
                let result = panic::catch_unwind(|| allocate(t));
                let failed = result.is_err();
                if let Ok(ptrs) = result {
                    lists.lock().unwrap()[t] = Some(ptrs);
                }
                allocated.wait();
                measured.wait();
                assert!(!failed, "thread {t} failed while allocating");
                // Free what the next thread allocated.
                let victim = (t + 1) % THREADS;
                let ptrs = lists.lock().unwrap()[victim].take();
                let ptrs = ptrs.unwrap_or_else(|| panic!("thread {victim} has no blocks"));
                free_all(victim, ptrs);
                // Back to the central tier now: the thread-exit flush runs after the
                // scope has seen this closure return (thread-local destructors run
                // after it), so it could land after `release_memory` below, or
                // during the next test, with up to this cache's budget and what
                // it borrowed from the pool (several MiB).
                strata::flush_thread_cache();
            });
        }
        allocated.wait();
        let live = rss();
        measured.wait();
        live
    });
    strata::release_memory();
    let after = rss();

    let grown = live as isize - before as isize;
    let dropped = live as isize - after as isize;
    eprintln!(
        "RSS before: {:.1} MiB, with 512 MiB live: {:.1} MiB (+{:.1} MiB), \
         after free + release_memory: {:.1} MiB (-{:.1} MiB, {:.1}% of growth)",
        mib(before as isize),
        mib(live as isize),
        mib(grown),
        mib(after as isize),
        mib(dropped),
        100.0 * dropped as f64 / grown as f64
    );
    assert!(
        grown >= 400 * MIB as isize,
        "allocating 512 MiB only grew RSS by {:.1} MiB",
        mib(grown)
    );
    assert!(
        dropped as f64 >= 0.9 * grown as f64,
        "release_memory gave back only {:.1} of {:.1} MiB",
        mib(dropped),
        mib(grown)
    );
}

/// Allocates about 64 MiB of small, Large and huge blocks, writing every byte,
/// and frees them all.
fn allocate_and_free_mixed(seed: u64) {
    let mut rng = Rng::new(seed);
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(100_000);
    let mut fill = |lo: usize, spread: usize, total: usize| {
        let mut sum = 0;
        while sum < total {
            let size = lo + rng.below(spread);
            blocks.push(vec![0xA5; size]);
            sum += size;
        }
    };
    fill(16, 1009, 24 * MIB); // small objects
    fill(16 * KIB, 1008 * KIB, 24 * MIB); // Large blocks (whole pages, up to 1 MiB)
    fill(2 * MIB, 3 * MIB, 16 * MIB); // huge blocks (own mappings, kept in the cache)
    drop(blocks);
}

#[test]
fn release_memory_returns_what_the_resident_bytes_fell_by() {
    let _serial = serial();
    no_background_purge();
    // With the default delay the freed pages wait for release_memory; with none,
    // the frees that its flush and drain cause purge and unmap on their own (what
    // the count used to miss).
    for (delay, seed) in [(strata::internals::DEFAULT_PURGE_DELAY_MS, 1), (0, 2)] {
        strata::release_memory();
        strata::set_purge_delay_ms(delay);
        allocate_and_free_mixed(seed);
        let (s0, rss0) = (strata::stats(), rss());
        let given = strata::release_memory() as u64;
        let (s1, rss1) = (strata::stats(), rss());
        strata::set_purge_delay_ms(strata::internals::DEFAULT_PURGE_DELAY_MS);
        // release_memory() counts the page heap's resident bytes, not the metadata
        // arena's (never returned); the flush it does can take new batch
        // descriptors from the arena (272 bytes each, thousands for a cache of a
        // few MiB), which the stats' resident bytes include.
        let arena = |s: &strata::Stats| {
            let headers =
                s.chunks * (strata::internals::HEADER_PAGES * strata::internals::PAGE_SIZE) as u64;
            s.metadata_bytes - headers
        };
        let heap_resident = |s: &strata::Stats| s.resident_bytes - arena(s);
        let fell = heap_resident(&s0).saturating_sub(heap_resident(&s1));
        let rss_fell = rss0.saturating_sub(rss1) as u64;
        eprintln!(
            "purge delay {delay} ms: release_memory() = {:.2} MiB; resident_bytes fell \
             {:.2} MiB less the metadata's growth, RSS fell {:.2} MiB",
            mib(given as isize),
            mib(fell as isize),
            mib(rss_fell as isize)
        );
        // The test harness's threads may allocate or free a little meanwhile.
        assert!(
            given.abs_diff(fell) <= 256 * KIB as u64,
            "release_memory() said {given} bytes, resident_bytes fell {fell}"
        );
        // RSS may fall by less (pages never touched count as resident until
        // purged), not by more: allow for the harness and the kernel's own pages.
        // Where OS pages are larger than the page heap's (16/64 KiB kernels, or
        // STRATA_TEST_PAGE_SIZE), a free span that is not whole OS pages has its
        // whole ones purged but stays counted resident (an upper bound), so RSS
        // may fall by more than the count says.
        if strata::internals::page_size() <= strata::internals::PAGE_SIZE {
            assert!(
                given + 2 * MIB as u64 >= rss_fell,
                "release_memory() said {given} bytes, RSS fell {rss_fell}"
            );
        }
        if delay > 0 {
            // The cached huge mappings alone are 16 MiB.
            assert!(given >= 8 * MIB as u64, "release_memory() said {given}");
        }
    }
}
