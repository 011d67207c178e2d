//! Everything strata needs from the operating system, behind one portable
//! interface: the bottom tier, which imports nothing else from the crate.
//!
//! The rest of the crate calls only what this file declares: the [`Os`] trait for
//! address space (map, unmap, remap, split, purge, each failure an [`OsError`] to a
//! caller that decides) and the monotonic clock; the OS page size, read once
//! ([`page_size`]); the thread's heap slot ([`thread_slot!`]); the thread-exit hook
//! ([`thread_key_create`]); `errno`; a futex for the locks; process and thread
//! identity; the calling thread's stack bounds; exit, load-time and fork hooks;
//! writes to a file descriptor or a C `FILE *`; `abort`; and 64 random bits.
//! Nothing here allocates or panics: every function may run under `malloc`.
//!
//! # One file per operating system
//! The definitions live in one file per OS, `linux.rs` today, the only file of the
//! crate that names `libc`. Another OS is one more file beside it, selected in the
//! `cfg` block below, that defines the same items with the contracts written here:
//! - `SysOs` (an [`Os`]) and `page_size_from_os`;
//! - `errno`, `set_errno`, and the constants `ENOMEM`, `EINVAL`, `EIO` (and
//!   `SIGABRT` for tests);
//! - `futex_wait`, `futex_wake_one`, `yield_now`;
//! - `process_id`, `thread_token`, `current_stack`;
//! - `ThreadKey`, `thread_key_create`, `thread_key_set`;
//! - `register_fork_hooks`, `at_exit`, the `load_time_constructor!` macro;
//! - `write_fd`, `file_write`, `abort`, `entropy_u64`;
//! - in a `services` submodule: `spawn_detached`, `set_thread_name`, `sleep_ms`,
//!   `create_file`, `close_fd`, `error_text` (see `services.rs`: what std would
//!   give the parts above the allocator);
//! - optionally a `thread_slot!` of its own (an initial-exec TLS sequence, as the
//!   x86-64 Linux one); without one, the portable slot in this file is used.
//!
//! An unsupported target stops the build with a `compile_error!` that names this list.
//! (The same split as mimalloc's `prim/` and snmalloc's PALs; the code is our own.)

// Under loom only the `Os` parts are used: the rest serves the global allocator,
// which loom builds leave out.
#![cfg_attr(strata_loom, allow(dead_code, unused_imports, unused_macros))]

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as sys;
/// Restartable sequences, membarrier and the CPU count, for the per-CPU front end.
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
pub(crate) use linux::rseq_x86_64 as rseq;

/// Threads, sleeps and files for the parts above the allocator.
#[cfg(not(strata_loom))]
mod services;
#[cfg(not(strata_loom))]
pub(crate) use services::*;

#[cfg(not(target_os = "linux"))]
compile_error!(
    "strata has no platform layer for this target: add src/platform/<os>.rs defining \
     SysOs, page_size_from_os, errno/set_errno, ENOMEM/EINVAL/EIO, futex_wait/\
     futex_wake_one/yield_now, process_id/thread_token/current_stack, ThreadKey/\
     thread_key_create/thread_key_set, register_fork_hooks/at_exit/\
     load_time_constructor!, write_fd/file_write/abort and entropy_u64, and a \
     services module (see src/platform/mod.rs and services.rs), and select it there"
);

pub(crate) use sys::ENOMEM;
pub use sys::SysOs;
// Used by the C ABI and the test doubles only.
#[cfg(not(strata_loom))]
pub(crate) use sys::ENAMETOOLONG;
#[allow(unused_imports)]
pub(crate) use sys::{EINVAL, EIO};

#[cfg(test)]
pub(crate) use sys::SIGABRT;

use core::ffi::c_void;
// The page-size cache is not modelled by loom (one idempotent value), so it uses
// core's atomics even in loom builds, where `crate::sync` would hand out loom's.
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

// ---- address space ---------------------------------------------------------------

/// The granule the page heap maps and purges in: 4 KiB, the base page of x86-64 and
/// of most aarch64 kernels. The OS's own page may be larger (16 or 64 KiB on some
/// aarch64 and ppc64 kernels): that is [`page_size`].
pub const OS_PAGE: usize = 4096;

/// An OS call's failure: the `errno` it left (or the error number it returned).
/// Every fallible [`Os`] method hands it to its caller, which decides: the page heap
/// and the huge path mark nothing "zeroed", "purged" or "unmapped" on one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OsError(pub i32);

impl OsError {
    /// The calling thread's `errno`, as the failed call left it.
    pub(crate) fn last() -> OsError {
        OsError(sys::errno())
    }
}

/// What strata needs from the operating system's memory manager.
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
    /// Maps `size` bytes (a multiple of [`Os::page_size`]) aligned to `align` (a
    /// power of two); null if the OS refuses.
    fn map(&self, size: usize, align: usize) -> *mut u8;
    /// Returns a mapping (or a page-aligned part of one) to the OS. On `Err` (Linux:
    /// `ENOMEM` when splitting a mapping would pass `vm.max_map_count`) the range is
    /// still mapped and still the caller's.
    ///
    /// # Safety
    /// `[p, p+size)` was mapped by `map`, is not used afterwards (if it is unmapped).
    unsafe fn unmap(&self, p: *mut u8, size: usize) -> Result<(), OsError>;
    /// Drops the contents of `[p, p+size)` (both ends multiples of
    /// [`Os::page_size`]: Linux refuses a start that is not, and rounds a length up,
    /// over whatever follows) but keeps the range mapped;
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
    /// Whether [`Os::move_to`] can work (false: the caller never calls it).
    #[inline]
    fn can_move(&self) -> bool {
        false
    }
    /// Moves the pages of `[p, p+size)` (contents and residency, no copy) to
    /// `[dst, dst+size)`, which they replace; `[p, p+size)` is no longer mapped
    /// afterwards. On `Err` the source is untouched and still the caller's, but the
    /// destination may have been unmapped already (Linux before 6.17 checks a source
    /// that spans several mappings only after that): it is no longer the caller's
    /// and must not be touched or unmapped. The default refuses (`can_move` false).
    ///
    /// # Safety
    /// `[p, p+size)` and `[dst, dst+size)` are disjoint ranges of whole OS pages of
    /// live mappings of the caller's from `map`, `remap` or `split` (each may span
    /// several of them), that nobody else uses.
    unsafe fn move_to(&self, p: *mut u8, size: usize, dst: *mut u8) -> Result<(), OsError> {
        let _ = (p, size, dst);
        Err(OsError(0))
    }
    /// A monotonic clock in milliseconds, for purge delays; `Err` if it cannot be read.
    fn now_ms(&self) -> Result<u64, OsError>;
    /// The granule of `map`, `purge`, `unmap` and `split`, a power of two: the OS
    /// page ([`page_size`], read at start-up, at least [`OS_PAGE`]) by default; a
    /// test double may use a smaller one.
    /// Callers round mapping lengths up to it and purge only whole pages of it.
    #[inline]
    fn page_size(&self) -> usize {
        page_size()
    }
}

// ---- page size -------------------------------------------------------------------

/// The OS page size, once read; 0 until then.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The OS's page size in bytes: a power of two, at least [`OS_PAGE`]. Read from
/// the OS on the first call (Linux: the auxiliary vector's `AT_PAGESZ`) and cached;
/// every later call is one load. In the crate's unit tests, `override_page_size`
/// can make the calling thread see another size.
#[inline]
pub fn page_size() -> usize {
    #[cfg(test)]
    if let Some(p) = test_page_size::get() {
        return p;
    }
    // Relaxed: every thread computes the same value; the cache publishes nothing else.
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => page_size_slow(),
        p => p,
    }
}

#[cold]
#[inline(never)]
fn page_size_slow() -> usize {
    let mut p = sys::page_size_from_os();
    // A testing aid: pretend the OS page is larger, to run the suite as on a
    // 16 KiB or 64 KiB kernel. Only a larger power of two (up to 1 MiB) is taken:
    // whole pages of it are whole pages of the real one, so every call stays valid.
    // SAFETY: `environment()` is null or the process's environment block.
    let forced = unsafe { crate::env::getenv_raw(environment(), b"STRATA_TEST_PAGE_SIZE") };
    if let Some(forced) = forced.and_then(crate::env::parse_size) {
        if forced.is_power_of_two() && forced > p as u64 && forced <= 1 << 20 {
            p = forced as usize;
        }
    }
    // A page size that is not a power of two of at least 4 KiB would break every
    // alignment computation built on it: refuse to go on rather than corrupt the heap.
    if !p.is_power_of_two() || p < OS_PAGE {
        fatal!("the OS reports a page size that is not a power of two >= 4096");
    }
    PAGE_SIZE.store(p, Ordering::Relaxed);
    p
}

/// The process's environment block (null if there is none), for
/// `env::getenv_raw`: what code that runs before `main` or inside `malloc` reads
/// its settings from, without allocating.
#[inline]
pub(crate) fn environment() -> *const *const core::ffi::c_char {
    sys::environment()
}

/// Makes [`page_size`] return `size` on the calling thread until the guard is
/// dropped (unit tests only: to run page-size-dependent code as on a 16 KiB or
/// 64 KiB kernel). Per thread, so that tests running at the same time in the same
/// process are not affected; threads a test spawns see the real size.
#[cfg(test)]
pub(crate) fn override_page_size(size: usize) -> PageSizeOverride {
    assert!(
        size.is_power_of_two() && size >= OS_PAGE,
        "not a page size: {size}"
    );
    PageSizeOverride(test_page_size::replace(Some(size)))
}

/// Restores the page size a thread saw before [`override_page_size`].
#[cfg(test)]
#[must_use = "the override ends when the guard is dropped"]
pub(crate) struct PageSizeOverride(Option<usize>);

#[cfg(test)]
impl Drop for PageSizeOverride {
    fn drop(&mut self) {
        test_page_size::replace(self.0);
    }
}

#[cfg(test)]
mod test_page_size {
    use core::cell::Cell;

    std::thread_local! {
        // Const-initialised, no destructor: a bare TLS slot, safe under malloc.
        static OVERRIDE: Cell<Option<usize>> = const { Cell::new(None) };
    }

    #[inline]
    pub(super) fn get() -> Option<usize> {
        OVERRIDE.with(Cell::get)
    }

    pub(super) fn replace(v: Option<usize>) -> Option<usize> {
        OVERRIDE.with(|o| o.replace(v))
    }
}

// ---- errno -----------------------------------------------------------------------

/// The calling thread's `errno`.
#[allow(dead_code)] // part of the interface; today only `OsError::last` and tests read it
#[inline]
pub(crate) fn errno() -> i32 {
    sys::errno()
}

/// Sets the calling thread's `errno` (the C entry points report failures with it).
#[inline(always)]
pub(crate) fn set_errno(e: i32) {
    sys::set_errno(e)
}

// ---- futex and scheduling --------------------------------------------------------

/// Sleeps while `*word == expected` (checked atomically with going to sleep), or
/// until woken by [`futex_wake_one`]; may also return spuriously, so callers loop.
/// Process-private: the word is never shared with another process.
#[inline]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    sys::futex_wait(word, expected)
}

/// Wakes at most one thread sleeping in [`futex_wait`] on `word`.
#[inline]
pub(crate) fn futex_wake_one(word: &AtomicU32) {
    sys::futex_wake_one(word)
}

/// Gives the CPU to another runnable thread, if any.
#[inline]
pub(crate) fn yield_now() {
    sys::yield_now()
}

// ---- process and thread identity -------------------------------------------------

/// The calling process's id (differs in a forked child).
#[inline]
pub(crate) fn process_id() -> u32 {
    sys::process_id()
}

/// The calling thread's OS thread id (Linux: `gettid`, one system call).
#[inline]
pub(crate) fn thread_id() -> u32 {
    sys::thread_id()
}

/// Whether thread `tid` of this process is blocked in an interruptible wait
/// inside a system call (where idle threads sleep: a futex, `poll`, `read`, a
/// sleep; not a page fault, not the freezer's stop after an interrupt); None if
/// the OS cannot say. Does not allocate; a few system calls.
#[inline]
pub(crate) fn thread_sleeping(tid: u32) -> Option<bool> {
    sys::thread_sleeping(tid)
}

/// A number that differs between threads alive at the same time and is cheap to
/// read (Linux: the thread pointer); for spreading threads over shards, not an OS
/// thread id.
#[cfg_attr(not(feature = "checked"), allow(dead_code))]
#[inline]
pub(crate) fn thread_token() -> usize {
    sys::thread_token()
}

/// The calling thread's stack, as `[low, high)`; None if the OS cannot say without
/// allocating. The main thread's extends down from its top by the stack limit.
#[cfg_attr(
    not(all(feature = "c-abi", not(feature = "checked"))),
    allow(dead_code)
)]
#[inline]
pub(crate) fn current_stack() -> Option<(usize, usize)> {
    sys::current_stack()
}

// ---- the thread's heap slot ------------------------------------------------------

/// The portable thread slot: a const-initialised `Cell` with no destructor, which
/// std turns into a bare TLS slot (no registration, no allocation). Used where the
/// OS file brings no faster sequence of its own (and, with `--cfg
/// strata_portable_tls`, on x86-64 Linux too, so that CI compiles and tests it).
/// See [`thread_slot!`] for the contract.
#[allow(unused_macros)]
macro_rules! portable_thread_slot {
    ($vis:vis mod $name:ident: *mut $t:ty = $init:path;) => {
        $vis mod $name {
            #[allow(unused_imports)]
            use super::*;

            std::thread_local! {
                static SLOT: core::cell::Cell<*mut $t> =
                    const { core::cell::Cell::new(&$init as *const $t as *mut $t) };
            }

            /// The calling thread's value.
            #[inline(always)]
            pub(crate) fn get() -> *mut $t {
                SLOT.with(|s| s.get())
            }

            /// Sets the calling thread's value.
            #[inline(always)]
            pub(crate) fn set(v: *mut $t) {
                SLOT.with(|s| s.set(v));
            }
        }
    };
}

/// Declares the process's one thread slot: `thread_slot!(pub(crate) mod name: *mut
/// T = INIT;)` makes a module `name` with `get() -> *mut T` and `set(*mut T)`, both
/// `#[inline(always)]`. Every thread's slot starts as `&INIT` (a `static` of type
/// `T`), without any code running at thread start; the slot needs no registration,
/// never allocates, and has no destructor. `get` is the hottest instruction
/// sequence of the allocator (two loads on x86-64 Linux). Use it once per binary:
/// the x86-64 Linux version defines a fixed symbol.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(strata_portable_tls)))]
pub(crate) use linux::thread_slot;
/// See the other cfg of this item.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(strata_portable_tls))))]
pub(crate) use portable_thread_slot as thread_slot;
// The portable slot is std's `thread_local!` (stable Rust has no other TLS but
// inline assembly): a build without std needs the x86-64 Linux slot.
#[cfg(all(
    not(any(feature = "std", test, strata_loom)),
    not(all(target_arch = "x86_64", target_os = "linux", not(strata_portable_tls)))
))]
compile_error!(
    "strata without its `std` feature has a thread slot only on x86-64 Linux (without \
     --cfg strata_portable_tls): turn `std` on for this target (capi/Cargo.toml does)"
);

// ---- thread exit -----------------------------------------------------------------

/// A key whose destructor runs when a thread with a non-null value for it exits
/// (a pthread key on Linux), after the thread's `thread_local!` destructors.
pub(crate) use sys::ThreadKey;

/// Creates a [`ThreadKey`] whose destructor is `dtor`, called at thread exit with the
/// thread's value (if not null). Does not allocate. `Err` if the OS has no key left.
#[inline]
pub(crate) fn thread_key_create(
    dtor: unsafe extern "C" fn(*mut c_void),
) -> Result<ThreadKey, OsError> {
    sys::thread_key_create(dtor)
}

/// Sets the calling thread's value of `key` (null: no destructor call at exit).
/// May allocate (glibc, for keys beyond the first 32): call it where `malloc` works.
#[inline]
pub(crate) fn thread_key_set(key: ThreadKey, value: *const c_void) -> Result<(), OsError> {
    sys::thread_key_set(key, value)
}

/// The calling thread's value of `key` (null if it set none).
#[inline]
pub(crate) fn thread_key_get(key: ThreadKey) -> *mut c_void {
    sys::thread_key_get(key)
}

// ---- process hooks ---------------------------------------------------------------

/// Registers fork handlers: `prepare` runs in the forking thread before the fork,
/// `parent` and `child` after it on each side. `Err` (`ENOMEM`) if the C library
/// could not record them. May take the C library's fork lock: never call it with a
/// lock held that `prepare` takes.
#[inline]
pub(crate) fn register_fork_hooks(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> Result<(), OsError> {
    sys::register_fork_hooks(prepare, parent, child)
}

/// Runs `f` at normal process exit (`exit`, return from `main`). `Err` if it could
/// not be recorded. May allocate.
#[inline]
pub(crate) fn at_exit(f: extern "C" fn()) -> Result<(), OsError> {
    sys::at_exit(f)
}

/// `load_time_constructor!(f)`: runs `unsafe fn f(envp: *const *const c_char)` when
/// the library is loaded, before `main`, with the process's environment block (or
/// null if the OS does not pass one); `f` must accept a null `envp`.
pub(crate) use linux::load_time_constructor;

// ---- output and abort ------------------------------------------------------------

/// The standard error file descriptor.
pub(crate) const STDERR: i32 = 2;

/// Writes some of `bytes` to the file descriptor `fd`: the count written (0 only
/// for an empty slice), or the error. Retries on `EINTR`.
#[inline]
pub(crate) fn write_fd(fd: i32, bytes: &[u8]) -> Result<usize, OsError> {
    sys::write_fd(fd, bytes)
}

/// Writes `bytes` to the C stream `fp` (a `FILE *`); returns how many went in.
///
/// # Safety
/// `fp` is an open `FILE *`.
#[cfg(feature = "c-abi")]
#[inline]
pub(crate) unsafe fn file_write(fp: *mut c_void, bytes: &[u8]) -> usize {
    // SAFETY: forwarded contract.
    unsafe { sys::file_write(fp, bytes) }
}

/// Ends the process with `SIGABRT` at once (no unwinding, no exit handlers).
#[inline]
pub(crate) fn abort() -> ! {
    sys::abort()
}

/// Writes `strata: internal error: <what> (<file>:<line>)` to stderr in one write
/// and aborts: the end of a broken internal invariant found by `debug_check!` or
/// `fatal!`. It lives here, at the bottom, so that every tier (this one included)
/// may use those macros without importing anything above it; nothing is formatted
/// or allocated (it runs inside `malloc`/`free`, where a panic would unwind out of
/// `GlobalAlloc` or `extern "C"` code). Text longer than the 512-byte line is cut.
#[cold]
#[inline(never)]
pub fn internal_error(what: &str, file: &str, line: u32) -> ! {
    let mut buf = [0u8; 512];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if n < buf.len() - 1 {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"strata: internal error: ");
    put(what.as_bytes());
    put(b" (");
    put(file.as_bytes());
    put(b":");
    let mut digits = [0u8; 10];
    let mut rest = line;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    put(&digits[i..]);
    put(b")");
    buf[n] = b'\n';
    n += 1;
    let mut done = 0;
    while done < n {
        match write_fd(2, &buf[done..n]) {
            Ok(0) | Err(_) => break,
            Ok(k) => done += k,
        }
    }
    abort()
}

// ---- entropy ---------------------------------------------------------------------

/// 64 random bits for per-process secrets, without allocating or blocking; if the
/// OS's generator is unavailable, bits that still differ between processes.
#[inline]
pub fn entropy_u64() -> u64 {
    sys::entropy_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two_of_at_least_4k() {
        let p = page_size();
        assert!(p.is_power_of_two(), "{p}");
        assert!(p >= OS_PAGE, "{p}");
        assert_eq!(page_size(), p, "cached, the same every call");
    }

    #[test]
    fn page_size_is_what_sysconf_says() {
        if let Some(v) = std::env::var_os("STRATA_TEST_PAGE_SIZE") {
            // Forced larger for the run (as CI does): exactly the forced size.
            let forced = crate::env::parse_size(v.as_encoded_bytes()).unwrap() as usize;
            assert!(forced > linux::page_size_sysconf());
            assert_eq!(page_size(), forced);
        } else {
            assert_eq!(page_size(), linux::page_size_sysconf());
        }
    }

    #[test]
    fn page_size_override_is_per_thread_and_ends_with_its_guard() {
        let real = page_size();
        {
            let _g = override_page_size(16 << 10);
            assert_eq!(page_size(), 16 << 10);
            {
                let _g = override_page_size(64 << 10);
                assert_eq!(page_size(), 64 << 10);
                let other = std::thread::spawn(page_size).join().unwrap();
                assert_eq!(other, real, "another thread sees the real size");
            }
            assert_eq!(page_size(), 16 << 10, "nested overrides unwind in order");
        }
        assert_eq!(page_size(), real);
    }

    #[test]
    fn a_running_thread_is_not_sleeping_a_blocked_one_is_and_no_thread_is_unknown() {
        assert_eq!(
            thread_sleeping(thread_id()),
            Some(false),
            "this thread runs"
        );
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            tid_tx.send(thread_id()).unwrap();
            go_rx.recv().unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        assert_ne!(tid, thread_id());
        let start = std::time::Instant::now();
        while thread_sleeping(tid) != Some(true) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "a thread blocked on a channel never showed as sleeping"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        go_tx.send(()).unwrap();
        h.join().unwrap();
        assert_eq!(thread_sleeping(u32::MAX), None, "no such thread");
    }

    #[test]
    fn errno_reads_back_what_was_set() {
        set_errno(ENOMEM);
        assert_eq!(errno(), ENOMEM);
        set_errno(0);
        assert_eq!(errno(), 0);
    }

    #[test]
    fn the_clock_is_monotonic() {
        let a = SysOs.now_ms().unwrap();
        let b = SysOs.now_ms().unwrap();
        assert!(b >= a);
    }

    #[test]
    fn the_current_stack_holds_a_local() {
        let x = 0u8;
        let (lo, hi) = current_stack().unwrap();
        let a = &raw const x as usize;
        assert!(lo <= a && a < hi, "{lo:#x} <= {a:#x} < {hi:#x}");
        let other = std::thread::spawn(move || {
            let y = 0u8;
            let (lo2, hi2) = current_stack().unwrap();
            let b = &raw const y as usize;
            (lo2 <= b && b < hi2, lo2 <= a && a < hi2)
        })
        .join()
        .unwrap();
        assert_eq!(other, (true, false), "each thread sees its own stack");
    }

    #[test]
    fn thread_tokens_differ_between_live_threads() {
        let me = thread_token();
        let other = std::thread::spawn(thread_token).join().unwrap();
        assert_ne!(me, other);
        assert_eq!(process_id(), std::process::id());
    }
}
