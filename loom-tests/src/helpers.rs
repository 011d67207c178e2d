//! Running models and checking conservation at their end.

use crate::FakeOs;
use std::collections::HashSet;
use strata::internals::{
    Backend, FreeObj, NUM_CLASSES, PAGE_SIZE, SPAN_ZEROED, SizeClass, SpanKind, USABLE_PAGES,
};

/// Runs `f` under loom with the bounds from the environment. Without
/// `LOOM_MAX_PREEMPTIONS` the bound is 2 (loom's own default is unbounded, which no
/// model here finishes); without `LOOM_MAX_BRANCHES` it is 20,000, since strata's
/// locks spin with `yield_now` and every spin is a branch.
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = Some(2);
    }
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        b.max_branches = 20_000;
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    let start = std::time::Instant::now();
    b.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    // Shown with `--nocapture`: how much each model explored.
    println!(
        "loom: {} executions in {:.2?} (preemption bound {:?})",
        runs.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed(),
        b.preemption_bound
    );
}

/// The stack of a model thread started by [`spawn_big`]: loom's default (32 KiB) is
/// too small for the backend's paths in the unoptimised builds of run-mutants.sh
/// (each move of a backend-sized value is a copy there).
pub const STACK: usize = 1 << 20;

/// `f` on a loom thread with a stack of [`STACK`] bytes.
pub fn spawn_big<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> loom::thread::JoinHandle<T> {
    loom::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .expect("a loom thread")
}

/// [`model`], with `f` on a thread of its own with a stack of [`STACK`] bytes (the
/// model's first thread has loom's default).
pub fn model_big_stack<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let f = std::sync::Arc::new(f);
    model(move || {
        let f = f.clone();
        spawn_big(move || f()).join().unwrap()
    });
}

/// The objects of a chain of `count` objects starting at `head`, as addresses.
///
/// # Safety
/// `head` starts a chain of at least `count` linked free objects owned by the caller.
pub unsafe fn chain_to_vec(head: *mut FreeObj, count: usize) -> Vec<usize> {
    let mut v = Vec::with_capacity(count);
    let mut o = head;
    for _ in 0..count {
        assert!(!o.is_null(), "chain shorter than its count");
        v.push(o as usize);
        // SAFETY: per the contract `o` is a free object of the chain.
        o = unsafe { FreeObj::try_next(o) }.expect("a link that does not decode");
    }
    v
}

/// Links `objs` into a chain (first word of each) and returns its head.
///
/// # Safety
/// Every address is a free object of at least 8 bytes owned by the caller.
pub unsafe fn vec_to_chain(objs: &[usize]) -> *mut FreeObj {
    let mut head: *mut FreeObj = core::ptr::null_mut();
    for &o in objs.iter().rev() {
        let o = o as *mut FreeObj;
        // SAFETY: per the contract the object is ours (loom's link key is a constant).
        unsafe { FreeObj::set_next(o, head) };
        head = o;
    }
    head
}

/// Asserts that no address appears twice in `objs` (no object handed out twice).
pub fn assert_distinct(what: &str, objs: &[usize]) {
    let mut seen = HashSet::new();
    for &o in objs {
        assert!(seen.insert(o), "{what}: {o:#x} is held twice");
    }
}

/// Asserts that every object in `objs` is a live object of class `c` as the page
/// map sees it (its span is Small, of class `c`, and `o` is on an object boundary).
pub fn assert_objects_of_class(be: &Backend<FakeOs>, c: SizeClass, objs: &[usize]) {
    for &o in objs {
        assert_eq!(
            be.usable_size(o as *const u8),
            Some(c.size_bytes()),
            "object {o:#x} is not a class-{} object of a Small span",
            c.0
        );
    }
}

/// End-of-model conservation, once every model thread has joined and given back
/// what it held: moves every central batch back to its span, checks every
/// invariant, checks that every usable page of every chunk is free again (so every
/// object went back to its span exactly once and every span to the page heap), then
/// releases everything and checks that every chunk went back to the OS and that
/// only the metadata arena stays mapped.
pub fn assert_all_returned(be: &Backend<FakeOs>) {
    for c in 0..NUM_CLASSES {
        be.central.drain(SizeClass(c as u8), &be.page_heap);
    }
    if let Err(v) = be.validate() {
        panic!("invariant broken at the end of the model: {v}");
    }
    let st = be.page_heap.stats();
    assert_eq!(
        st.free_bytes,
        st.chunks * USABLE_PAGES * PAGE_SIZE,
        "pages missing from the page heap at the end: {st:?}"
    );
    assert_eq!(be.thread_heaps().0, 0, "a thread heap is still live");
    // Also empties the cache of freed huge mappings.
    be.release_shared();
    let os = be.page_heap.os();
    assert_eq!(be.page_heap.stats().chunks, 0, "a chunk is still mapped");
    assert_eq!(
        be.huge.totals(),
        (0, 0, 0),
        "a huge block is still registered or cached"
    );
    assert_eq!(os.live_chunks(), 0, "the OS still has a chunk mapped");
    assert_eq!(
        os.live_bytes(),
        be.meta.mapped_bytes(),
        "mapped bytes other than the metadata arena remain"
    );
}

/// Asserts "known zero" claims: every free span flagged `SPAN_ZEROED` reads as zeros.
pub fn assert_zero_claims_hold(be: &Backend<FakeOs>) {
    be.page_heap.for_each_span(|s| {
        if s.kind() == SpanKind::Free && s.flags() & SPAN_ZEROED != 0 {
            // SAFETY: a free span's pages are mapped; the page-heap lock is held by
            // for_each_span, so no one takes the span while we read.
            let bytes = unsafe { core::slice::from_raw_parts(s.base(), s.bytes()) };
            assert!(
                bytes.iter().all(|&b| b == 0),
                "free span at {:p} claims to be zero but is not",
                s.base()
            );
        }
    });
}

/// Fills `[p, p + len)` with `byte`.
///
/// # Safety
/// The range is a block the caller owns.
pub unsafe fn fill(p: usize, len: usize, byte: u8) {
    // SAFETY: per the contract.
    unsafe { core::ptr::write_bytes(p as *mut u8, byte, len) };
}

/// Whether every byte of `[p, p + len)` is `byte`.
///
/// # Safety
/// The range is mapped and nobody writes it meanwhile.
pub unsafe fn all_bytes(p: usize, len: usize, byte: u8) -> bool {
    // SAFETY: per the contract.
    unsafe { core::slice::from_raw_parts(p as *const u8, len) }
        .iter()
        .all(|&b| b == byte)
}
