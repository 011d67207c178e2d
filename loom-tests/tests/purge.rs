//! Purge racing reuse. A free of a span runs the purge pass (spans free for longer
//! than the delay are zero-filled with `MADV_DONTNEED` and flagged known-zero) under
//! the page-heap lock, while another thread allocates spans, possibly the very span
//! being purged, and asks for zeroed memory (skipping the memset when the span is
//! known to be zero).
//!
//! Properties: memory is never handed out while being purged (what the allocating
//! thread wrote is intact at the end), and "known zero" is claimed only for pages
//! that are zero (every zeroed allocation reads zeros, and at the end every free
//! span flagged zero reads zeros), including when a dirty span is merged into a
//! purged neighbour.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{FakeOs, all_bytes, assert_all_returned, assert_zero_claims_hold, fill, model};
use strata::Placement;
use strata::internals::{Backend, PAGE_SIZE};

const DELAY_MS: u64 = 10;

fn alloc_pages(be: &Backend<FakeOs>, n: usize, zero: bool) -> usize {
    let p = be.alloc_large(n * PAGE_SIZE, 8, zero);
    assert!(!p.is_null());
    p as usize
}

fn free(be: &Backend<FakeOs>, p: usize) {
    // SAFETY: a block from alloc_large that the caller gives up.
    unsafe { be.free_large(p as *mut u8) };
}

#[test]
fn purge_racing_reuse_never_purges_memory_in_use_and_zero_claims_hold() {
    for p in Placement::ALL {
        model(move || {
            let be = Arc::new(Backend::new(FakeOs::new()));
            be.page_heap.set_placement(p).unwrap();
            let os = be.page_heap.os();
            be.page_heap.set_purge_delay_ms(DELAY_MS);
            // Layout: y | z | a a | g | w | rest (fresh, zero).
            let y = alloc_pages(&be, 1, false);
            let z = alloc_pages(&be, 1, false);
            let a = alloc_pages(&be, 2, false);
            let g = alloc_pages(&be, 1, false);
            let w = alloc_pages(&be, 1, false);
            assert!(y < z && z < a && a < g && g < w);
            // SAFETY: all ours.
            unsafe {
                for (p, n) in [(y, 1), (z, 1), (a, 2), (g, 1), (w, 1)] {
                    fill(p, n * PAGE_SIZE, 0xAB);
                }
            }
            free(&be, a); // t = 0: a is free and dirty
            os.set_now_ms(2 * DELAY_MS);
            free(&be, w); // t = 20: purges a (due), w merges with the rest
            assert_eq!(os.purged(), vec![(a, 2 * PAGE_SIZE)], "a was not purged");
            free(&be, y); // t = 20: y free and dirty, too young to purge
            os.set_now_ms(4 * DELAY_MS);
            let freer = {
                let be = be.clone();
                // t = 40: g merges with a (known zero) and with w's run (dirty); the
                // purge pass then zero-fills y, which the other thread may be taking.
                thread::spawn(move || free(&be, g))
            };
            // z, between y and a, is freed at the same time: it merges with whichever of
            // its neighbours is free (y dirty or purged, a known zero or merged with g).
            let neighbour = {
                let be = be.clone();
                thread::spawn(move || free(&be, z))
            };
            let taker = {
                let be = be.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    for n in [1, 3] {
                        let p = alloc_pages(&be, n, true);
                        // SAFETY: a block just given to us.
                        unsafe {
                            assert!(
                                all_bytes(p, n * PAGE_SIZE, 0),
                                "a zeroed allocation of {n} pages is not zero"
                            );
                            fill(p, n * PAGE_SIZE, 0xCD);
                        }
                        got.push((p, n));
                    }
                    got
                })
            };
            freer.join().unwrap();
            neighbour.join().unwrap();
            let got = taker.join().unwrap();
            for &(p, n) in &got {
                // SAFETY: still ours; nobody else writes it.
                let intact = unsafe { all_bytes(p, n * PAGE_SIZE, 0xCD) };
                assert!(intact, "a block was purged while in use");
            }
            assert_zero_claims_hold(&be);
            if let Err(v) = be.validate() {
                panic!("{v}");
            }
            for (p, _) in got {
                free(&be, p);
            }
            assert_zero_claims_hold(&be);
            assert_all_returned(&be);
        });
    }
}

/// The OS refuses every purge (as under `mlockall`) and then every unmap (as at
/// `vm.max_map_count`): a span whose purge was refused stays dirty, so a zeroed
/// allocation racing the refused pass still reads zeros, and a chunk whose unmap
/// was refused stays mapped and filed, to go back once the OS takes it.
#[test]
fn refused_purges_and_unmaps_claim_nothing_and_lose_nothing() {
    for p in Placement::ALL {
        model(move || {
            let be = Arc::new(Backend::new(FakeOs::new()));
            be.page_heap.set_placement(p).unwrap();
            let os = be.page_heap.os();
            be.page_heap.set_purge_delay_ms(DELAY_MS);
            os.refuse_purges(usize::MAX);
            // Layout: a a | g | w | rest (fresh, zero).
            let a = alloc_pages(&be, 2, false);
            let g = alloc_pages(&be, 1, false);
            let w = alloc_pages(&be, 1, false);
            // SAFETY: all ours.
            unsafe {
                for (p, n) in [(a, 2), (g, 1), (w, 1)] {
                    fill(p, n * PAGE_SIZE, 0xAB);
                }
            }
            free(&be, a); // t = 0: a is free and dirty
            os.set_now_ms(2 * DELAY_MS);
            let freer = {
                let be = be.clone();
                // t = 20: w merges with the rest; the pass tries to purge a (due, kept
                // apart by g) and is refused.
                thread::spawn(move || free(&be, w))
            };
            let taker = {
                let be = be.clone();
                thread::spawn(move || {
                    let p = alloc_pages(&be, 2, true);
                    // SAFETY: a block just given to us.
                    let zero = unsafe { all_bytes(p, 2 * PAGE_SIZE, 0) };
                    assert!(
                        zero,
                        "a zeroed allocation after a refused purge is not zero"
                    );
                    p
                })
            };
            freer.join().unwrap();
            let p = taker.join().unwrap();
            assert!(os.purged().is_empty());
            assert_zero_claims_hold(&be);
            if let Err(v) = be.validate() {
                panic!("{v}");
            }
            free(&be, g);
            free(&be, p);
            os.refuse_unmaps(usize::MAX);
            be.release_shared();
            assert_eq!(
                os.live_chunks(),
                1,
                "a chunk whose unmap was refused is gone"
            );
            assert_zero_claims_hold(&be);
            if let Err(v) = be.validate() {
                panic!("{v}");
            }
            os.refuse_purges(0);
            os.refuse_unmaps(0);
            be.release_shared();
            assert_all_returned(&be);
        });
    }
}
