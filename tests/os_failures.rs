#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

// What strata promises when the OS refuses a call. Under
// `mlockall(MCL_CURRENT | MCL_FUTURE)` every `madvise(MADV_DONTNEED)` fails with
// EINVAL (locked pages cannot be dropped), so a free span that a purge pass tried
// to purge is still dirty: `alloc_zeroed` must clear it rather than trust a "known
// zero" mark. mlockall covers the whole process, so these tests have a binary of
// their own (this file) and never unlock.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::OnceLock;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Locks the process's memory once; false (with a message) where that is not
/// allowed (RLIMIT_MEMLOCK without CAP_IPC_LOCK), and then the tests are skipped.
fn locked() -> bool {
    static LOCKED: OnceLock<bool> = OnceLock::new();
    *LOCKED.get_or_init(|| {
        // SAFETY: mlockall has no memory-safety preconditions.
        let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
        if r != 0 {
            eprintln!(
                "skipped: mlockall failed ({}); run as root or raise RLIMIT_MEMLOCK",
                std::io::Error::last_os_error()
            );
        }
        r == 0
    })
}

/// Allocates `size` bytes, fills them with 0xAB, frees them, lets strata return
/// its free memory (where purges fail), then checks that `alloc_zeroed` of the
/// same layout is all zeros, `rounds` times.
fn zeroed_after_failed_purge(size: usize, rounds: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    // A live Large block keeps the chunk mapped: the freed span is then purged
    // (which fails) rather than unmapped with a wholly free chunk.
    let pin = vec![1u8; 300 * KIB];
    for round in 0..rounds {
        // SAFETY: a non-zero layout; each block is freed with the same layout.
        unsafe {
            let p = GLOBAL.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(0xAB, size);
            GLOBAL.dealloc(p, layout);
            strata::release_memory();
            let q = GLOBAL.alloc_zeroed(layout);
            assert!(!q.is_null());
            let block = std::slice::from_raw_parts(q, size);
            let dirty = block.iter().filter(|&&b| b != 0).count();
            assert_eq!(
                dirty, 0,
                "round {round}: alloc_zeroed({size}) returned {dirty} non-zero bytes"
            );
            GLOBAL.dealloc(q, layout);
        }
    }
    strata::validate_heap().expect("heap invariants after failed purges");
    drop(pin);
}

#[test]
fn alloc_zeroed_large_is_zero_when_purge_fails() {
    if locked() {
        zeroed_after_failed_purge(512 * KIB, 20);
    }
}

#[test]
fn alloc_zeroed_small_is_zero_when_purge_fails() {
    if locked() {
        zeroed_after_failed_purge(KIB, 20);
        zeroed_after_failed_purge(200 * KIB, 20);
    }
}

#[test]
fn alloc_zeroed_huge_is_zero_when_purge_fails() {
    if locked() {
        zeroed_after_failed_purge(2 * MIB, 10);
    }
}

#[test]
fn vec_of_none_is_none_when_purge_fails() {
    if !locked() {
        return;
    }
    let n = 64 * KIB; // 512 KiB of pointers: a Large block
    let pin = vec![1u8; 300 * KIB];
    for round in 0..20 {
        // Dirty a block of the same size, free it and let the purge fail.
        let mut dirty = vec![0u64; n];
        dirty.iter_mut().for_each(|w| *w = 0xABAB_ABAB_ABAB_ABAB);
        std::hint::black_box(&mut dirty);
        drop(dirty);
        strata::release_memory();
        // `vec![None; n]` of a niche-optimised type is `alloc_zeroed`: a dirty
        // block would give `Some` of a wild pointer.
        // Not dropped on a failed assert: dropping a wild `Some` would free it.
        let v = std::mem::ManuallyDrop::new(vec![None::<Box<u64>>; n]);
        let some = v.iter().filter(|x| x.is_some()).count();
        assert_eq!(some, 0, "round {round}: {some} of {n} entries are Some");
        drop(std::mem::ManuallyDrop::into_inner(v));
    }
    drop(pin);
}
