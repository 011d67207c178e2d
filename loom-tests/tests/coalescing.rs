//! Two threads freeing neighbouring spans at once. Each free takes the page-heap
//! lock, merges the span with its free neighbours (left through the page map's
//! entry for the page before it, right through the descriptor after it), unlinks
//! them from their bins and files the result; a concurrent allocation splits free
//! spans by best fit.
//!
//! Properties: coalescing loses no page and never merges a span twice: after every
//! interleaving the free pages form maximal runs (no two free spans adjacent), the
//! bins hold each free span once with the right size, and once everything is freed
//! the chunk is one free span again and goes back to the OS.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{FakeOs, assert_all_returned, model};
use strata::Placement;
use strata::internals::{Backend, PAGE_SIZE, USABLE_PAGES};

fn alloc_pages(be: &Backend<FakeOs>, n: usize) -> usize {
    let p = be.alloc_large(n * PAGE_SIZE, 8, false);
    assert!(!p.is_null());
    p as usize
}

fn free(be: &Backend<FakeOs>, p: usize) {
    // SAFETY: a block from alloc_large that the caller gives up.
    unsafe { be.free_large(p as *mut u8) };
}

#[test]
fn neighbouring_spans_freed_at_once_coalesce_without_losing_a_page() {
    for p in Placement::ALL {
        model(move || {
            let be = Arc::new(Backend::new(FakeOs::new()));
            be.page_heap.set_placement(p).unwrap();
            // One chunk, carved front to back: fence | a | b b | c | free ...
            let fence = alloc_pages(&be, 1);
            let a = alloc_pages(&be, 1);
            let b = alloc_pages(&be, 2);
            let c = alloc_pages(&be, 1);
            assert!(fence < a && a < b && b < c, "spans not laid out in order");
            const { assert!(USABLE_PAGES >= 6) };
            // Three threads free the three neighbours at once; the last one also
            // allocates by best fit while the others may or may not be merged yet.
            let threads: Vec<_> = [a, b, c]
                .into_iter()
                .enumerate()
                .map(|(k, p)| {
                    let be = be.clone();
                    thread::spawn(move || {
                        free(&be, p);
                        if k == 2 {
                            let d = alloc_pages(&be, 1);
                            assert_eq!(be.usable_size(d as *const u8), Some(PAGE_SIZE));
                            free(&be, d);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            if let Err(v) = be.validate() {
                panic!("after the racing frees: {v}");
            }
            let st = be.page_heap.stats();
            assert_eq!(st.chunks, 1);
            assert_eq!(
                st.free_bytes,
                (USABLE_PAGES - 1) * PAGE_SIZE,
                "pages lost or counted twice"
            );
            free(&be, fence);
            assert_all_returned(&be);
        });
    }
}
