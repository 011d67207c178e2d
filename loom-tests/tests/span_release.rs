//! A span's last object coming back while another thread refills the class: the
//! returning thread finds `live == 0`, unlists the span and gives it to the page heap
//! (all under the class lock), while the refilling thread carves from the class's
//! partial spans or takes a fresh span from the page heap, and a third thread takes
//! a page from the page heap (possibly the freed span's).
//!
//! Properties: the span reaches the page heap exactly once (at the end every page is
//! free exactly once: no page lost, none counted twice), and it is never in use and
//! free at the same time (every object the refilling thread holds is in a Small span
//! of its class, by the page map, while it holds it, and lies outside the page the
//! third thread got).
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    FakeOs, assert_all_returned, assert_distinct, assert_objects_of_class, chain_to_vec, model,
    vec_to_chain,
};
use strata::internals::{Backend, PAGE_SIZE, SizeClass};

/// 128-byte objects: two to a one-page span, a batch of two.
const C: SizeClass = SizeClass(1);

fn refill(be: &Backend<FakeOs>) -> Vec<usize> {
    let b = be.central.refill(C, &be.page_heap);
    // SAFETY: the refill gave us a chain of b.count objects.
    unsafe { chain_to_vec(b.head, b.count) }
}

/// Returns objects one at a time straight to their spans (the path of frees from
/// threads already torn down, and of every flush that does not fill a batch).
fn give_back(be: &Backend<FakeOs>, objs: &[usize]) {
    for &o in objs {
        // SAFETY: a class-C object we own and give up.
        unsafe { be.free_small_direct(C, o as *mut u8) };
    }
}

#[test]
fn last_object_returned_while_refilling_frees_the_span_once_and_never_while_in_use() {
    model(|| {
        let be = Arc::new(Backend::new(FakeOs::new()));
        assert_eq!(C.objects_per_span(), 2);
        // One full span S: both objects held, S on no list.
        let s = refill(&be);
        assert_eq!(s.len(), 2);
        let returner = {
            let be = be.clone();
            // Frees both: the first relists S as partial, the second (if S still
            // holds no one else's object) empties it and sends it to the page heap.
            thread::spawn(move || give_back(&be, &s))
        };
        let refiller = {
            let be = be.clone();
            thread::spawn(move || {
                let got = refill(&be);
                assert!(!got.is_empty());
                assert_distinct("refill", &got);
                // Still Small, still ours: the span was not freed under us.
                assert_objects_of_class(&be, C, &got);
                let single = be.alloc_small_direct(C) as usize;
                assert_ne!(single, 0);
                let mut all = got.clone();
                all.push(single);
                assert_distinct("refill + direct", &all);
                assert_objects_of_class(&be, C, &all);
                all
            })
        };
        let pager = {
            let be = be.clone();
            thread::spawn(move || {
                let p = be.alloc_large(PAGE_SIZE, 8, false);
                assert!(!p.is_null());
                assert_eq!(be.usable_size(p), Some(PAGE_SIZE));
                p as usize
            })
        };
        returner.join().unwrap();
        let got = refiller.join().unwrap();
        let page = pager.join().unwrap();
        for &o in &got {
            assert!(
                o + C.size_bytes() <= page || o >= page + PAGE_SIZE,
                "object {o:#x} lies in the page {page:#x} handed out as a Large block"
            );
        }
        // SAFETY: the page is ours, given up.
        unsafe { be.free_large(page as *mut u8) };
        if let Err(v) = be.validate() {
            panic!("invariant broken while objects are held: {v}");
        }
        assert_objects_of_class(&be, C, &got);
        // SAFETY: class-C objects we own.
        unsafe {
            let head = vec_to_chain(&got);
            be.central
                .release_objects(C, head, got.len(), &be.page_heap);
        }
        assert_all_returned(&be);
    });
}
