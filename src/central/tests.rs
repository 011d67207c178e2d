//! Unit tests of `carve`: a span's detached free list cut to a batch and the rest
//! given back, alone and with another thread returning objects meanwhile; and of
//! array batches (the per-CPU front end's) through the transfer stack, and of the
//! carve straight into an array.

use super::*;
use crate::backend::Backend;
use crate::os::SysOs;
use crate::size_class::class_for;
use std::collections::HashSet;
use std::sync::Arc;

fn class() -> SizeClass {
    let c = class_for(32, 8).expect("a small class");
    assert!(
        c.objects_per_span() > 2 * c.batch(),
        "a span must hold several batches"
    );
    c
}

fn refill(b: &Backend<SysOs>, c: SizeClass) -> Vec<usize> {
    objects(b.central.refill(c, &b.page_heap), c)
}

/// The objects of a batch of class `c` from a refill or carve, in chain order;
/// checks that the chain ends after `count` of them.
fn objects(batch: Batch, c: SizeClass) -> Vec<usize> {
    let mut v = Vec::with_capacity(batch.count);
    let mut o = batch.head;
    for _ in 0..batch.count {
        v.push(o as usize);
        // SAFETY: the refill or carve gave us a chain of `batch.count` objects.
        o = unsafe { FreeObj::next(o, c) };
    }
    assert!(o.is_null(), "the chain ends after `count` objects");
    v
}

fn give_back(b: &Backend<SysOs>, c: SizeClass, objs: &[usize]) {
    for &o in objs {
        // SAFETY: a class-c object we own and give up.
        unsafe { b.free_small_direct(c, o as *mut u8) };
    }
}

#[test]
fn a_long_free_list_is_cut_to_a_batch_and_the_rest_stays_with_its_span() {
    let b: Backend<SysOs> = Backend::new(SysOs);
    let c = class();
    let mut held = Vec::new();
    while held.len() < 2 * c.objects_per_span() {
        held.extend(refill(&b, c));
    }
    // Everything back to the spans but one object each of the first and last
    // batch: the spans keep long free lists and stay live.
    let (keep_a, keep_b) = (held[0], held[held.len() - 1]);
    give_back(&b, c, &held[1..held.len() - 1]);
    b.validate().unwrap();
    let mut seen = HashSet::from([keep_a, keep_b]);
    let mut got = Vec::new();
    for _ in 0..3 {
        let batch = refill(&b, c);
        assert_eq!(batch.len(), c.batch());
        for &o in &batch {
            assert!(seen.insert(o), "object {o:#x} handed out twice");
        }
        got.extend(batch);
        b.validate().unwrap();
    }
    give_back(&b, c, &got);
    give_back(&b, c, &[keep_a, keep_b]);
    b.validate().unwrap();
}

#[test]
fn carving_while_another_thread_returns_objects_keeps_every_span_consistent() {
    let b: Arc<Backend<SysOs>> = Arc::new(Backend::new(SysOs));
    let c = class();
    let workers: Vec<_> = (0..2usize)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut kept: Vec<usize> = Vec::new();
                for i in 0..2000usize {
                    let batch = refill(&b, c);
                    assert!(!batch.is_empty());
                    // Keep a few for a while (spans stay live with long free lists),
                    // give the rest back at once.
                    let k = (i * 7 + t) % batch.len();
                    kept.extend_from_slice(&batch[..k.min(3)]);
                    give_back(&b, c, &batch[k.min(3)..]);
                    if kept.len() > 200 {
                        give_back(&b, c, &kept);
                        kept.clear();
                    }
                }
                give_back(&b, c, &kept);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    b.validate().unwrap();
}

/// A carve of `want` from a span whose free list holds `m` objects (and whose tail
/// is not carved yet): the batch counts what it links, its objects are distinct,
/// lie in the span and are none of those still held, and the span's books balance
/// once everything is back. `m` below, at and a little and much above `want`.
#[test]
fn a_carve_takes_a_whole_free_list_or_cuts_it_and_the_batch_is_right() {
    let c = class();
    let batch = c.batch();
    let want = batch / 2;
    for (m, w) in [
        (want - 4, want),
        (want, want),
        (want + want / 4, want),
        (want + want / 4 + 1, want),
        (want * 3 / 2, want),
        (batch + 2, batch),
        (batch, batch),
    ] {
        let b: Backend<SysOs> = Backend::new(SysOs);
        // m + 1 objects carved from a fresh span; m back onto its free list, one
        // kept so that the span stays live.
        let objs = objects(b.central.carve(c, &b.page_heap, m + 1), c);
        assert_eq!(objs.len(), m + 1);
        let kept = objs[0];
        give_back(&b, c, &objs[1..]);
        b.validate().unwrap();
        // SAFETY: `kept` is a live object of ours: its chunk and span are live.
        let span = unsafe { &*(*ChunkHeader::of(kept as *const u8)).span_of(kept as *const u8) };
        let (lo, hi) = (
            span.base() as usize,
            span.base() as usize + span.capacity() as usize * c.size_bytes(),
        );
        let got = objects(b.central.carve(c, &b.page_heap, w), c);
        let expect = if m <= w {
            w
        } else if m <= batch && m - w <= w / 4 {
            m
        } else {
            w
        };
        assert_eq!(got.len(), expect, "list of {m}, want {w}");
        let mut seen = HashSet::from([kept]);
        for a in got {
            assert!(a >= lo && a < hi, "{a:#x} outside the span");
            assert_eq!((a - lo) % c.size_bytes(), 0, "{a:#x} not an object start");
            assert!(seen.insert(a), "{a:#x} twice (list of {m}, want {w})");
        }
        b.validate().unwrap();
        let mut back: Vec<usize> = seen.into_iter().collect();
        back.sort_unstable();
        give_back(&b, c, &back);
        b.validate().unwrap();
    }
}

/// The first words of `objs` (the free mark each carries).
fn first_words(objs: &[*mut u8]) -> Vec<usize> {
    // SAFETY: free class objects of ours, at least a word each.
    objs.iter()
        .map(|&o| unsafe { *o.cast::<usize>() })
        .collect()
}

#[test]
fn array_batches_cross_the_transfer_stack_untouched_and_reach_thread_caches_linked() {
    let b: Backend<SysOs> = Backend::new(SysOs);
    let c = class();
    let mut out = [ptr::null_mut::<u8>(); DESC_SLOTS];
    // A carve, as an array: every object marked.
    let n = b.central.refill_array(c, &b.page_heap, &mut out);
    assert_eq!(n, c.batch());
    let objs = out[..n].to_vec();
    let key = crate::link::LinkKey::current();
    for &o in &objs {
        // SAFETY: a free object of ours.
        let marked = unsafe { FreeObj::looks_free(o.cast(), key) };
        assert!(
            !crate::link::HARDENED || marked,
            "an object of an array batch without the free mark"
        );
    }
    let marks = first_words(&objs);
    // A full batch goes on the stack as an array; a per-CPU refill gets it back
    // with every object as it was.
    // SAFETY: the batch's objects, ours, marked, unused.
    unsafe { b.central.flush_array(c, &objs, &b.page_heap, &b.meta) };
    assert_eq!(b.central.stacked_batches(c), Some(1));
    let mut again = [ptr::null_mut::<u8>(); DESC_SLOTS];
    let m = b.central.refill_array(c, &b.page_heap, &mut again);
    assert_eq!(&again[..m], &objs[..]);
    assert_eq!(first_words(&objs), marks, "an array refill wrote an object");
    // Back as an array; a thread cache's refill gets the same objects linked.
    // SAFETY: as above.
    unsafe { b.central.flush_array(c, &objs, &b.page_heap, &b.meta) };
    let mut chain = refill(&b, c);
    let mut want: Vec<usize> = objs.iter().map(|&o| o as usize).collect();
    chain.sort_unstable();
    want.sort_unstable();
    assert_eq!(chain, want);
    // An array batch drained to the spans, and a partial one flushed straight
    // there, leave every span consistent.
    for &o in &objs {
        // SAFETY: ours again (the refill above), unused: the mark replaces the link.
        unsafe { FreeObj::set_next(o.cast(), ptr::null_mut()) };
    }
    // SAFETY: ours, marked, unused.
    unsafe { b.central.flush_array(c, &objs, &b.page_heap, &b.meta) };
    assert_eq!(b.central.drain(c, &b.page_heap), c.batch());
    b.validate().unwrap();
    let n = b.central.refill_array(c, &b.page_heap, &mut out);
    // SAFETY: as above; fewer than a batch goes to the spans.
    unsafe {
        b.central
            .flush_array(c, &out[..n - 1], &b.page_heap, &b.meta)
    };
    assert_eq!(b.central.stacked_batches(c), Some(0));
    give_back(&b, c, &[out[n - 1] as usize]);
    b.validate().unwrap();
}

#[test]
fn an_array_carve_cuts_a_long_free_list_marks_each_object_and_gives_the_rest_back() {
    let b: Backend<SysOs> = Backend::new(SysOs);
    let c = class();
    let key = crate::link::LinkKey::current();
    let mut out = [ptr::null_mut::<u8>(); DESC_SLOTS];
    // Fresh runs, carved straight into arrays, over more than one span.
    let mut held = Vec::new();
    while held.len() < 2 * c.objects_per_span() {
        let n = b.central.refill_array(c, &b.page_heap, &mut out);
        assert_eq!(n, c.batch());
        held.extend(out[..n].iter().map(|&o| o as usize));
    }
    b.validate().unwrap();
    // Back to the spans but one object each of the first and last batch: long
    // free lists, which the next carves cut, giving the rest back.
    let (keep_a, keep_b) = (held[0], held[held.len() - 1]);
    give_back(&b, c, &held[1..held.len() - 1]);
    b.validate().unwrap();
    let mut seen = HashSet::from([keep_a, keep_b]);
    for _ in 0..3 {
        let n = b.central.refill_array(c, &b.page_heap, &mut out);
        assert_eq!(n, c.batch());
        for &o in &out[..n] {
            assert!(seen.insert(o as usize), "object {o:?} handed out twice");
            // SAFETY: a free object of ours.
            let marked = unsafe { FreeObj::looks_free(o.cast(), key) };
            assert!(
                !crate::link::HARDENED || marked,
                "a carved object without the free mark"
            );
        }
        b.validate().unwrap();
    }
    let mut back: Vec<usize> = seen.into_iter().collect();
    back.sort_unstable();
    give_back(&b, c, &back);
    b.validate().unwrap();
}

/// A carve within a thread cache's room takes a span's free list whole when the
/// batch fits the room, however much longer than the batch, and cuts it to `want`
/// when it does not; either way the span's books balance.
#[test]
fn a_carve_within_room_takes_a_long_free_list_whole() {
    let c = class();
    let batch = c.batch();
    let m = 3 * batch;
    assert!(m < c.objects_per_span(), "the list fits one span");
    for (room, expect) in [(m, m), (m + 5, m), (m - 1, batch / 2), (0, batch / 2)] {
        let b: Backend<SysOs> = Backend::new(SysOs);
        // m + 1 objects from a fresh span, m back onto its free list.
        let objs = objects(b.central.carve_within(c, &b.page_heap, m + 1, m + 1), c);
        assert_eq!(objs.len(), m + 1);
        let kept = objs[0];
        give_back(&b, c, &objs[1..]);
        b.validate().unwrap();
        let got = objects(b.central.carve_within(c, &b.page_heap, batch / 2, room), c);
        assert_eq!(got.len(), expect, "room {room}");
        let mut seen = HashSet::from([kept]);
        for o in got {
            assert!(seen.insert(o), "{o:#x} twice (room {room})");
        }
        b.validate().unwrap();
        let back: Vec<usize> = seen.into_iter().collect();
        give_back(&b, c, &back);
        b.validate().unwrap();
    }
}

#[test]
fn a_whole_free_list_is_handed_out_in_address_order_whatever_order_it_was_freed_in() {
    let c = class();
    let m = 3 * c.batch();
    assert!(m < c.objects_per_span(), "the list fits one span");
    let b: Backend<SysOs> = Backend::new(SysOs);
    let mut objs = objects(b.central.carve_within(c, &b.page_heap, m + 1, m + 1), c);
    assert_eq!(objs.len(), m + 1);
    // Keep one (the span stays), free the rest in a scrambled order, so that the
    // span's free list is in no address order.
    let kept = objs.remove(0);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..objs.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        objs.swap(i, (x % (i as u64 + 1)) as usize);
    }
    give_back(&b, c, &objs);
    let order = objects(b.central.carve_within(c, &b.page_heap, c.batch(), m), c);
    assert_eq!(order.len(), m, "the whole list");
    let mut sorted = objs.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "the objects freed, lowest address first");
    b.validate().unwrap();
    give_back(&b, c, &order);
    give_back(&b, c, &[kept]);
    b.validate().unwrap();
}

#[test]
fn an_array_carve_hands_a_whole_free_list_out_in_address_order_marked() {
    let c = class();
    let m = c.batch() / 2;
    let b: Backend<SysOs> = Backend::new(SysOs);
    let mut objs = objects(b.central.carve_within(c, &b.page_heap, m + 1, m + 1), c);
    let kept = objs.remove(0);
    objs.reverse();
    objs.swap(0, m / 2);
    give_back(&b, c, &objs);
    let mut out = [ptr::null_mut::<u8>(); DESC_SLOTS];
    let n = b.central.refill_array(c, &b.page_heap, &mut out);
    assert_eq!(n, c.batch(), "the whole list of {m}, then a run");
    let got: Vec<usize> = out[..m].iter().map(|&o| o as usize).collect();
    let mut sorted = objs.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "the list's objects, lowest address first");
    let key = crate::link::LinkKey::current();
    for &o in &out[..n] {
        // SAFETY: a free object of ours.
        let marked = unsafe { FreeObj::looks_free(o.cast(), key) };
        assert!(
            !crate::link::HARDENED || marked,
            "an object without the free mark"
        );
    }
    b.validate().unwrap();
    let back: Vec<usize> = out[..n].iter().map(|&o| o as usize).collect();
    give_back(&b, c, &back);
    give_back(&b, c, &[kept]);
    b.validate().unwrap();
}

/// A span's free list whose links were overwritten (here: an object linked to
/// itself, or to an object of another span) stops the carve that relinks it, with a
/// report naming the span and the object, before a chain with a cycle or a foreign
/// object reaches a thread cache.
#[test]
fn a_span_list_with_a_cycle_or_a_foreign_object_stops_the_process() {
    const NAME: &str =
        "central::tests::a_span_list_with_a_cycle_or_a_foreign_object_stops_the_process";
    const ENV: &str = "STRATA_TEST_BAD_SPAN_LIST";
    if let Ok(how) = std::env::var(ENV) {
        let c = class();
        let b: Backend<SysOs> = Backend::new(SysOs);
        // Two spans' worth: the last object lies in another span than the first.
        let mut objs = Vec::new();
        while objs.len() < c.objects_per_span() + 1 {
            objs.extend(refill(&b, c));
        }
        let other = *objs.last().unwrap();
        let (kept, freed) = (objs[0], &objs[1..4]);
        give_back(&b, c, freed);
        // The list is freed[2] -> freed[1] -> freed[0]; overwrite its head's link.
        let head = freed[2] as *mut FreeObj;
        let to = if how == "cycle" {
            head
        } else {
            other as *mut FreeObj
        };
        // SAFETY: a free object of ours; the deed the test is about.
        unsafe { FreeObj::set_next(head, to) };
        let got = b.central.carve_within(c, &b.page_heap, c.batch(), 64);
        eprintln!("not stopped: {} objects, kept {kept:#x}", got.count);
        std::process::exit(0);
    }
    for how in ["cycle", "foreign"] {
        let (aborted, stderr) = crate::test_child::run(NAME, ENV, how);
        assert!(aborted, "{how}: not stopped:\n{stderr}");
        assert!(
            stderr.contains("free-list corruption: the free list of the span at 0x"),
            "{how}: {stderr}"
        );
    }
}
