//! The operating system, behind one small trait.
//!
//! The page heap and the huge-block path ask the OS for address space through
//! [`Os`]; the Linux implementation is [`SysOs`]. Loom models (and unit tests) can
//! substitute a fake, heap-backed page source with the same contract.

use core::ptr;

/// The granule the OS maps and purges in (the x86-64 and aarch64 base page).
pub const OS_PAGE: usize = 4096;

/// What strata needs from the operating system.
///
/// # Safety
/// Implementations must return fresh, zero-filled, readable and writable memory from
/// `map`, aligned as asked, that no one else uses until it is passed to `unmap`;
/// `purge` must leave the range mapped, and reading it afterwards must yield zeros.
pub unsafe trait Os {
    /// Maps `size` bytes (a multiple of [`OS_PAGE`]) aligned to `align` (a power of
    /// two); null if the OS refuses.
    fn map(&self, size: usize, align: usize) -> *mut u8;
    /// Returns a mapping (or a page-aligned part of one) to the OS.
    ///
    /// # Safety
    /// `[p, p+size)` was mapped by `map`, is not used afterwards.
    unsafe fn unmap(&self, p: *mut u8, size: usize);
    /// Drops the contents of `[p, p+size)` (page aligned) but keeps the range mapped;
    /// it reads as zeros afterwards and costs no resident memory until touched.
    ///
    /// # Safety
    /// The range lies inside a live mapping and holds nothing anyone still needs.
    unsafe fn purge(&self, p: *mut u8, size: usize);
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
    /// A monotonic clock in milliseconds, for purge delays.
    fn now_ms(&self) -> u64;
}

/// Linux: `mmap`, `munmap`, `madvise(MADV_DONTNEED)`, `mremap`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysOs;

// SAFETY: anonymous private mappings are fresh and zero-filled; MADV_DONTNEED on
// them makes later reads return zero pages; mmap results are aligned by trimming.
unsafe impl Os for SysOs {
    fn map(&self, size: usize, align: usize) -> *mut u8 {
        debug_assert!(size % OS_PAGE == 0 && align.is_power_of_two());
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
        // SAFETY: both trimmed ranges lie inside the mapping just made and are unused.
        unsafe {
            if head > 0 {
                libc::munmap(raw.cast(), head);
            }
            if tail > 0 {
                libc::munmap((start + size) as *mut libc::c_void, tail);
            }
        }
        start as *mut u8
    }

    unsafe fn unmap(&self, p: *mut u8, size: usize) {
        // SAFETY: the caller passes a range it mapped and no longer uses.
        unsafe {
            libc::munmap(p.cast(), size);
        }
    }

    unsafe fn purge(&self, p: *mut u8, size: usize) {
        // SAFETY: the caller passes a range inside a live mapping whose contents are
        // dead; MADV_DONTNEED on private anonymous memory zero-fills it on next touch.
        unsafe {
            libc::madvise(p.cast(), size, libc::MADV_DONTNEED);
        }
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
        debug_assert!(at % OS_PAGE == 0 && 0 < at && at < size && p as usize % OS_PAGE == 0);
    }

    fn now_ms(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we pass; the coarse clock is a
        // vDSO read with millisecond-ish resolution, enough for purge delays.
        unsafe {
            libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
        }
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
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
    // SAFETY: clock_gettime writes `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
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
