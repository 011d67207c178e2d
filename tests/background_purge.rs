#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::{MIB, rss};

// The background purge thread: memory freed and then left alone stays resident
// without it (nothing runs the purge pass), and goes back to the OS with it, free
// pages, wholly free chunks and cached huge mappings alike; idle central batches
// go back to their spans; stopping it stops the
// passes. One test in the binary, so that no other test's allocations run a purge
// pass or move the RSS meanwhile.

use std::hint::black_box;
use std::thread::sleep;
use std::time::{Duration, Instant};
use strata::{BackgroundPurge, Stats};

/// Long enough that the test thread never finds its own frees due (a pass it ran
/// would take the credit from the background thread).
const DELAY_MS: u64 = 300;
/// Large blocks (a span of pages each, below the huge threshold of 1 MiB).
const BLOCK: usize = 512 << 10;
const BLOCKS: usize = 48;
const HUGE: usize = 8 * MIB;
/// How long a slow, shared CI machine gets for what takes ~0.2 s.
const PATIENCE: Duration = Duration::from_secs(20);

/// Free bytes in the page heap not yet purged (resident, holding nothing).
fn dirty(s: &Stats) -> u64 {
    s.page_free_bytes - s.page_purged_bytes
}

/// Polls `read()` every 10 ms until `done` holds of what it returns, or `PATIENCE`
/// runs out; the last reading.
fn wait_until<T: std::fmt::Debug>(
    what: &str,
    read: impl Fn() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        let r = read();
        if done(&r) {
            return r;
        }
        assert!(start.elapsed() < PATIENCE, "{what}: still not done\n{r:?}");
        sleep(Duration::from_millis(10));
    }
}

/// Waits for a `stats()` snapshot for which `done` holds.
fn wait_for(what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    wait_until(what, strata::stats, done)
}

/// Waits for `background_purge()` to show what `done` asks (a pass bumps its
/// counters just after its effect shows in `stats()`).
fn wait_for_thread(what: &str, done: impl Fn(&BackgroundPurge) -> bool) -> BackgroundPurge {
    wait_until(what, strata::background_purge, done)
}

/// Large blocks, every page written, then freed: `BLOCKS × BLOCK` dirty free pages.
fn churn_large() {
    let blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8 | 1; BLOCK]).collect();
    for b in &blocks {
        assert!(b.iter().step_by(4096).all(|&x| x == b[0]));
    }
    drop(black_box(blocks));
}

#[test]
#[cfg_attr(
    feature = "checked",
    ignore = "checked builds hold freed blocks in the quarantine: the frees never reach the page heap"
)]
fn idle_memory_goes_back_with_the_background_thread_and_stays_without_it() {
    strata::set_purge_delay_ms(DELAY_MS);
    assert!(!strata::background_purge().running);
    let freed = (BLOCKS * BLOCK) as u64;

    // Started first (starting a thread allocates, and a page-heap free on this
    // thread would run the purge pass itself), then the churn, then idle: the
    // pages are purged and the free chunks beyond one unmapped, by the thread.
    assert!(strata::start_background_purge());
    assert!(
        strata::start_background_purge(),
        "a second start is a no-op"
    );
    let start = strata::background_purge();
    churn_large();
    let rss_freed = rss();
    let freed_stats = strata::stats();
    assert!(dirty(&freed_stats) >= freed * 3 / 4, "{freed_stats}");
    let purged = wait_for("purge of idle free pages", |s| dirty(s) < MIB as u64);
    assert!(
        purged.chunks + 4 <= freed_stats.chunks,
        "{freed_stats}\n{purged}"
    );
    let rss_purged = rss();
    assert!(
        rss_purged + (freed as usize) / 2 < rss_freed,
        "RSS {rss_freed} -> {rss_purged}"
    );
    let status = wait_for_thread("the thread's count of what it released", |t| {
        t.released_bytes >= start.released_bytes + freed * 3 / 4
    });
    assert!(status.running && status.passes > start.passes, "{status:?}");

    // Central batches nobody takes: a thread frees far more 64-byte blocks than its
    // cache holds (up to 1 MiB of them wait on the class's transfer stack) and exits.
    // The class is idle from then on, and the thread drains its batches.
    let c64 = strata::stats()
        .classes
        .iter()
        .position(|c| c.size == 64)
        .unwrap();
    std::thread::spawn(|| {
        let blocks: Vec<Box<[u8; 64]>> = (0..100_000).map(|i| Box::new([i as u8; 64])).collect();
        drop(black_box(blocks));
    })
    .join()
    .unwrap();
    wait_for_thread("drain of idle central batches", |t| {
        t.drained_bytes >= status.drained_bytes + (512 << 10)
    });
    wait_for("no 64-byte batch left in the central tier", |s| {
        s.classes[c64].central_cached == 0
    });

    // A freed huge block waits in the cache, then the thread unmaps it.
    let huge = vec![7u8; HUGE];
    assert!(huge.iter().step_by(4096).all(|&x| x == 7));
    drop(black_box(huge));
    let cached = strata::stats();
    assert!(cached.huge_cached_bytes >= HUGE as u64, "{cached}");
    wait_for("expiry of the cached huge block", |s| {
        s.huge_cached_bytes == 0
    });

    // Stopped (it exits at its next wake-up, at most a second away): freed, then
    // idle for many delays, and still resident, for nothing runs the pass.
    assert!(strata::stop_background_purge());
    assert!(!strata::background_purge().running);
    assert!(!strata::stop_background_purge(), "nothing left to stop");
    sleep(Duration::from_millis(4 * DELAY_MS));
    let passes = strata::background_purge().passes;
    churn_large();
    sleep(Duration::from_millis(6 * DELAY_MS));
    assert_eq!(strata::background_purge().passes, passes);
    let idle = strata::stats();
    assert!(
        dirty(&idle) >= freed * 3 / 4,
        "purged with no thread?\n{idle}"
    );

    // Started again, it purges them.
    assert!(strata::start_background_purge());
    wait_for("purge after a restart", |s| dirty(s) < MIB as u64);
    wait_for_thread("a pass after a restart", |t| t.passes > passes);
    strata::validate_heap().unwrap();
}
