//! Unit tests of the global allocator's thread set-up and tear-down.

use super::*;
use crate::platform;
use core::alloc::{GlobalAlloc, Layout};

/// ThreadHeap invariant 7: many fresh threads allocate and free through the
/// fast and slow paths, starting at `EMPTY` and, after a simulated thread exit,
/// ending at `DEAD`; neither sentinel is ever written.
#[test]
fn sentinels_stay_empty_while_threads_start_and_exit() {
    let sizes = [8usize, 24, 64, 200, 1024, 4096, 40 << 10];
    std::thread::scope(|s| {
        for t in 0..8usize {
            s.spawn(move || {
                assert_eq!(heap(), sentinel(&EMPTY), "a fresh thread starts at EMPTY");
                let mut live = Vec::new();
                for i in 0..2_000usize {
                    let l = Layout::from_size_align(sizes[(i + t) % sizes.len()], 8).unwrap();
                    // SAFETY: a non-zero size.
                    let p = unsafe { Strata.alloc(l) };
                    assert!(!p.is_null());
                    live.push((p, l));
                    if i % 3 == 0 {
                        let (p, l) = live.swap_remove(i % live.len());
                        // SAFETY: a live block of this layout.
                        unsafe { Strata.dealloc(p, l) };
                    }
                }
                // With STRATA_PERCPU=1 the thread is served per CPU: no heap, no
                // tear-down to simulate.
                #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
                if heap() == sentinel(&VIA_CPU) {
                    for (p, l) in live.drain(..) {
                        // SAFETY: a live block of this layout.
                        unsafe { Strata.dealloc(p, l) };
                    }
                    return;
                }
                // What the key destructor does at thread exit; then the key's
                // value is cleared so that it does not run a second time.
                let h = heap();
                // SAFETY: this thread's heap, only read.
                assert_eq!(unsafe { (*h).state() }, HeapState::Live);
                on_thread_exit(h.cast());
                if let Some(key) = thread_key() {
                    // Null means "no destructor call".
                    platform::thread_key_set(key, ptr::null()).unwrap();
                }
                assert_eq!(heap(), sentinel(&DEAD));
                // Frees (and allocations) after exit go straight to the central
                // tier, through DEAD's fast paths, which miss.
                for (p, l) in live.drain(..) {
                    // SAFETY: a live block of this layout.
                    unsafe { Strata.dealloc(p, l) };
                }
                let l = Layout::from_size_align(64, 8).unwrap();
                // SAFETY: a non-zero size; the block is freed at once.
                unsafe { Strata.dealloc(Strata.alloc(l), l) };
            });
        }
    });
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    let sentinels = [
        (&EMPTY, HeapState::Empty),
        (&DEAD, HeapState::Dead),
        (&DRAINED, HeapState::Drained),
        (&VIA_CPU, HeapState::Empty),
    ];
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    let sentinels = [
        (&EMPTY, HeapState::Empty),
        (&DEAD, HeapState::Dead),
        (&DRAINED, HeapState::Drained),
    ];
    for (s, state) in sentinels {
        assert_eq!(s.state(), state);
        assert!(s.is_empty(), "a sentinel heap was written");
        assert_eq!(s.counters(), Default::default());
        // SAFETY: a sentinel, only read.
        unsafe { s.validate(&BACKEND) }.unwrap();
    }
}
