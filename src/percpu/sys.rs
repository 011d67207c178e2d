//! Everything the per-CPU front end asks of Linux and glibc, in one file so that it
//! can move into the platform layer as a whole: the thread pointer, glibc's rseq
//! registration symbols (weak), the `rseq` and `membarrier` system calls, the
//! possible-CPU count and the environment block. Nothing here allocates.

use core::arch::asm;
use core::ffi::c_char;

/// The signature the kernel checks in the 4 bytes before every abort handler, and
/// that a registration names. glibc registers with this value on x86-64 (its
/// `RSEQ_SIG`), so a critical section works under either registration.
pub(crate) const RSEQ_SIG: u32 = 0x5305_3053;

/// The size of the original `struct rseq` (the kernel's `ORIG_RSEQ_SIZE`): the
/// smallest area a registration may name, and all the fields the critical
/// sections use.
pub(crate) const RSEQ_ORIG_SIZE: u32 = 32;

/// The smallest `__rseq_size` glibc reports for a registration: glibc 2.35–2.39
/// report the area's size (32), later releases (and distribution backports, such as
/// Debian 12's 2.36) the size of the features the kernel supports, at least the 20
/// bytes of the original fields (`cpu_id_start`, `cpu_id`, `rseq_cs`, `flags`).
/// The critical sections use only bytes 4..16. 0 means glibc registered nothing.
pub(crate) const RSEQ_MIN_FEATURE_SIZE: u32 = 20;

/// `rseq(2)` flag that undoes a registration.
const RSEQ_FLAG_UNREGISTER: i32 = 1;

// membarrier(2) commands (include/uapi/linux/membarrier.h).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 7;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 8;
/// Restrict `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ` to the CPU in `cpu_id`.
const MEMBARRIER_CMD_FLAG_CPU: u32 = 1;

/// The calling thread's `errno` as an error value.
fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for the
    // thread's lifetime.
    unsafe { *libc::__errno_location() }
}

/// The thread pointer: on x86-64 Linux `fs:0` holds the address of the thread
/// control block itself (the TLS ABI's self pointer), and glibc's rseq area sits
/// at a fixed offset from it in every thread.
#[inline(always)]
pub(crate) fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: on x86-64 Linux every thread's fs base points at its TCB, whose first
    // word is the TCB's own address (the TLS ABI requires it); reading it has no
    // side effect.
    unsafe {
        asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    tp
}

/// glibc's rseq registration as the dynamic linker published it: `(__rseq_offset,
/// __rseq_size)`, or `None` where the C library has no such symbols (glibc before
/// 2.35, another C library).
///
/// The symbols are referenced *weakly*, from inside the asm that loads them: a weak
/// undefined symbol resolves to address 0 instead of failing the load.
/// (`#[linkage = "extern_weak"]` would say the same, but is unstable.) The `.weak`
/// directive sits in the same asm block as the only references to each symbol, so
/// no strong reference to them exists in any object file (a single strong
/// reference would make the symbol strong at link time). The address goes through
/// the GOT (`@GOTPCREL`), which works in a PIE, a non-PIE executable and a shared
/// library alike. Both symbols are `const` in glibc (written once by the dynamic
/// linker before any user code runs), so reading them any number of times is fine.
///
/// Limit: built against glibc < 2.35 the reference stays unversioned and the
/// binary loads on any glibc. Built against glibc >= 2.35, both LLD and GNU ld
/// (binutils 2.40) bind the symbols to `GLIBC_2.35` and record that version need
/// *without* `VER_FLG_WEAK`, so the binary then needs glibc >= 2.35 to load (a
/// build against glibc >= 2.34 already needs 2.34 for `pthread_key_create`). A
/// lookup that records no version need would walk the dynamic linker's `.dynsym`
/// through `dl_iterate_phdr` and its GNU hash table instead (not `dlsym`, which
/// may allocate).
pub(crate) fn glibc_rseq() -> Option<(isize, u32)> {
    let off_addr: *const isize;
    let size_addr: *const u32;
    // SAFETY: two GOT loads; the asm touches nothing else. `.weak` only changes how
    // the linker resolves the two names.
    unsafe {
        asm!(
            ".weak __rseq_offset",
            ".weak __rseq_size",
            "mov {o}, qword ptr [rip + __rseq_offset@GOTPCREL]",
            "mov {s}, qword ptr [rip + __rseq_size@GOTPCREL]",
            o = out(reg) off_addr,
            s = out(reg) size_addr,
            options(nostack, readonly, preserves_flags),
        );
    }
    if off_addr.is_null() || size_addr.is_null() {
        return None;
    }
    // SAFETY: non-null GOT entries are the addresses of glibc's two read-only
    // objects, initialised by the dynamic linker before any user code ran.
    unsafe { Some((off_addr.read(), size_addr.read())) }
}

/// Registers `area` (`RSEQ_ORIG_SIZE` bytes, 32-byte aligned) as the calling
/// thread's rseq area with signature [`RSEQ_SIG`]. `Err(errno)` if the kernel
/// refuses (`ENOSYS`: no rseq, or under valgrind; `EBUSY`: this thread already
/// has an area, someone else's; `EINVAL`: bad alignment or size).
///
/// # Safety
/// `area` points at memory of the thread's rseq layout that stays valid and is not
/// reused for anything else until the thread has exited or [`rseq_unregister`]
/// returned: the kernel writes it whenever this thread returns to user space.
pub(crate) unsafe fn rseq_register(area: *mut u8) -> Result<(), i32> {
    // SAFETY: the syscall reads its arguments only; the caller vouches for `area`.
    let r = unsafe { libc::syscall(libc::SYS_rseq, area, RSEQ_ORIG_SIZE, 0i32, RSEQ_SIG) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Ends the calling thread's registration of `area` (made by [`rseq_register`]).
///
/// # Safety
/// `area` is the area this thread registered, unchanged in length and signature.
pub(crate) unsafe fn rseq_unregister(area: *mut u8) -> Result<(), i32> {
    // SAFETY: the kernel checks that `area` is this thread's registered area.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rseq,
            area,
            RSEQ_ORIG_SIZE,
            RSEQ_FLAG_UNREGISTER,
            RSEQ_SIG,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Registers the process for `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`;
/// needed once before [`rseq_fence`]. `Err(errno)` where the kernel lacks it
/// (before 5.10) or forbids it.
pub(crate) fn membarrier_register_rseq() -> Result<(), i32> {
    // SAFETY: a registration command; no pointers involved.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
            0u32,
            0i32,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// The fence a non-owner needs before it touches a CPU's slab: when it returns, any
/// rseq critical section of this process that was running on `cpu` has been
/// aborted (restarted) or had committed, with a full memory barrier on that CPU,
/// so every later critical section there sees the caller's earlier stores.
pub(crate) fn rseq_fence(cpu: u32) -> Result<(), i32> {
    // SAFETY: a fence command; no pointers involved.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
            MEMBARRIER_CMD_FLAG_CPU,
            cpu as i32,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// The number of possible CPU ids (highest possible CPU + 1), parsed from
/// `/sys/devices/system/cpu/possible` (a list like `0-15` or `0,2-3`) with raw
/// `open`/`read` into a stack buffer: glibc's `sysconf(_SC_NPROCESSORS_CONF)`
/// walks a directory with `opendir`, which calls `malloc`. Every `cpu_id` the
/// kernel reports is below this bound (the kernel's `nr_cpu_ids`), unlike the
/// affinity mask, which can grow later. `None` if the file cannot be read.
pub(crate) fn possible_cpus() -> Option<u32> {
    let path = b"/sys/devices/system/cpu/possible\0";
    // SAFETY: a NUL-terminated path; the descriptor is closed below on every path.
    let fd = unsafe {
        libc::open(
            path.as_ptr().cast::<c_char>(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 256];
    // SAFETY: reads at most buf.len() bytes into the stack buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: fd was opened above and is not used again. A failed close of a
    // read-only file loses nothing.
    let _ = unsafe { libc::close(fd) };
    if n <= 0 {
        return None;
    }
    parse_cpu_list(&buf[..n as usize]).map(|max| max + 1)
}

/// The highest CPU number in a kernel CPU list (`0-3,8,10-11\n`), if it parses.
pub(crate) fn parse_cpu_list(s: &[u8]) -> Option<u32> {
    let mut max: Option<u32> = None;
    let mut cur: Option<u32> = None;
    for &b in s {
        match b {
            b'0'..=b'9' => {
                let d = (b - b'0') as u32;
                cur = Some(cur.unwrap_or(0).checked_mul(10)?.checked_add(d)?);
            }
            b',' | b'-' | b'\n' => {
                if let Some(c) = cur.take() {
                    max = Some(max.map_or(c, |m| m.max(c)));
                }
                if b == b'\n' {
                    break;
                }
            }
            _ => return None,
        }
    }
    if let Some(c) = cur {
        max = Some(max.map_or(c, |m| m.max(c)));
    }
    max
}

unsafe extern "C" {
    /// The C library's environment block (POSIX `environ`).
    static environ: *const *const c_char;
}

/// The process's environment block, for `env::getenv_raw`; null if there is none.
/// Read once at set-up, with the same caveat as `getenv`: a `setenv` running at the
/// same time in another thread may reallocate the block under the reader.
pub(crate) fn environment() -> *const *const c_char {
    // SAFETY: reading the C library's `environ` variable; an aligned pointer-sized
    // read, written by glibc only under `setenv`/`putenv`.
    unsafe { core::ptr::addr_of!(environ).read_volatile() }
}
