//! The metadata arena: a bump allocator under a `RawLock`, the source of every
//! thread heap, batch-descriptor block and huge-block record. This is also the
//! model of the lock itself (spin, then the futex protocol, which under loom yields
//! instead of sleeping): the arena's state is a loom cell, so loom reports any
//! holder that is not ordered after the previous one.
//!
//! Properties: racing allocations get disjoint, zeroed blocks (the lock hands the
//! bump pointer from holder to holder); a block is mapped only when the current one
//! is full; every byte the arena took from the OS is accounted for.
#![cfg(strata_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{FakeOs, model};
use strata::internals::{MetaArena, OS_PAGE};

struct Shared {
    os: FakeOs,
    meta: MetaArena,
}

/// Takes `size` bytes, checks they are zero, and fills them with `id`.
fn take(sh: &Shared, size: usize, id: u8) -> (usize, usize) {
    let p = sh.meta.alloc(&sh.os, size, 64);
    assert!(!p.is_null());
    // SAFETY: the arena gave us `size` bytes that only we use.
    let bytes = unsafe { core::slice::from_raw_parts_mut(p, size) };
    assert!(bytes.iter().all(|&b| b == 0), "arena memory not zero");
    bytes.fill(id);
    (p as usize, size)
}

#[test]
fn racing_arena_allocations_get_disjoint_zeroed_blocks() {
    model(|| {
        let sh = Arc::new(Shared {
            os: FakeOs::new(),
            meta: MetaArena::new(),
        });
        // The first block is mapped before the race; the first two racers to take
        // the lock fit in what is left, the third needs a new block. Three racers:
        // two of them can wait for the lock at once (the futex path).
        take(&sh, 64, 9);
        let handles: Vec<_> = (1..=3u8)
            .map(|id| {
                let sh = sh.clone();
                thread::spawn(move || take(&sh, OS_PAGE - 64, id))
            })
            .collect();
        let mut got: Vec<(usize, usize, u8)> = handles
            .into_iter()
            .zip(1u8..)
            .map(|(h, id)| {
                let (p, n) = h.join().unwrap();
                (p, n, id)
            })
            .collect();
        got.sort_unstable();
        for w in got.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "arena blocks overlap: {got:x?}");
        }
        for &(p, n, id) in &got {
            // SAFETY: the block is still ours (the arena never takes memory back).
            let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, n) };
            assert!(bytes.iter().all(|&b| b == id), "a block was written by two");
        }
        assert_eq!(
            sh.meta.mapped_bytes(),
            4 * OS_PAGE,
            "blocks mapped needlessly"
        );
        assert_eq!(sh.os.live_bytes(), sh.meta.mapped_bytes());
    });
}
