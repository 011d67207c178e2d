//! Unit tests of the huge path when the OS refuses to unmap (`FlakyOs`).

use super::*;
use crate::huge::{DEFAULT_CACHE_BYTES, MAX_CACHED_BLOCK};
use crate::os::OS_PAGE;
use crate::os::flaky::FlakyOs;
use core::sync::atomic::Ordering::Relaxed;

const MIB: usize = 1 << 20;

fn backend() -> Backend<FlakyOs> {
    let be = Backend::new(FlakyOs::default());
    // Checked builds turn the cache off by default.
    be.set_huge_cache_budget(DEFAULT_CACHE_BYTES);
    be
}

#[test]
fn a_huge_mapping_whose_unmap_is_refused_stays_cached_and_is_cleared_for_calloc() {
    let be = backend();
    let len = 2 * MIB;
    let p = be.alloc_huge(len, 8, false);
    assert!(!p.is_null());
    // SAFETY: a live huge block of `len` bytes, freed once.
    unsafe {
        p.write_bytes(0xAB, len);
        be.free_huge(p);
    }
    assert_eq!(be.huge.totals().2, len, "freed into the cache");
    be.os().refuse_unmaps(true);
    assert_eq!(be.release_shared(), 0, "nothing went back to the OS");
    assert_eq!(
        be.huge.totals().2,
        len,
        "the refused mapping is still ours, cached"
    );
    be.validate().unwrap();
    let q = be.alloc_huge(len, 8, true);
    assert_eq!(q, p, "the cached mapping is reused");
    // SAFETY: a live huge block of `len` bytes.
    let block = unsafe { core::slice::from_raw_parts(q, len) };
    assert!(
        block.iter().all(|&b| b == 0),
        "a zeroed request got old data"
    );
    // SAFETY: freed once.
    unsafe { be.free_huge(q) };
    be.os().refuse_unmaps(false);
    assert_eq!(be.release_shared(), len);
    assert_eq!(be.huge.totals(), (0, 0, 0));
    be.validate().unwrap();
}

#[test]
fn a_huge_mapping_too_big_to_cache_whose_unmap_is_refused_is_purged() {
    let be = backend();
    let len = MAX_CACHED_BLOCK + OS_PAGE;
    let p = be.alloc_huge(len, 8, false);
    assert!(!p.is_null());
    be.os().refuse_unmaps(true);
    // SAFETY: a live huge block, dirtied, then freed once.
    unsafe {
        p.write_bytes(0xAB, OS_PAGE);
        be.free_huge(p);
    }
    assert_eq!(be.os().unmap_calls.load(Relaxed), 1);
    assert_eq!(
        be.os().purge_calls.load(Relaxed),
        1,
        "the memory went back at least"
    );
    assert_eq!(be.huge.totals(), (0, 0, 0));
    // SAFETY: the refused mapping is still mapped (nothing names it any more); its
    // pages were purged.
    let first = unsafe { core::slice::from_raw_parts(p, OS_PAGE) };
    assert!(first.iter().all(|&b| b == 0));
    be.validate().unwrap();
    be.os().refuse_unmaps(false);
    // SAFETY: the test gives the lost range back by hand.
    unsafe { be.os().unmap(p, len) }.unwrap();
}

/// A backend's initial value is all zero bytes, so that the process's static one
/// lives in `.bss` (TransferStack invariant 1): one non-zero byte anywhere in it
/// (a default such as `vmas: 1` in an empty huge-cache slot) moves the whole
/// static, 80 KiB, to `.data`, whose file pages every process maps resident.
/// Checked where the linker put a static backend: between `__bss_start` and `_end`
/// (symbols both GNU ld and lld define). Release builds only: debug builds keep
/// each lock's rank in the lock (`RawLock`), which is not zero.
#[cfg(all(target_os = "linux", not(strata_loom), not(debug_assertions)))]
#[test]
fn a_static_backend_is_in_bss() {
    use crate::os::SysOs;
    static B: Backend<SysOs> = Backend::new(SysOs);
    unsafe extern "C" {
        static __bss_start: u8;
        static _end: u8;
    }
    let (lo, hi) = (
        (&raw const __bss_start) as usize,
        (&raw const _end) as usize,
    );
    let at = (&raw const B) as usize;
    assert!(
        (lo..hi).contains(&at),
        "a static Backend is not in .bss: a field's initial value is not all zero bytes"
    );
}
