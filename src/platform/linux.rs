//! Linux (glibc): with its submodules, the only file of the crate that names `libc`. Each item keeps the
//! contract written on its namesake in `platform/mod.rs`.

use super::{OS_PAGE, Os, OsError};
use core::ffi::c_char;
use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::AtomicU32;

#[cfg(all(target_arch = "x86_64", not(strata_loom)))]
pub(crate) mod rseq_x86_64;
#[cfg(not(strata_loom))]
pub(super) mod services;
#[cfg(all(target_arch = "x86_64", not(strata_portable_tls)))]
mod tls_x86_64;
#[cfg(target_arch = "x86_64")]
mod vdso_x86_64;
#[cfg(all(target_arch = "x86_64", not(strata_portable_tls)))]
pub(crate) use tls_x86_64::thread_slot;

/// Out of memory.
pub(crate) const ENOMEM: i32 = libc::ENOMEM;
/// Invalid argument.
#[allow(dead_code)] // C ABI and test doubles only
pub(crate) const EINVAL: i32 = libc::EINVAL;
/// Input/output error.
#[allow(dead_code)] // C ABI only
pub(crate) const EIO: i32 = libc::EIO;
/// File name too long.
pub(crate) const ENAMETOOLONG: i32 = libc::ENAMETOOLONG;
/// The signal `abort` raises.
#[cfg(test)]
pub(crate) const SIGABRT: i32 = libc::SIGABRT;

// ---- errno -----------------------------------------------------------------------

#[inline]
pub(super) fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for
    // the thread's lifetime.
    unsafe { *libc::__errno_location() }
}

#[inline(always)]
pub(super) fn set_errno(e: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e };
}

// ---- page size -------------------------------------------------------------------

/// The kernel's page size from the auxiliary vector (`AT_PAGESZ`, what glibc's
/// `sysconf` reads too, without its locale and option handling); `sysconf` if the
/// vector lacks it; 4 KiB if neither answers (every Linux port has at least that).
pub(super) fn page_size_from_os() -> usize {
    // SAFETY: getauxval only reads the auxiliary vector; 0 means "not present".
    let p = unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize;
    if p != 0 {
        return p;
    }
    match page_size_sysconf() {
        0 => OS_PAGE,
        p => p,
    }
}

unsafe extern "C" {
    /// The C library's environment block (POSIX `environ`).
    static environ: *const *const c_char;
}

/// The process's environment block, for `env::getenv_raw`; null if there is none.
/// Read once at set-up, with the same caveat as `getenv`: a `setenv` running at the
/// same time in another thread may reallocate the block under the reader.
pub(super) fn environment() -> *const *const c_char {
    // SAFETY: reading the C library's `environ` variable; an aligned pointer-sized
    // read, written by glibc only under `setenv`/`putenv`.
    unsafe { core::ptr::addr_of!(environ).read_volatile() }
}

/// `sysconf(_SC_PAGESIZE)`, 0 on failure.
pub(super) fn page_size_sysconf() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 0 }
}

// ---- address space ---------------------------------------------------------------

/// Linux: `mmap`, `munmap`, `madvise(MADV_DONTNEED)`, `mremap`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysOs;

// SAFETY: anonymous private mappings are fresh and zero-filled; MADV_DONTNEED on
// them makes later reads return zero pages; mmap results are aligned by trimming;
// a failed munmap or madvise leaves the range as it was (the kernel checks every
// argument, and the VMA limit, before it changes anything).
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
        // allow) would leave untracked pages on one side of the block, never to be
        // unmapped: give back what is left of the reservation instead and report no
        // memory, as the process is at its mapping limit anyway. If even that fails,
        // the rest stays reserved for good, but only as address space: never
        // touched, it holds no resident memory (only commit charge under strict
        // overcommit).
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

    fn can_move(&self) -> bool {
        true
    }

    unsafe fn move_to(&self, p: *mut u8, size: usize, dst: *mut u8) -> Result<(), OsError> {
        // SAFETY: per the contract both ranges are ours and disjoint; MREMAP_FIXED
        // replaces the destination, and a failure leaves the source as it was.
        let r = unsafe {
            libc::mremap(
                p.cast(),
                size,
                size,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                dst.cast::<libc::c_void>(),
            )
        };
        if r == libc::MAP_FAILED {
            Err(OsError::last())
        } else {
            Ok(())
        }
    }

    fn now_ms(&self) -> Result<u64, OsError> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // The coarse clock is a vDSO read with millisecond-ish resolution, enough for
        // purge delays; on x86-64 the vDSO's function is called directly, which
        // keeps libc's wrapper (and the 64 KiB of libc code the kernel maps around
        // it) out of the process (`vdso_x86_64`).
        #[cfg(target_arch = "x86_64")]
        vdso_x86_64::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts).map_err(OsError)?;
        #[cfg(not(target_arch = "x86_64"))]
        {
            // SAFETY: clock_gettime writes into the timespec we pass.
            let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
            if r != 0 {
                return Err(OsError::last());
            }
        }
        Ok(ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000)
    }
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

// ---- futex and scheduling --------------------------------------------------------

pub(super) fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind a live reference; the kernel
    // compares it with `expected` under its own lock before sleeping. Its result
    // (EAGAIN when the word changed, EINTR, a spurious wake-up) needs no handling:
    // the caller re-checks the word in a loop, as the contract says.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ptr::null::<libc::timespec>(),
        );
    }
}

pub(super) fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key. It cannot fail for a valid
    // private futex word; the count of woken threads is not needed.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

pub(super) fn yield_now() {
    // SAFETY: sched_yield has no preconditions and always succeeds on Linux.
    unsafe {
        libc::sched_yield();
    }
}

// ---- process and thread identity -------------------------------------------------

pub(super) fn process_id() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    (unsafe { libc::getpid() }) as u32
}

pub(super) fn thread_id() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    (unsafe { libc::syscall(libc::SYS_gettid) }) as u32
}

/// Whether thread `tid` of this process is asleep in a system call: state `S` in
/// `/proc/self/task/<tid>/stat` (an interruptible wait, where an idle thread
/// blocks: futex, poll, read, sleep), and then a system call number in
/// `/proc/self/task/<tid>/syscall` (a thread blocked in a page fault, such as one
/// on `userfaultfd` memory, or stopped by the cgroup freezer after an interrupt,
/// shows `-1` there: it may be anywhere in its code, and is refused). None if
/// either file cannot be read (no `/proc`, no such thread, a descriptor limit).
/// Opens, reads and closes the files with stack buffers: no allocation.
pub(super) fn thread_sleeping(tid: u32) -> Option<bool> {
    let mut buf = [0u8; 128];
    let text = read_task_file(tid, b"/stat", &mut buf)?;
    // "tid (comm) S ...": comm is at most 16 bytes, but may hold ')' and spaces,
    // so the state is the first field after the *last* ')' in the first 128 bytes.
    let close = text.iter().rposition(|&b| b == b')')?;
    if *text.get(close + 2)? != b'S' {
        return Some(false);
    }
    // "NR arg1 ... sp pc" in a system call, "-1 sp pc" blocked outside one,
    // "running" if it runs (it woke meanwhile).
    let mut buf = [0u8; 128];
    let text = read_task_file(tid, b"/syscall", &mut buf)?;
    Some(text.first().is_some_and(u8::is_ascii_digit))
}

/// Reads up to `buf.len()` bytes of `/proc/self/task/<tid><name>` into `buf`;
/// what was read, None if nothing could be.
fn read_task_file<'a>(tid: u32, name: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
    // "/proc/self/task/" + up to 10 digits + the name (at most 13) + NUL.
    let mut path = [0u8; 40];
    let prefix = b"/proc/self/task/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    let mut digits = [0u8; 10];
    let mut k = 0;
    let mut t = tid;
    loop {
        digits[k] = b'0' + (t % 10) as u8;
        k += 1;
        t /= 10;
        if t == 0 {
            break;
        }
    }
    while k > 0 {
        k -= 1;
        path[n] = digits[k];
        n += 1;
    }
    path.get_mut(n..n + name.len())?.copy_from_slice(name);
    if n + name.len() >= path.len() {
        return None;
    }
    // path[n + name.len()] is the NUL already.
    // Raw system calls, not libc's wrappers: a library that interposes `open`
    // may allocate, and the caller (the purge thread's drain) holds allocator
    // locks.
    // SAFETY: `path` is NUL-terminated; the flags open it read-only.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: reads at most buf.len() bytes into `buf`, from the descriptor above.
    let got = unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) };
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::syscall(libc::SYS_close, fd) };
    if got <= 0 {
        return None;
    }
    buf.get(..got as usize)
}

pub(super) fn thread_key_get(key: ThreadKey) -> *mut c_void {
    // SAFETY: a key from pthread_key_create (ThreadKey is only made from one).
    unsafe { libc::pthread_getspecific(key.0) }
}

#[cfg_attr(not(feature = "checked"), allow(dead_code))]
pub(super) fn thread_token() -> usize {
    // SAFETY: pthread_self has no preconditions (it reads the thread pointer).
    (unsafe { libc::pthread_self() }) as usize
}

unsafe extern "C" {
    /// The top of the main thread's stack (the dynamic loader's, glibc >= 2.1).
    static __libc_stack_end: *const c_void;
}

/// The main thread's stack from its top (`__libc_stack_end`) down by the stack limit
/// (8 MiB if unlimited or unknown); another thread's from `pthread_getattr_np`, which
/// for a thread other than the main one reads its descriptor and does not allocate
/// (for the main one it may read /proc and allocate, hence the special case).
#[cfg_attr(
    not(all(feature = "c-abi", not(feature = "checked"))),
    allow(dead_code)
)]
pub(super) fn current_stack() -> Option<(usize, usize)> {
    // SAFETY: getpid and gettid have no preconditions.
    let main = unsafe { libc::getpid() == libc::gettid() };
    if main {
        // SAFETY: a plain read of the loader's exported variable.
        let top = unsafe { __libc_stack_end } as usize;
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        let size = if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut rl) } == 0
            && rl.rlim_cur != libc::RLIM_INFINITY
        {
            rl.rlim_cur as usize
        } else {
            8 << 20
        };
        return Some((top.saturating_sub(size), top));
    }
    let mut attr = core::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_getattr_np initialises `attr` on success (and only then is it
    // read or destroyed); on a thread that is not the main one it copies the stack
    // bounds from the thread's descriptor (no allocation, no /proc read).
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let (mut addr, mut size) = (ptr::null_mut::<c_void>(), 0usize);
        let ok = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        ok.then(|| (addr as usize, addr as usize + size))
    }
}

// ---- thread exit -----------------------------------------------------------------

/// A pthread key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadKey(libc::pthread_key_t);

impl ThreadKey {
    /// The key as a `u32` (to keep it in an atomic).
    pub(crate) const fn to_bits(self) -> u32 {
        self.0
    }

    /// The key back from [`ThreadKey::to_bits`].
    pub(crate) const fn from_bits(bits: u32) -> ThreadKey {
        ThreadKey(bits)
    }
}

pub(super) fn thread_key_create(
    dtor: unsafe extern "C" fn(*mut c_void),
) -> Result<ThreadKey, OsError> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: pthread_key_create writes the key; it does not allocate. `dtor` lives
    // as long as the process (a function).
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(dtor)) };
    if rc == 0 {
        Ok(ThreadKey(key))
    } else {
        Err(OsError(rc))
    }
}

pub(super) fn thread_key_set(key: ThreadKey, value: *const c_void) -> Result<(), OsError> {
    // SAFETY: a key from pthread_key_create (ThreadKey is only made from one).
    let rc = unsafe { libc::pthread_setspecific(key.0, value) };
    if rc == 0 { Ok(()) } else { Err(OsError(rc)) }
}

// ---- process hooks ---------------------------------------------------------------

pub(super) fn register_fork_hooks(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> Result<(), OsError> {
    // SAFETY: three plain functions that live as long as the process. glibc keeps
    // the first 48 registrations in static storage; past that it may allocate.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if rc == 0 { Ok(()) } else { Err(OsError(rc)) }
}

pub(super) fn at_exit(f: extern "C" fn()) -> Result<(), OsError> {
    // SAFETY: a plain function that lives as long as the process.
    if unsafe { libc::atexit(f) } == 0 {
        Ok(())
    } else {
        // glibc's atexit fails only when it cannot allocate its record.
        Err(OsError(ENOMEM))
    }
}

/// Linux: an `.init_array` entry. glibc passes `(argc, argv, envp)` to them (the
/// ELF gABI promises no arguments, so this is glibc's extension, also musl's).
macro_rules! load_time_constructor {
    ($f:path) => {
        const _: () = {
            extern "C" fn __strata_load(
                _argc: core::ffi::c_int,
                _argv: *const *const core::ffi::c_char,
                envp: *const *const core::ffi::c_char,
            ) {
                // SAFETY: glibc passes the process's environment block.
                unsafe { $f(envp) };
            }

            #[used]
            #[unsafe(link_section = ".init_array")]
            static __STRATA_LOAD: extern "C" fn(
                core::ffi::c_int,
                *const *const core::ffi::c_char,
                *const *const core::ffi::c_char,
            ) = __strata_load;
        };
    };
}
pub(crate) use load_time_constructor;

// ---- output and abort ------------------------------------------------------------

pub(super) fn write_fd(fd: i32, bytes: &[u8]) -> Result<usize, OsError> {
    loop {
        // SAFETY: writes initialised bytes of the caller's slice.
        let r = unsafe { libc::write(fd as c_int, bytes.as_ptr().cast(), bytes.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = OsError::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// # Safety
/// `fp` is an open `FILE *`.
#[cfg(feature = "c-abi")]
pub(super) unsafe fn file_write(fp: *mut c_void, bytes: &[u8]) -> usize {
    // SAFETY: `fp` is an open stream (contract); `bytes` are initialised.
    unsafe { libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), fp.cast()) }
}

pub(super) fn abort() -> ! {
    // SAFETY: abort raises SIGABRT and does not return.
    unsafe { libc::abort() }
}

// ---- entropy ---------------------------------------------------------------------

/// `getrandom(2)` (non-blocking); if that fails (no entropy yet at early boot, a
/// seccomp filter), the kernel's 16 random bytes for this process (`AT_RANDOM`)
/// mixed with the clock and a stack address (ASLR), so two processes still differ.
pub(super) fn entropy_u64() -> u64 {
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
fn mix64(x: u64) -> u64 {
    let x = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let x = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}
