//! Everything the per-CPU front end (`crate::percpu`) asks of Linux and glibc on
//! x86-64, reached as `platform::rseq`: the thread pointer, glibc's rseq
//! registration symbols (looked up without a link-time reference), the `rseq` and `membarrier` system calls, the
//! possible-CPU count and the environment block. Nothing here allocates.

use core::arch::asm;
use core::ffi::c_char;

/// `rseq` or `membarrier` is not available (old kernel, seccomp).
pub(crate) const ENOSYS: i32 = libc::ENOSYS;
/// The thread already has an rseq area registered (glibc's, or ours).
pub(crate) const EBUSY: i32 = libc::EBUSY;

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

// The calling thread's own rseq area and its registration state, for threads
// that glibc registered no area for: 64 bytes of static TLS (the `.tdata` image,
// copied for every thread, so no code runs at thread start), 32-byte aligned as
// the kernel requires. Bytes 0..32 are an unregistered area as the kernel leaves
// one (`cpu_id_start` 0, `cpu_id` -1, the rest 0); byte 32 the state (0: not
// tried). A hidden symbol read with the initial-exec model, as the thread slot
// (`tls_x86_64.rs`): where std's `thread_local!` in a cdylib would call
// `__tls_get_addr`, and without std. It lives as long as the thread's TLS
// block, which glibc frees or reuses only after the kernel has reported the
// thread gone, so the kernel never writes to it for a thread that has exited.
core::arch::global_asm!(
    ".pushsection .tdata,\"awT\",@progbits",
    ".p2align 5",
    ".hidden __strata_rseq_tls",
    ".globl __strata_rseq_tls",
    ".type __strata_rseq_tls,@object",
    ".size __strata_rseq_tls,64",
    "__strata_rseq_tls:",
    ".long 0",
    ".long -1",
    ".zero 56",
    ".popsection",
);

/// Bytes of [`own_tls`] and where its state byte is.
pub(crate) const OWN_TLS_BYTES: usize = 64;
pub(crate) const OWN_TLS_STATE: usize = 32;

/// The calling thread's 64 bytes of own rseq TLS (see above): an unregistered
/// area at offset 0 until the thread registers it, the state byte at
/// [`OWN_TLS_STATE`] (0 at thread start). Valid while the thread runs; no other
/// thread reaches it but the kernel, through a registration.
#[inline(always)]
pub(crate) fn own_tls() -> *mut u8 {
    let p: usize;
    // SAFETY: the initial-exec TLS sequence for the symbol defined above: its
    // offset from the thread pointer, plus the thread pointer (`fs:0`, see
    // `thread_pointer`); reads no memory that could change.
    unsafe {
        asm!(
            "mov {p}, qword ptr [rip + __strata_rseq_tls@GOTTPOFF]",
            "add {p}, qword ptr fs:[0]",
            p = out(reg) p,
            options(nostack, readonly, pure),
        );
    }
    p as *mut u8
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
/// __rseq_size)`, or `None` where no loaded module defines them (glibc before
/// 2.35, another C library).
///
/// The two symbols are looked up at run time in the loaded modules' dynamic symbol
/// tables ([`find_dynamic_symbol`]), not referenced at link time: a link-time
/// reference, even a weak one, makes both LLD and GNU ld (binutils 2.40) record a
/// non-weak need for `GLIBC_2.35`, and the binary would then fail to load on an
/// older glibc. `dlsym` would also do, but may allocate (its error path), and this
/// runs under `malloc`. Both symbols are `const` in glibc (written once by the
/// dynamic linker before any user code runs), so reading them is fine.
pub(crate) fn glibc_rseq() -> Option<(isize, u32)> {
    let off = find_dynamic_symbol(b"__rseq_offset")? as *const isize;
    let size = find_dynamic_symbol(b"__rseq_size")? as *const u32;
    // SAFETY: the addresses of glibc's two read-only objects (a defined dynamic
    // symbol of a loaded module), initialised by the dynamic linker before any user
    // code ran and never unmapped (the dynamic linker is never unloaded).
    unsafe { Some((off.read(), size.read())) }
}

/// `DT_*` tags of the dynamic section (elf.h).
const DT_NULL: u64 = 0;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_GNU_HASH: u64 = 0x6fff_fef5;

/// An entry of a module's dynamic section (`Elf64_Dyn`).
#[repr(C)]
struct Dyn {
    tag: u64,
    val: u64,
}

/// The search state handed through `dl_iterate_phdr`.
struct Lookup<'a> {
    name: &'a [u8],
    found: usize,
}

/// The address of the defined dynamic symbol `name` in the first loaded module that
/// has one, found without allocating: `dl_iterate_phdr` (which takes the loader's
/// module-list lock, recursive, and allocates nothing) lists the modules, and each
/// module's `DT_GNU_HASH` table answers whether it defines `name`. Modules without a
/// GNU hash table (rare since 2010s toolchains) are skipped.
pub(crate) fn find_dynamic_symbol(name: &[u8]) -> Option<usize> {
    let mut l = Lookup { name, found: 0 };
    // SAFETY: the callback only reads the module data the loader hands it; `l`
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit_module), (&raw mut l).cast()) };
    (l.found != 0).then_some(l.found)
}

/// `dl_iterate_phdr` callback: looks the name up in one module; 1 stops the walk.
unsafe extern "C" fn visit_module(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut core::ffi::c_void,
) -> core::ffi::c_int {
    // SAFETY: `data` is the Lookup passed by find_dynamic_symbol; `info` describes a
    // loaded module and is valid during the callback.
    let (l, info) = unsafe { (&mut *data.cast::<Lookup<'_>>(), &*info) };
    // SAFETY: `info` describes a module loaded for the whole callback (dl_iterate_phdr
    // holds the loader lock), so its program headers and dynamic section are mapped.
    match unsafe { lookup_in_module(info, l.name) } {
        Some(addr) => {
            l.found = addr;
            1
        }
        None => 0,
    }
}

/// The GNU symbol hash (the `DT_GNU_HASH` function).
pub(crate) fn gnu_hash(name: &[u8]) -> u32 {
    name.iter()
        .fold(5381u32, |h, &c| h.wrapping_mul(33).wrapping_add(c as u32))
}

/// Looks `name` up in one module's dynamic symbol table through its GNU hash table.
///
/// # Safety
/// `info` describes a module that stays loaded during the call (the loader holds
/// its list lock while it runs the `dl_iterate_phdr` callback).
unsafe fn lookup_in_module(info: &libc::dl_phdr_info, name: &[u8]) -> Option<usize> {
    let base = info.dlpi_addr as usize;
    if info.dlpi_phdr.is_null() {
        return None;
    }
    // SAFETY: the loader's program headers of a loaded module: dlpi_phnum entries.
    let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let dynamic = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC)?;
    // glibc relocates the address entries of a module's dynamic section in place;
    // the vDSO's are left as link-time offsets. An address below the load base is an
    // offset.
    let fix = |v: u64| {
        if (v as usize) < base {
            base + v as usize
        } else {
            v as usize
        }
    };
    let (mut strtab, mut symtab, mut gnu) = (0usize, 0usize, 0usize);
    let mut d = (base + dynamic.p_vaddr as usize) as *const Dyn;
    // SAFETY: the module's mapped dynamic section, terminated by DT_NULL.
    unsafe {
        while (*d).tag != DT_NULL {
            match (*d).tag {
                DT_STRTAB => strtab = fix((*d).val),
                DT_SYMTAB => symtab = fix((*d).val),
                DT_GNU_HASH => gnu = fix((*d).val),
                _ => {}
            }
            d = d.add(1);
        }
    }
    if strtab == 0 || symtab == 0 || gnu == 0 {
        return None;
    }
    let h = gnu_hash(name);
    // SAFETY: the GNU hash table layout (4 words, then the Bloom filter of
    // `bloom_size` u64, `nbuckets` u32 buckets, then the chain array for symbols
    // from `symoffset` on); every index below stays within it for a well-formed
    // module, which the loader has already used to bind symbols.
    unsafe {
        let hdr = gnu as *const u32;
        let (nbuckets, symoffset, bloom_size, shift) =
            (*hdr, *hdr.add(1), *hdr.add(2), *hdr.add(3));
        if nbuckets == 0 || bloom_size == 0 {
            return None;
        }
        let bloom = hdr.add(4).cast::<u64>();
        let word = *bloom.add(((h / 64) % bloom_size) as usize);
        let mask = (1u64 << (h % 64)) | (1u64 << ((h >> shift) % 64));
        if word & mask != mask {
            return None;
        }
        let buckets = bloom.add(bloom_size as usize).cast::<u32>();
        let chain = buckets.add(nbuckets as usize);
        let mut sym = *buckets.add((h % nbuckets) as usize);
        if sym < symoffset {
            return None;
        }
        loop {
            let h2 = *chain.add((sym - symoffset) as usize);
            if (h | 1) == (h2 | 1) {
                let s = &*(symtab as *const libc::Elf64_Sym).add(sym as usize);
                let sname =
                    core::ffi::CStr::from_ptr((strtab + s.st_name as usize) as *const c_char);
                if sname.to_bytes() == name && s.st_shndx != 0 && s.st_value != 0 {
                    return Some(base + s.st_value as usize);
                }
            }
            if h2 & 1 != 0 {
                return None;
            }
            sym += 1;
        }
    }
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

/// The number of CPUs the calling thread may run on (its affinity mask, which
/// cgroup cpusets and `taskset` narrow), by `sched_getaffinity` into a stack set
/// (1,024 CPUs); `None` if the call fails (a mask wider than that set included).
pub(crate) fn usable_cpus() -> Option<u32> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return None;
    }
    // SAFETY: `set` was filled by the kernel above (a plain bit set).
    let n = unsafe { libc::CPU_COUNT(&set) };
    u32::try_from(n).ok().filter(|&n| n > 0)
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

/// Runs `f` pinned to the CPU the thread is on now (so that all its critical
/// sections see one CPU), passing that CPU; the old affinity is restored after.
#[cfg(test)]
pub(crate) fn pinned<R>(f: impl FnOnce(u32) -> R) -> R {
    // SAFETY: sched_getcpu has no preconditions; the cpu_set_t calls only read and
    // write the local sets.
    unsafe {
        let mut old: libc::cpu_set_t = core::mem::zeroed();
        libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut old);
        let cpu = libc::sched_getcpu() as usize;
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
        let r = f(cpu as u32);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &old);
        r
    }
}

/// `dlsym(RTLD_DEFAULT, name)` as an address, 0 if not found (tests only: it may
/// allocate).
#[cfg(test)]
pub(crate) fn dlsym_default(name: &core::ffi::CStr) -> usize {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}
