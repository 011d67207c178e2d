//! The C ABI (cargo feature `c-abi`): `malloc` and friends with glibc's semantics,
//! so that `LD_PRELOAD=libstrata.so` replaces the allocator of any program.
//!
//! - Every block is 16-byte aligned (glibc's `max_align_t` promise), so sizes are
//!   rounded to 16 before the class lookup.
//! - `free`, `realloc` and `malloc_usable_size` find a block by address: the chunk
//!   map and page map for chunk memory, the huge registry for own mappings. A pointer
//!   that is not the start of a block of ours is never read through: `free` ignores
//!   it, `realloc` fails with `ENOMEM`, `malloc_usable_size` returns 0, and
//!   `bad_free` reports it on stderr as `STRATA_BAD_FREE` says. With the `checked`
//!   feature `free` and `realloc` abort with a report instead (see `checked`).
//! - Nothing here needs initialising: the statics are built at compile time and the
//!   first call from any thread (even from inside `dlsym` or `pthread_create`) takes
//!   the ordinary slow path. The library's load-time constructor (`settings.rs`, the
//!   same one a Rust program runs) reads `STRATA_*` from `envp` without allocating,
//!   and in this build also registers the fork handlers (unless the first thread
//!   heap did already: once per process, see `global/fork.rs`) and reads
//!   `STRATA_BAD_FREE`.
//! - Fork: the prepare handler takes every allocator lock (in the lock order), the
//!   parent handler releases them, and the child releases them too, so a child
//!   forked while other threads allocate can allocate and exit. The handlers live in
//!   `global/fork.rs`: a Rust program without this feature registers them too.

use crate::global;
use crate::platform::{self, EINVAL, ENOMEM};
use crate::settings::print_stats;
// The allocation entry points behind the C functions: the plain ones, or, with the
// `checked` feature, `checked`'s, which validate every pointer (aborting with a
// report) and wrap every block in a canary and a trailer.
#[cfg(feature = "checked")]
use crate::checked as entry;
#[cfg(not(feature = "checked"))]
use crate::global as entry;
use core::ffi::{c_char, c_int, c_void};
use core::fmt::Write;
use core::ptr;

/// glibc's `malloc` alignment on x86-64 and aarch64.
const C_ALIGN: usize = 16;

#[inline(always)]
fn set_errno(e: c_int) {
    platform::set_errno(e);
}

/// `errno = ENOMEM` if `p` is null (the one in `global`, typed for C).
#[inline(always)]
fn enomem_if_null(p: *mut u8) -> *mut c_void {
    global::enomem_if_null(p).cast()
}

/// C `malloc`.
///
/// # Safety
/// Callable from C with any argument.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // The slow paths set errno on failure, so this is a plain tail call.
    entry::alloc_c(size).cast()
}

/// C `free`.
///
/// # Safety
/// `p` is null, or a live block from this allocator (anything else is ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // No null test here: `free_by_address` takes null too (the chunk map sends it to
    // the slow path, which ignores it), so the hot path pays nothing for it.
    // SAFETY: per the contract; a foreign pointer is ignored, not read.
    unsafe { entry::free_by_address(p.cast()) };
}

/// C `cfree` (an old alias of `free`).
///
/// # Safety
/// As for `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { free(p) }
}

/// C `calloc`: `n * size` zeroed bytes; `ENOMEM` on overflow.
///
/// # Safety
/// Callable from C with any argument.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(bytes) => enomem_if_null(entry::alloc_bytes(bytes, C_ALIGN, true)),
        None => enomem_if_null(ptr::null_mut()),
    }
}

/// C `realloc`, as glibc: null `p` is `malloc`; size 0 frees `p` and returns null.
///
/// # Safety
/// `p` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: callable with any size.
        return unsafe { malloc(size) };
    }
    if size == 0 {
        // SAFETY: per the contract.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    // SAFETY: per the contract; a foreign `p` gives null and stays untouched.
    enomem_if_null(unsafe { entry::realloc_by_address(p.cast(), size, C_ALIGN) })
}

/// C `reallocarray`: `realloc(p, n * size)` with an overflow check (`ENOMEM`).
///
/// # Safety
/// As for `realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded contract.
        Some(bytes) => unsafe { realloc(p, bytes) },
        None => enomem_if_null(ptr::null_mut()),
    }
}

/// Allocates with an alignment that is already a valid power of two.
fn alloc_aligned(align: usize, size: usize) -> *mut u8 {
    entry::alloc_bytes(size, align.max(C_ALIGN), false)
}

/// C `posix_memalign`: `EINVAL` unless `align` is a power of two multiple of
/// `sizeof(void *)`; `ENOMEM` (and `*memptr` untouched) on failure.
///
/// # Safety
/// `memptr` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return EINVAL;
    }
    let p = alloc_aligned(align, size);
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: the caller gives a writable `memptr`.
    unsafe { *memptr = p.cast() };
    0
}

/// Rounds an alignment up to a power of two as glibc 2.36's `memalign` does;
/// None (`EINVAL`) if that overflows.
fn glibc_alignment(align: usize) -> Option<usize> {
    // glibc's limit: beyond 2^63 no power of two fits (EINVAL); up to it the
    // allocation itself then fails (ENOMEM).
    if align > usize::MAX / 2 + 1 {
        None
    } else {
        Some(align.max(1).next_power_of_two())
    }
}

/// C `memalign` (glibc: a non-power-of-two alignment is rounded up).
///
/// # Safety
/// Callable from C with any argument.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match glibc_alignment(align) {
        Some(a) => enomem_if_null(alloc_aligned(a, size)),
        None => {
            set_errno(EINVAL);
            ptr::null_mut()
        }
    }
}

/// C11 `aligned_alloc`; accepts what glibc 2.36 accepts (any alignment, rounded up
/// to a power of two, like `memalign`).
///
/// # Safety
/// Callable from C with any argument.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { memalign(align, size) }
}

/// The OS page size (`valloc` and `pvalloc` align to it, as glibc's do).
fn os_page() -> usize {
    platform::page_size()
}

/// C `valloc`: page-aligned `malloc`.
///
/// # Safety
/// Callable from C with any argument.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    enomem_if_null(alloc_aligned(os_page(), size))
}

/// C `pvalloc`: page-aligned, size rounded up to whole pages (at least one).
///
/// # Safety
/// Callable from C with any argument.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(os_page()) {
        Some(s) => enomem_if_null(alloc_aligned(os_page(), s)),
        None => enomem_if_null(ptr::null_mut()),
    }
}

/// C `malloc_usable_size`: the bytes the caller may use; 0 for null or a pointer
/// that is not ours.
///
/// # Safety
/// `p` is null or a live block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    // Checked mode: exactly the requested size; aborts on a pointer that is not live.
    #[cfg(feature = "checked")]
    return crate::checked::malloc_usable_size(p.cast());
    #[cfg(not(feature = "checked"))]
    global::BACKEND.usable_size(p.cast()).unwrap_or(0)
}

/// glibc's `malloc_trim`: returns free memory to the OS now (strata releases
/// everything it can, whatever `pad`). Returns 1 if memory was released.
///
/// # Safety
/// Callable from C with any argument.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_trim(_pad: usize) -> c_int {
    (crate::release_memory() > 0) as c_int
}

macro_rules! libc_alias {
    ($alias:ident => $target:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty) => {
        #[doc = concat!("glibc's internal alias of `", stringify!($target), "`.")]
        ///
        /// # Safety
        #[doc = concat!("As for `", stringify!($target), "`.")]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $alias($($arg: $ty),*) -> $ret {
            // SAFETY: forwarded contract.
            unsafe { $target($($arg),*) }
        }
    };
}

libc_alias!(__libc_malloc => malloc(size: usize) -> *mut c_void);
libc_alias!(__libc_free => free(p: *mut c_void) -> ());
libc_alias!(__libc_calloc => calloc(n: usize, size: usize) -> *mut c_void);
libc_alias!(__libc_realloc => realloc(p: *mut c_void, size: usize) -> *mut c_void);
libc_alias!(__libc_memalign => memalign(align: usize, size: usize) -> *mut c_void);
libc_alias!(__libc_valloc => valloc(size: usize) -> *mut c_void);
libc_alias!(__libc_pvalloc => pvalloc(size: usize) -> *mut c_void);
libc_alias!(__posix_memalign => posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int);

/// Returns every free page to the OS now (see `strata::release_memory`); returns the
/// bytes released.
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strata_release_memory() -> usize {
    crate::release_memory()
}

/// Starts (`enable` non-zero) or stops the background purge thread (see
/// `strata::start_background_purge`). Returns 1 if it runs after the call, else 0.
///
/// # Safety
/// Callable from C at any time (not from a signal handler: it may create a thread).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strata_background_purge(enable: c_int) -> c_int {
    if enable != 0 {
        crate::start_background_purge() as c_int
    } else {
        crate::stop_background_purge();
        0
    }
}

/// Prints the allocator's counters to stderr.
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strata_stats_print() {
    print_stats();
}

/// Checked mode: prints the live blocks by size class to stderr (as
/// `STRATA_LEAK_REPORT=1` does at exit) and returns their number.
///
/// # Safety
/// Callable from C at any time.
#[cfg(feature = "checked")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strata_leak_report() -> usize {
    crate::checked::print_leak_report().total().blocks
}

/// Writes the heap map (see `strata::heap_map`) as SVG to the file `path`, replacing
/// it. Returns 0, or -1 with `errno` set (`EINVAL` for a null `path`, else the
/// error of opening or writing the file).
///
/// # Safety
/// `path` is null or a NUL-terminated string. Callable from C at any time but from
/// a signal handler (it allocates, and holds every class and page-heap lock while
/// it copies the heap).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strata_heap_map_write(path: *const c_char) -> c_int {
    if path.is_null() {
        set_errno(EINVAL);
        return -1;
    }
    // SAFETY: a NUL-terminated string (contract).
    let path = unsafe { core::ffi::CStr::from_ptr(path) };
    match crate::heap_map::write_file(path) {
        Ok(()) => 0,
        Err(e) => {
            set_errno(e.0);
            -1
        }
    }
}

/// A `fmt::Write` into a caller's buffer that counts what did not fit, like
/// `snprintf`.
struct CBuf {
    buf: *mut u8,
    cap: usize,
    len: usize,
}

impl Write for CBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.cap.saturating_sub(1).saturating_sub(self.len);
        let n = s.len().min(room);
        if n > 0 {
            // SAFETY: `buf` has `cap` writable bytes (caller's contract) and
            // `len + n <= cap - 1`.
            unsafe { ptr::copy_nonoverlapping(s.as_ptr(), self.buf.add(self.len), n) };
        }
        self.len += s.len();
        Ok(())
    }
}

/// Writes [`crate::Stats`] as one JSON object into `buf` (at most `len` bytes, NUL
/// included) and returns the length of the whole JSON text, like `snprintf`: a
/// return value `>= len` means the output was cut (call again with more room).
/// `buf` may be null when `len` is 0 (to ask for the size).
///
/// # Safety
/// `buf` points to `len` writable bytes (or `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strata_stats_json(buf: *mut c_char, len: usize) -> usize {
    let stats = crate::stats();
    let mut w = CBuf {
        buf: buf.cast(),
        cap: if buf.is_null() { 0 } else { len },
        len: 0,
    };
    let _ = stats.write_json(&mut w);
    if w.cap > 0 {
        // SAFETY: `min(len, cap - 1) < cap`, inside the caller's buffer.
        unsafe { *w.buf.add(w.len.min(w.cap - 1)) = 0 };
    }
    w.len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_alignments_round_up_to_powers_of_two() {
        assert_eq!(glibc_alignment(0), Some(1));
        assert_eq!(glibc_alignment(3), Some(4));
        assert_eq!(glibc_alignment(4096), Some(4096));
        assert_eq!(glibc_alignment(usize::MAX), None);
        assert_eq!(
            glibc_alignment((1 << 62) + 1),
            Some(1 << 63),
            "ENOMEM later, as glibc"
        );
        assert_eq!(glibc_alignment((1 << 63) + 1), None);
    }
}
