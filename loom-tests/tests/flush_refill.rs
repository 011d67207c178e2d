//! Flush racing refill in one size class: one thread hands objects back to the
//! central tier (a whole batch onto the transfer stack, as a chain or as an array,
//! or single objects back to their spans under the class lock) while another refills the same class (popping
//! a batch, or carving objects from the class's spans).
//!
//! Property: every object is accounted for exactly once. What the refilling thread
//! gets are live objects of the class (by the page map), none of them still held by
//! anyone else; at the end, once everything is returned, every page is back in the
//! page heap and every chunk back to the OS.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    FakeOs, assert_all_returned, assert_distinct, assert_objects_of_class, chain_to_vec, model,
    vec_to_chain,
};
use strata::internals::{Backend, DESC_SLOTS, SizeClass};

const C: SizeClass = SizeClass(0);

type Be = Arc<Backend<FakeOs>>;

/// A batch from the central tier, as addresses.
fn refill(be: &Backend<FakeOs>) -> Vec<usize> {
    let b = be.central.refill(C, &be.page_heap);
    // SAFETY: the refill gave us a chain of b.count objects.
    unsafe { chain_to_vec(b.head, b.count) }
}

/// Hands `objs` back to the central tier as one flush.
fn flush(be: &Backend<FakeOs>, objs: &[usize]) {
    if objs.is_empty() {
        return;
    }
    // SAFETY: the objects are class-C objects we own and give up.
    unsafe {
        let head = vec_to_chain(objs);
        be.central
            .flush(C, head, objs.len(), &be.page_heap, &be.meta);
    }
}

/// Runs the `givers` (each hands its objects back its own way) and a refill of
/// class C at once, checks what the refill got, and returns everything at the end.
fn race(batches: usize, givers: &[fn(&Be, Vec<usize>)]) {
    let be: Be = Arc::new(Backend::new(FakeOs::new()));
    // Batches carved before the race: one per giver, the last kept by main.
    let mut carved: Vec<Vec<usize>> = (0..batches).map(|_| refill(&be)).collect();
    for b in &carved {
        assert_eq!(b.len(), C.batch());
    }
    let kept = carved.pop().unwrap();
    let threads: Vec<_> = givers
        .iter()
        .zip(carved)
        .map(|(&give, objs)| {
            let be = be.clone();
            thread::spawn(move || give(&be, objs))
        })
        .collect();
    let refiller = {
        let be = be.clone();
        thread::spawn(move || {
            let got = refill(&be);
            assert!(!got.is_empty(), "refill came back empty");
            assert_distinct("refill", &got);
            assert_objects_of_class(&be, C, &got);
            got
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    let got = refiller.join().unwrap();
    let mut held = got.clone();
    held.extend(&kept);
    assert_distinct("refilled vs kept", &held);
    flush(&be, &got);
    flush(&be, &kept);
    assert_all_returned(&be);
}

/// A whole batch: one push onto the transfer stack.
fn flush_batch(be: &Be, objs: Vec<usize>) {
    flush(be, &objs);
}

/// A whole batch as an array (the per-CPU front end's flush): one push of a
/// descriptor holding the addresses; the objects are not written.
fn flush_array_batch(be: &Be, objs: Vec<usize>) {
    let objs: Vec<*mut u8> = objs.into_iter().map(|o| o as *mut u8).collect();
    // SAFETY: the objects are class-C objects we own and give up.
    unsafe { be.central.flush_array(C, &objs, &be.page_heap, &be.meta) };
}

/// Single objects: each goes back to its span under the class lock (a full span is
/// relisted as partial, and the carving thread may take the object right back).
fn flush_singly(be: &Be, objs: Vec<usize>) {
    for o in objs {
        flush(be, &[o]);
    }
}

#[test]
fn flushing_a_batch_while_another_thread_refills_accounts_for_every_object() {
    // Two batches (one full span): one flushed whole, one kept.
    model(|| race(2, &[flush_batch]));
}

#[test]
fn flushes_to_the_stack_and_to_the_spans_racing_a_refill_account_for_every_object() {
    // Three batches (a span and a half): one flushed whole, one object by object,
    // one kept, while the third thread refills by pop or by carving.
    model(|| race(3, &[flush_batch, flush_singly]));
}

#[test]
fn an_array_batch_flushed_while_another_thread_refills_reaches_it_linked() {
    // The refilling thread cache pops the array batch (or carves) and gets a chain.
    model(|| race(2, &[flush_array_batch]));
}

#[test]
fn an_array_refill_racing_a_chain_flush_accounts_for_every_object() {
    // The per-CPU refill: an array, from a popped chain (walked) or a carve.
    model(|| {
        let be: Be = Arc::new(Backend::new(FakeOs::new()));
        let a = refill(&be);
        let kept = refill(&be);
        let giver = {
            let be = be.clone();
            thread::spawn(move || flush(&be, &a))
        };
        let refiller = {
            let be = be.clone();
            thread::spawn(move || {
                let mut out = [core::ptr::null_mut(); DESC_SLOTS];
                let n = be.central.refill_array(C, &be.page_heap, &mut out);
                let got: Vec<usize> = out[..n].iter().map(|&p| p as usize).collect();
                assert!(!got.is_empty(), "refill came back empty");
                assert_distinct("array refill", &got);
                assert_objects_of_class(&be, C, &got);
                got
            })
        };
        giver.join().unwrap();
        let got = refiller.join().unwrap();
        let mut held = got.clone();
        held.extend(&kept);
        assert_distinct("refilled vs kept", &held);
        flush_array_batch(&be, got);
        flush(&be, &kept);
        assert_all_returned(&be);
    });
}
