//! Chunk registration and the "is this pointer ours?" map. A thread that grows the
//! page heap sets up the chunk header and then sets the chunk's entry (Release);
//! any thread may ask whether an address is ours (Acquire) and, if so, read the
//! header through the page map without holding any lock. The map's code is the
//! shipped one; only its store differs (a small table keyed by chunk index, as
//! loom's atomics cannot live in the real map's static).
//!
//! Property: a header is readable by anyone who sees its entry, with nothing else
//! ordering the two threads: the asking thread learns chunk addresses from the fake
//! OS (no synchronisation at all), and the header carries a loom cell written at
//! set-up and read by every lookup, so loom reports a lookup that can see the entry
//! before the header. Addresses outside every chunk are never ours.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{FakeOs, assert_all_returned, model};
use strata::internals::{Backend, ChunkHeader, HEADER_PAGES, PAGE_SIZE, USABLE_PAGES};

/// If the chunk the fake OS mapped last is ours by the chunk map, reads its header.
fn look_up_last_chunk(be: &Backend<FakeOs>) {
    let base = be.page_heap.os().last_chunk();
    if base == 0 {
        return;
    }
    let first_span = base + HEADER_PAGES * PAGE_SIZE;
    if be.page_heap.owns(first_span as *const u8) {
        // SAFETY: the chunk map says the chunk is mapped, and it stays mapped:
        // nothing in this model gives a chunk back before every thread joined.
        let chunk = unsafe { &*ChunkHeader::of(first_span as *const u8) };
        chunk.check_published();
        assert_eq!(chunk.base() as usize, base);
    }
}

#[test]
fn a_registered_chunk_header_is_visible_to_whoever_sees_its_entry() {
    model(|| {
        let be = Arc::new(Backend::new(FakeOs::new()));
        // Two growers: each takes a whole chunk's usable pages, so each maps one.
        let growers: Vec<_> = (0..2)
            .map(|_| {
                let be = be.clone();
                thread::spawn(move || {
                    let p = be.alloc_large(USABLE_PAGES * PAGE_SIZE, 8, false);
                    assert!(!p.is_null());
                    assert!(be.page_heap.owns(p));
                    p as usize
                })
            })
            .collect();
        let asker = {
            let be = be.clone();
            thread::spawn(move || {
                look_up_last_chunk(&be);
                look_up_last_chunk(&be);
            })
        };
        let blocks: Vec<usize> = growers.into_iter().map(|t| t.join().unwrap()).collect();
        asker.join().unwrap();
        assert_ne!(
            ChunkHeader::of(blocks[0] as *const u8),
            ChunkHeader::of(blocks[1] as *const u8)
        );
        for &p in &blocks {
            assert_eq!(
                be.usable_size(p as *const u8),
                Some(USABLE_PAGES * PAGE_SIZE)
            );
        }
        let outside = 0usize;
        assert!(!be.page_heap.owns(&outside as *const usize as *const u8));
        for p in blocks {
            // SAFETY: ours, given up.
            unsafe { be.free_large(p as *mut u8) };
        }
        assert_all_returned(&be);
    });
}
