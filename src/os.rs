//! The operating system, behind one small trait.
//!
//! The page heap and the huge-block path ask the OS for address space through
//! [`Os`]; the Linux implementation is [`SysOs`]. Loom models (and unit tests) can
//! substitute a fake, heap-backed page source with the same contract.

use core::ptr;

/// The granule the OS maps and purges in (the x86-64 and aarch64 base page).
pub const OS_PAGE: usize = 4096;

/// An OS call's failure: the `errno` it left. Every fallible [`Os`] method hands it
/// to its caller, which decides: the page heap and the huge path mark nothing
/// "zeroed", "purged" or "unmapped" on one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OsError(pub i32);

impl OsError {
    /// The calling thread's `errno`, as the failed call left it.
    fn last() -> OsError {
        // SAFETY: __errno_location returns the calling thread's errno slot, valid for
        // the thread's lifetime.
        OsError(unsafe { *libc::__errno_location() })
    }
}

/// What strata needs from the operating system.
///
/// `map` and `remap` report failure with a null pointer (all a caller does with it
/// is report "no memory" upwards); `unmap`, `purge` and `now_ms` with an
/// [`OsError`], since their callers must tell success from failure to keep their
/// records true: a range whose purge failed still holds its old contents, and one
/// whose unmap failed is still mapped and still ours.
///
/// # Safety
/// Implementations must return fresh, zero-filled, readable and writable memory from
/// `map`, aligned as asked, that no one else uses until it is passed to `unmap`;
/// `purge` must leave the range mapped, and when it returns `Ok`, reading it
/// afterwards must yield zeros; an `unmap` that returns `Err` must leave the range
/// mapped and its contents as they were.
pub unsafe trait Os {
    /// Maps `size` bytes (a multiple of [`OS_PAGE`]) aligned to `align` (a power of
    /// two); null if the OS refuses.
    fn map(&self, size: usize, align: usize) -> *mut u8;
    /// Returns a mapping (or a page-aligned part of one) to the OS. On `Err` (Linux:
    /// `ENOMEM` when splitting a mapping would pass `vm.max_map_count`) the range is
    /// still mapped and still the caller's.
    ///
    /// # Safety
    /// `[p, p+size)` was mapped by `map`, is not used afterwards (if it is unmapped).
    unsafe fn unmap(&self, p: *mut u8, size: usize) -> Result<(), OsError>;
    /// Drops the contents of `[p, p+size)` (page aligned) but keeps the range mapped;
    /// on `Ok` it reads as zeros afterwards and costs no resident memory until
    /// touched. On `Err` (Linux: `EINVAL` for locked pages, e.g. under `mlockall`)
    /// the contents may be intact: nothing may be assumed zero.
    ///
    /// # Safety
    /// The range lies inside a live mapping and holds nothing anyone still needs.
    unsafe fn purge(&self, p: *mut u8, size: usize) -> Result<(), OsError>;
    /// Grows or shrinks a mapping, moving it if needed; null (and the old mapping
    /// untouched) if it cannot.
    ///
    /// # Safety
    /// `[p, p+old)` is a whole mapping obtained from `map` with `align <= OS_PAGE`.
    unsafe fn remap(&self, p: *mut u8, old: usize, new: usize) -> *mut u8;
    /// Makes the whole mapping `[p, p+size)` two whole mappings, `[p, p+at)` and
    /// `[p+at, p+size)`, each to be unmapped or remapped on its own from now on.
    ///
    /// # Safety
    /// `[p, p+size)` is a whole mapping obtained from `map` with `align <= OS_PAGE`
    /// (or from `remap` or `split`); `at` is a multiple of [`OS_PAGE`] in `(0, size)`.
    unsafe fn split(&self, p: *mut u8, size: usize, at: usize);
    /// A monotonic clock in milliseconds, for purge delays; `Err` if it cannot be read.
    fn now_ms(&self) -> Result<u64, OsError>;
}

/// Linux: `mmap`, `munmap`, `madvise(MADV_DONTNEED)`, `mremap`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysOs;

// SAFETY: anonymous private mappings are fresh and zero-filled; MADV_DONTNEED on
// them makes later reads return zero pages; mmap results are aligned by trimming.
unsafe impl Os for SysOs {
    fn map(&self, size: usize, align: usize) -> *mut u8 {
        debug_check!(
            size % OS_PAGE == 0 && align.is_power_of_two(),
            "SysOs::map: size not in pages or alignment not a power of two"
        );
        if align <= OS_PAGE {
            return mmap_anon(size);
        }
        // Over-reserve by `align`, then trim the ends so the middle is aligned.
        let Some(reserve) = size.checked_add(align) else {
            return ptr::null_mut();
        };
        let raw = mmap_anon(reserve);
        if raw.is_null() {
            return raw;
        }
        let start = (raw as usize + align - 1) & !(align - 1);
        let head = start - raw as usize;
        let tail = reserve - head - size;
        // A trim that fails (ENOMEM: if the kernel merged the new mapping with a
        // neighbour, a trim splits that VMA, one more than `vm.max_map_count` may
        // allow) would leave untracked pages on one side of the block, never to be unmapped:
        // give back what is left of the reservation instead and report no memory, as
        // the process is at its mapping limit anyway. If even that fails, the rest
        // stays reserved for good, but only as address space: never touched, it
        // holds no resident memory (only commit charge under strict overcommit).
        // SAFETY: the trimmed ranges lie inside the mapping just made and are unused.
        unsafe {
            if head > 0 && munmap(raw, head).is_err() {
                let _ = munmap(raw, reserve);
                return ptr::null_mut();
            }
            if tail > 0 && munmap((start + size) as *mut u8, tail).is_err() {
                let _ = munmap(start as *mut u8, size + tail);
                return ptr::null_mut();
            }
        }
        start as *mut u8
    }

    unsafe fn unmap(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
        // SAFETY: the caller passes a range it mapped and no longer uses.
        unsafe { munmap(p, size) }
    }

    unsafe fn purge(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
        // SAFETY: the caller passes a range inside a live mapping whose contents are
        // dead; MADV_DONTNEED on private anonymous memory zero-fills it on next touch
        // (when it succeeds: locked pages make it fail with EINVAL, contents intact).
        let r = unsafe { libc::madvise(p.cast(), size, libc::MADV_DONTNEED) };
        if r == 0 { Ok(()) } else { Err(OsError::last()) }
    }

    unsafe fn remap(&self, p: *mut u8, old: usize, new: usize) -> *mut u8 {
        // SAFETY: the caller passes a whole mapping; on failure mremap leaves it as is.
        let r = unsafe { libc::mremap(p.cast(), old, new, libc::MREMAP_MAYMOVE) };
        if r == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            r.cast()
        }
    }

    unsafe fn split(&self, p: *mut u8, size: usize, at: usize) {
        // Nothing to do: munmap and mremap take any page-aligned range that lies in
        // one mapping (the kernel splits its VMA as needed).
        debug_check!(
            at % OS_PAGE == 0 && 0 < at && at < size && p as usize % OS_PAGE == 0,
            "SysOs::split: split point not a page inside the mapping"
        );
    }

    fn now_ms(&self) -> Result<u64, OsError> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we pass; the coarse clock is a
        // vDSO read with millisecond-ish resolution, enough for purge delays.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        if r != 0 {
            return Err(OsError::last());
        }
        Ok(ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000)
    }
}

/// 64 random bits for per-process secrets, without allocating: `getrandom(2)`
/// (non-blocking); if that fails (no entropy yet at early boot, a seccomp filter),
/// the kernel's 16 random bytes for this process (`AT_RANDOM`) mixed with the clock
/// and a stack address (ASLR), so two processes still differ.
#[cfg(not(strata_loom))]
pub fn random_u64() -> u64 {
    let mut s: u64 = 0;
    // SAFETY: getrandom writes at most 8 bytes into `s`.
    let got = unsafe { libc::getrandom((&raw mut s).cast(), 8, libc::GRND_NONBLOCK) };
    // Anything but 8 bytes (-1 with EAGAIN, ENOSYS or EPERM; a short read, which
    // GRND_NONBLOCK can give) takes the fallback below.
    if got == 8 {
        return s;
    }
    // SAFETY: getauxval only reads the auxiliary vector.
    let at_random = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u64;
    if !at_random.is_null() {
        // SAFETY: AT_RANDOM points at 16 bytes the kernel put on the initial stack,
        // readable for the process's lifetime (perhaps unaligned).
        s = unsafe { at_random.read_unaligned() ^ at_random.add(1).read_unaligned() };
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes `ts`. If it fails `ts` stays zero, which only
    // leaves AT_RANDOM and the stack address to mix: nothing relies on the clock.
    let _ = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let stack = (&raw const ts) as usize as u64;
    mix64(s ^ mix64(stack ^ ((ts.tv_nsec as u64) << 20) ^ ts.tv_sec as u64))
}

/// A 64-bit finaliser (splitmix-like): every input bit affects every output bit.
#[cfg(not(strata_loom))]
fn mix64(x: u64) -> u64 {
    let x = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let x = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// `munmap(2)` with its error.
///
/// # Safety
/// `[p, p+size)` lies in mappings of ours that nothing uses any more.
unsafe fn munmap(p: *mut u8, size: usize) -> Result<(), OsError> {
    // SAFETY: per the contract.
    let r = unsafe { libc::munmap(p.cast(), size) };
    if r == 0 { Ok(()) } else { Err(OsError::last()) }
}

/// A fresh private anonymous mapping; null if the kernel refuses.
///
/// Without `MAP_NORESERVE`, so that the kernel's overcommit policy judges each
/// request as it judges glibc's: under the default heuristic (mode 0) a mapping
/// larger than RAM plus swap fails here, at the call, and `malloc` returns null
/// with `ENOMEM` instead of a block that kills the program when touched; under
/// mode 2 (strict) every mapping is charged against the commit limit (the flag
/// is ignored there anyway); under mode 1 (always) every mapping succeeds.
fn mmap_anon(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing
    // aliases nothing.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Tests: [`SysOs`] that refuses purges and unmaps on demand, as Linux does under
/// `mlockall` (`madvise` fails with EINVAL) or at `vm.max_map_count` (`munmap`
/// fails with ENOMEM). A refused call does nothing: contents and mappings stay.
#[cfg(all(test, not(strata_loom)))]
pub(crate) mod flaky {
    use super::{Os, OsError, SysOs};
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// See the module docs. Each `fail_*` counter is the number of calls still to
    /// refuse (`usize::MAX`: all); `*_calls` count every call, refused or not.
    #[derive(Default)]
    pub(crate) struct FlakyOs {
        pub fail_purges: AtomicUsize,
        pub fail_unmaps: AtomicUsize,
        pub purge_calls: AtomicUsize,
        pub unmap_calls: AtomicUsize,
    }

    impl FlakyOs {
        /// Refuses every purge (`on`) or none.
        pub fn refuse_purges(&self, on: bool) {
            self.fail_purges
                .store(if on { usize::MAX } else { 0 }, Relaxed);
        }

        /// Refuses every unmap (`on`) or none.
        pub fn refuse_unmaps(&self, on: bool) {
            self.fail_unmaps
                .store(if on { usize::MAX } else { 0 }, Relaxed);
        }

        fn refuse(counter: &AtomicUsize) -> bool {
            counter
                .fetch_update(Relaxed, Relaxed, |n| match n {
                    0 => None,
                    usize::MAX => Some(n),
                    _ => Some(n - 1),
                })
                .is_ok()
        }
    }

    // SAFETY: every call that is not refused is SysOs's; a refused purge or unmap
    // returns Err and leaves the range as it was, as the contract allows.
    unsafe impl Os for FlakyOs {
        fn map(&self, size: usize, align: usize) -> *mut u8 {
            SysOs.map(size, align)
        }

        unsafe fn unmap(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
            self.unmap_calls.fetch_add(1, Relaxed);
            if Self::refuse(&self.fail_unmaps) {
                return Err(OsError(libc::ENOMEM));
            }
            // SAFETY: forwarded contract.
            unsafe { SysOs.unmap(p, size) }
        }

        unsafe fn purge(&self, p: *mut u8, size: usize) -> Result<(), OsError> {
            self.purge_calls.fetch_add(1, Relaxed);
            if Self::refuse(&self.fail_purges) {
                return Err(OsError(libc::EINVAL));
            }
            // SAFETY: forwarded contract.
            unsafe { SysOs.purge(p, size) }
        }

        unsafe fn remap(&self, p: *mut u8, old: usize, new: usize) -> *mut u8 {
            // SAFETY: forwarded contract.
            unsafe { SysOs.remap(p, old, new) }
        }

        unsafe fn split(&self, p: *mut u8, size: usize, at: usize) {
            // SAFETY: forwarded contract.
            unsafe { SysOs.split(p, size, at) }
        }

        fn now_ms(&self) -> Result<u64, OsError> {
            SysOs.now_ms()
        }
    }
}
