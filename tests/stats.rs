#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::MIB;

// `strata::stats()`: the figures add up (the identities documented on `Stats`), per
// class sums equal the totals, counts follow what the program did, and memory that
// is freed and released shows up as such. The exact "everything freed → allocated
// is 0" check runs on a private backend (no test harness allocating beside it).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use strata::Stats;
use strata::internals::{
    Backend, CHUNK_SIZE, HEADER_PAGES, NUM_CLASSES, PAGE_SIZE, SizeClass, SysOs,
};

/// Tests compare snapshots taken before and after what they do: run them one at a
/// time so that another test's frees do not land in between.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every identity `Stats` documents, and the orderings the issue asks for.
fn check_identities(s: &Stats) {
    let class_live: u64 = s
        .classes
        .iter()
        .map(|c| c.live_objects * c.size as u64)
        .sum();
    let class_span: u64 = s.classes.iter().map(|c| c.span_bytes).sum();
    let class_thread: u64 = s
        .classes
        .iter()
        .map(|c| c.thread_cached * c.size as u64)
        .sum();
    let class_central: u64 = s
        .classes
        .iter()
        .map(|c| c.central_cached * c.size as u64)
        .sum();
    let class_free: u64 = s.classes.iter().map(|c| c.span_free_bytes()).sum();
    assert_eq!(
        s.allocated_bytes,
        class_live + s.large_bytes + s.huge_bytes,
        "{s}"
    );
    assert_eq!(
        s.active_bytes,
        class_span + s.large_bytes + s.huge_bytes,
        "{s}"
    );
    assert_eq!(s.thread_cached_bytes, class_thread, "{s}");
    assert_eq!(s.central_cached_bytes, class_central, "{s}");
    assert_eq!(s.span_free_bytes, class_free, "{s}");
    assert_eq!(
        class_span,
        class_live + class_thread + class_central + class_free,
        "{s}"
    );
    let chunk_bytes = s.chunks * CHUNK_SIZE as u64;
    let headers = s.chunks * (HEADER_PAGES * PAGE_SIZE) as u64;
    assert_eq!(
        chunk_bytes,
        headers + class_span + s.large_bytes + s.page_free_bytes,
        "{s}"
    );
    assert!(s.allocated_bytes <= s.active_bytes, "{s}");
    assert!(s.active_bytes <= s.mapped_bytes, "{s}");
    assert!(s.resident_bytes <= s.mapped_bytes, "{s}");
    assert!(s.page_purged_bytes <= s.page_free_bytes, "{s}");
    assert!(s.metadata_bytes <= s.mapped_bytes, "{s}");
    assert!(s.peak_resident_bytes >= s.resident_bytes, "{s}");
    assert!(s.peak_allocated_bytes >= s.allocated_bytes, "{s}");
    assert!(s.reallocs_in_place <= s.reallocs, "{s}");
    assert!(s.thread_heaps_live <= s.thread_heaps_created, "{s}");
    // Only the process-wide snapshot knows requested sizes (checked mode).
    assert!(s.requested_bytes.is_none() || strata::CHECKED, "{s}");
    assert!(s.requested_bytes.unwrap_or(0) <= s.allocated_bytes, "{s}");
    for (i, c) in s.classes.iter().enumerate() {
        assert_eq!(c.size as usize, SizeClass(i as u8).size_bytes());
        assert!(c.spans > 0 || c.live_objects + c.thread_cached + c.central_cached == 0);
    }
}

#[test]
fn figures_add_up_and_follow_small_allocations_and_frees() {
    let _serial = serial();
    let before = strata::stats();
    check_identities(&before);
    assert_eq!(
        before.requested_bytes.is_some(),
        strata::CHECKED,
        "{before}"
    );
    // 48-byte objects: a class of its own, exactly 48 bytes (in checked mode each
    // block also carries a canary and a trailer, which put it in a larger class).
    let blocks: Vec<Box<[u8; 48]>> = (0..20_000).map(|i| Box::new([i as u8; 48])).collect();
    let during = strata::stats();
    check_identities(&during);
    let grown = |a: &Stats, b: &Stats, n: u64| {
        let pairs = a.classes.iter().zip(b.classes.iter());
        pairs
            .map(|(x, y)| x.live_objects >= y.live_objects + n)
            .position(|g| g)
    };
    // The harness's other threads may free blocks of the class meanwhile (an exiting
    // test thread frees its output buffers after the serial lock is gone): each free
    // in between, ours or theirs, is counted in `frees` and costs at most one.
    let freed_meanwhile = during.frees - before.frees;
    assert!(freed_meanwhile < 1_000, "{before}\n{during}");
    let c48 = grown(&during, &before, 20_000 - freed_meanwhile).unwrap_or_else(|| {
        panic!(
            "no class gained 20,000 live objects less {freed_meanwhile} frees\n{before}\n{during}"
        )
    });
    assert!(during.classes[c48].allocs >= before.classes[c48].allocs + 20_000);
    if !strata::CHECKED {
        assert_eq!(during.classes[c48].size, 48, "{during}");
    }
    assert!(during.allocs >= before.allocs + 20_000);
    assert!(during.allocated_bytes >= before.allocated_bytes + 20_000 * 48);
    assert!(during.peak_allocated_bytes >= during.allocated_bytes);
    drop(black_box(blocks));
    let after = strata::stats();
    check_identities(&after);
    if !strata::CHECKED {
        // (Checked mode quarantines freed blocks before it frees them.)
        assert!(after.frees >= before.frees + 20_000);
        assert!(after.classes[c48].live_objects < during.classes[c48].live_objects - 19_000);
    }
}

#[test]
fn large_and_huge_blocks_and_reallocs_are_counted() {
    let _serial = serial();
    let before = strata::stats();
    let large = vec![1u8; 512 << 10];
    let huge = vec![2u8; 8 * MIB];
    let s = strata::stats();
    check_identities(&s);
    assert!(s.large_blocks > before.large_blocks || s.large_bytes >= 512 << 10);
    assert!(s.huge_blocks >= 1 && s.huge_bytes >= 8 * MIB as u64, "{s}");
    assert!(
        // Slack of one thread cache (2 MiB): a test thread of the harness may be
        // exiting and flushing meanwhile, see `strata::stats`.
        s.allocated_bytes + (2 * MIB) as u64
            >= before.allocated_bytes + (8 * MIB + (512 << 10)) as u64,
        "{before}\n{s}"
    );
    // A Vec growing by doubling reallocates (and moves at least once per tier).
    let mut v: Vec<u64> = Vec::with_capacity(3);
    for i in 0..100_000u64 {
        v.push(i);
    }
    let grown = strata::stats();
    check_identities(&grown);
    assert!(grown.reallocs >= before.reallocs + 10, "{grown}");
    // Shrinks that stay in their tier keep the block where it is and count as in
    // place: within a size class (40 -> 33 bytes, both in the 48-byte class) and a
    // Large block giving back its tail pages (768 KiB -> 300 KiB). Other threads of
    // the harness may realloc meanwhile, so the counters are compared with `>=`; the
    // addresses say that these two stayed put.
    let in_place = |old: usize, new: usize| {
        let layout = std::alloc::Layout::from_size_align(old, 8).unwrap();
        // SAFETY: a non-zero layout; the block is written, resized to a non-zero
        // size with the same alignment, read and freed with its new layout.
        unsafe {
            let p = std::alloc::alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(0x5a, old);
            let q = std::alloc::realloc(p, layout, new);
            assert!(!q.is_null());
            assert!(
                std::slice::from_raw_parts(q, new)
                    .iter()
                    .all(|&b| b == 0x5a)
            );
            std::alloc::dealloc(q, std::alloc::Layout::from_size_align(new, 8).unwrap());
            p == q
        }
    };
    assert!(in_place(40, 33), "a shrink within a class moved the block");
    assert!(
        in_place(768 << 10, 300 << 10),
        "a Large shrink moved the block"
    );
    let after = strata::stats();
    check_identities(&after);
    assert!(after.reallocs >= grown.reallocs + 2, "{after}");
    assert!(
        after.reallocs_in_place >= grown.reallocs_in_place + 2,
        "{grown}\n{after}"
    );
    v.truncate(6);
    v.shrink_to_fit();
    drop(black_box((large, huge, v)));
    let end = strata::stats();
    check_identities(&end);
    assert!(end.huge_bytes < after.huge_bytes, "{end}");
    assert!(end.frees >= after.frees + 2);
}

#[test]
fn cross_thread_frees_and_thread_exit_keep_the_counts() {
    let _serial = serial();
    let before = strata::stats();
    let n = 4;
    let per = 10_000;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Box<[u64; 4]>>>();
    let producers: Vec<_> = (0..n)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let v: Vec<_> = (0..per).map(|i| Box::new([t as u64, i, 0, 0])).collect();
                tx.send(v).unwrap();
            })
        })
        .collect();
    drop(tx);
    for p in producers {
        p.join().unwrap();
    }
    let consumer = thread::spawn(move || {
        let mut total = 0;
        for v in rx {
            total += v.len();
        }
        total
    });
    assert_eq!(consumer.join().unwrap(), n * per as usize);
    let after = strata::stats();
    check_identities(&after);
    assert!(after.allocs >= before.allocs + (n * per as usize) as u64);
    // Checked mode holds freed blocks in a quarantine before they are freed.
    if !strata::CHECKED {
        assert!(after.frees >= before.frees + (n * per as usize) as u64);
    }
    // Threads served by the per-CPU front end (STRATA_PERCPU=1) have no heap.
    if !common::percpu_front_serves() {
        assert!(after.thread_heaps_created >= before.thread_heaps_created.max(2));
    }
}

#[test]
fn identities_hold_while_other_threads_allocate() {
    let _serial = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let (stop, start) = (stop.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut keep: Vec<Vec<u8>> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    keep.push(vec![t as u8; 8 + (i * 37) % 3000]);
                    if keep.len() > 2000 {
                        keep.drain(..1000);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    start.wait();
    for _ in 0..200 {
        check_identities(&strata::stats());
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn display_and_json_cover_every_figure() {
    let _serial = serial();
    let s = strata::stats();
    let text = s.to_string();
    for word in [
        "allocated",
        "active",
        "resident",
        "mapped",
        "metadata",
        "thread-cached",
    ] {
        assert!(text.contains(word), "{text}");
    }
    let mut json = String::new();
    s.write_json(&mut json).unwrap();
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    assert_eq!(json.matches('{').count(), json.matches('}').count());
    assert_eq!(json.matches("\"size\":").count(), NUM_CLASSES);
    for key in [
        "allocated_bytes",
        "requested_bytes",
        "active_bytes",
        "resident_bytes",
        "mapped_bytes",
        "metadata_bytes",
        "thread_cached_bytes",
        "central_cached_bytes",
        "purged_bytes_total",
        "unmapped_bytes_total",
        "huge_cached_bytes",
        "percpu_capacity_bytes",
        "percpu_budget_bytes",
        "peak_resident_bytes",
        "peak_allocated_bytes",
        "allocs",
        "frees",
        "reallocs",
        "reallocs_in_place",
        "thread_heaps_live",
    ] {
        assert!(
            json.contains(&format!("\"{key}\":")),
            "{key} missing: {json}"
        );
    }
    assert!(json.contains(&format!("\"allocated_bytes\":{},", s.allocated_bytes)));
    assert_eq!(
        json.contains("\"requested_bytes\":null"),
        !strata::CHECKED,
        "{json}"
    );
}

/// The cheap figures against a snapshot of a quiescent heap, as `Gauges` documents:
/// resident, mapped and the peaks equal; allocated (which counts thread-cached
/// objects) within 256 KiB per live thread heap of live + thread-cached.
fn gauges_agree(g: &strata::Gauges, s: &Stats, heaps: u64) {
    assert_eq!(g.resident_bytes, s.resident_bytes, "{g:?}\n{s}");
    assert_eq!(g.mapped_bytes, s.mapped_bytes, "{g:?}\n{s}");
    assert_eq!(g.peak_resident_bytes, s.peak_resident_bytes, "{g:?}\n{s}");
    let out = s.allocated_bytes + s.thread_cached_bytes;
    assert!(
        g.allocated_bytes.abs_diff(out) <= heaps * (256 << 10),
        "allocated {} vs live + thread-cached {out}\n{s}",
        g.allocated_bytes
    );
    // Both peaks are the same high-water mark, each raised to its own current
    // figure (stats' counts cached objects exactly, not in 256 KiB steps).
    assert!(g.peak_allocated_bytes + heaps * (256 << 10) >= s.peak_allocated_bytes);
    assert!(g.peak_allocated_bytes >= g.allocated_bytes);
}

#[test]
fn gauges_agree_with_a_quiescent_snapshot_of_the_global_heap() {
    let _serial = serial();
    let small: Vec<Box<[u8; 300]>> = (0..20_000).map(|i| Box::new([i as u8; 300])).collect();
    let large = vec![3u8; 700 << 10];
    let huge = vec![4u8; 5 * MIB];
    strata::flush_thread_cache();
    // The harness's threads may allocate now and then: retry until the gauges
    // read the same before and after the snapshot.
    let (g, s) = (0..50)
        .find_map(|_| {
            let g = strata::gauges();
            let s = strata::stats();
            if strata::gauges() == g {
                return Some((g, s));
            }
            thread::sleep(std::time::Duration::from_millis(5));
            None
        })
        .expect("the heap never held still");
    gauges_agree(&g, &s, s.thread_heaps_live);
    let kept = (small.len() * 300 + large.len() + huge.len()) as u64;
    assert!(g.allocated_bytes >= kept, "{g:?}");
    assert!(g.resident_bytes >= kept && g.mapped_bytes >= g.resident_bytes);
    black_box((small, large, huge));
}

/// A private backend and heap: nothing else allocates in it, so "all freed" is exact.
#[test]
fn after_everything_is_freed_and_released_allocated_is_zero_and_resident_falls() {
    let _serial = serial();
    let be: &'static Backend<SysOs> = Box::leak(Box::new(Backend::new(SysOs)));
    let h = be.new_thread_heap();
    assert!(!h.is_null());
    // SAFETY: `h` is our live heap, used by this thread only.
    let heap = unsafe { &*h };
    let mut live = Vec::new();
    for i in 0..50_000usize {
        let c = SizeClass((i % 24) as u8);
        // SAFETY: a valid class; our heap.
        let mut p = unsafe { heap.pop(c) };
        if p.is_null() {
            // SAFETY: our live heap.
            p = unsafe { heap.alloc_slow(c, be) };
        }
        assert!(!p.is_null());
        // SAFETY: a fresh block of at least the class size.
        unsafe { p.write_bytes(0xAB, c.size_bytes()) };
        live.push((c, p));
    }
    let large = be.alloc_large(300 << 10, 8, false);
    let huge = be.alloc_huge(3 * MIB, 8, false);
    let full = be.stats();
    check_identities(&full);
    gauges_agree(&be.gauges(), &full, 1);
    let expect: u64 = live.iter().map(|(c, _)| c.size_bytes() as u64).sum();
    assert_eq!(
        full.allocated_bytes,
        expect + full.large_bytes + full.huge_bytes
    );
    assert_eq!(full.allocs, 50_002);
    assert_eq!(full.large_blocks, 1);
    assert_eq!(full.huge_blocks, 1);
    assert_eq!(full.thread_heaps_live, 1);
    for (c, p) in live.drain(..) {
        // SAFETY: each block is live and given up once.
        unsafe {
            if !heap.try_push(c, p) {
                heap.free_slow(c, p, be);
            }
        }
    }
    // SAFETY: live blocks of this backend, given up.
    unsafe {
        be.free_large(large);
        be.free_huge(huge);
    }
    // SAFETY: our live heap.
    unsafe { heap.flush_all(be) };
    be.release_shared();
    let empty = be.stats();
    check_identities(&empty);
    gauges_agree(&be.gauges(), &empty, 1);
    assert_eq!(empty.allocated_bytes, 0, "{empty}");
    assert_eq!(empty.frees, 50_002, "{empty}");
    assert_eq!(empty.thread_cached_bytes + empty.central_cached_bytes, 0);
    assert!(
        empty
            .classes
            .iter()
            .all(|c| c.live_objects == 0 && c.spans == 0)
    );
    assert!(
        empty.resident_bytes < full.resident_bytes / 4,
        "{full}\n{empty}"
    );
    assert!(empty.peak_resident_bytes >= full.resident_bytes);
    // Thread heaps publish their flow in steps of 256 KiB.
    assert!(empty.peak_allocated_bytes + (256 << 10) >= full.allocated_bytes);
    be.validate().unwrap();
    // SAFETY: the heap is flushed and not used again.
    unsafe { be.retire_thread_heap(h) };
}
