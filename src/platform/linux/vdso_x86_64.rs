//! The kernel's `clock_gettime` in the vDSO, called directly rather than through
//! libc's wrapper.
//!
//! Why: the clock is read at the first chunk and at every span freed, and libc's
//! `clock_gettime` wrapper lives in a part of libc's text that nothing else a small
//! program runs (glibc's own `malloc` included) touches. The kernel maps file pages
//! 64 KiB around each fault, so that one call costs up to 64 KiB of resident libc
//! code in every process; the wrapper only forwards to the vDSO function found
//! here, whose page is resident already (the C library's start-up reads it).
//!
//! The vDSO is a small ELF image the kernel maps into every process
//! (`AT_SYSINFO_EHDR`); its symbols are found through its dynamic section and its
//! SysV hash table's symbol count, which x86-64 kernels always emit
//! (`--hash-style=both`). Where anything is missing or odd (no vDSO, as under
//! valgrind; no hash table), libc's wrapper is used, as before.

use core::ffi::c_int;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The vDSO's `clock_gettime`: 0 until looked up, [`NONE`] if there is none, else
/// its address. Starts at 0 so that the process's statics stay all zero (`.bss`).
static CLOCK_GETTIME: AtomicUsize = AtomicUsize::new(0);
/// Looked up, not found: use libc's wrapper.
const NONE: usize = 1;

/// The vDSO function's type: 0, or a negated `errno` (the raw system call's return
/// when it falls back to the system call).
type ClockFn = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> c_int;

/// `clock_gettime(clock, ts)`: `Ok` or the `errno` of the failure.
pub(in crate::platform) fn clock_gettime(
    clock: libc::clockid_t,
    ts: &mut libc::timespec,
) -> Result<(), i32> {
    // Relaxed: the value is the same whichever thread computes it, and the code it
    // points at was mapped by the kernel before the process started.
    let mut f = CLOCK_GETTIME.load(Ordering::Relaxed);
    if f == 0 {
        f = lookup();
        CLOCK_GETTIME.store(f, Ordering::Relaxed);
    }
    let r = if f == NONE {
        // SAFETY: clock_gettime writes into the timespec we pass.
        match unsafe { libc::clock_gettime(clock, ts) } {
            0 => 0,
            _ => -super::errno(),
        }
    } else {
        // SAFETY: `f` is the vDSO's `__vdso_clock_gettime` (`lookup`), mapped for the
        // process's lifetime (forks keep it at the same address), with the C
        // signature of `clock_gettime`; it writes into the timespec we pass.
        unsafe { core::mem::transmute::<usize, ClockFn>(f)(clock, ts) }
    };
    if r == 0 { Ok(()) } else { Err(-r) }
}

/// Where the vDSO's `__vdso_clock_gettime` is; [`NONE`] if it cannot be found.
#[cold]
#[inline(never)]
fn lookup() -> usize {
    // SAFETY: getauxval only reads the auxiliary vector; 0 means "not present".
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if base == 0 {
        return NONE;
    }
    // SAFETY: a non-zero AT_SYSINFO_EHDR is the address of the vDSO's ELF image,
    // which the kernel maps readable, whole, for the process's lifetime.
    unsafe { find_symbol(base, b"__vdso_clock_gettime") }.unwrap_or(NONE)
}

// The ELF-64 fields read here, at their offsets in the standard structures.
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const STT_FUNC: u8 = 2;
/// Size of an `Elf64_Phdr`, `Elf64_Dyn` and `Elf64_Sym`.
const PHDR_SIZE: usize = 56;
const DYN_SIZE: usize = 16;
const SYM_SIZE: usize = 24;
/// More entries than any vDSO has: a bound on every walk, against a corrupt image.
const MAX_ENTRIES: usize = 4096;

/// Reads a `T` at `base + off`.
///
/// # Safety
/// `[base + off, base + off + size_of::<T>())` is readable.
unsafe fn at<T: Copy>(base: usize, off: usize) -> T {
    // SAFETY: per the contract; unaligned reads, whatever the image's layout.
    unsafe { ((base + off) as *const T).read_unaligned() }
}

/// The address of the function `name` defined by the ELF image at `base`.
///
/// # Safety
/// `base` is the address of a mapped, readable ELF-64 shared object image laid out
/// as the kernel maps the vDSO (every address its headers name lies in it).
unsafe fn find_symbol(base: usize, name: &[u8]) -> Option<usize> {
    // SAFETY: every read below lies within the image, per the contract (the ELF
    // header is checked first, and every count is bounded by MAX_ENTRIES).
    unsafe {
        if at::<[u8; 5]>(base, 0) != *b"\x7fELF\x02"
            || usize::from(at::<u16>(base, 0x36)) != PHDR_SIZE
        {
            return None;
        }
        let phoff: u64 = at(base, 0x20);
        let phnum = usize::from(at::<u16>(base, 0x38)).min(MAX_ENTRIES);
        let (mut load, mut dynamic) = (None, None);
        for i in 0..phnum {
            let ph = base + phoff as usize + i * PHDR_SIZE;
            let (kind, offset, vaddr) = (at::<u32>(ph, 0), at::<u64>(ph, 8), at::<u64>(ph, 16));
            match kind {
                // Addresses in the image are its virtual addresses plus this.
                PT_LOAD if load.is_none() => {
                    load = Some((base + offset as usize).wrapping_sub(vaddr as usize))
                }
                PT_DYNAMIC => dynamic = Some(base + offset as usize),
                _ => {}
            }
        }
        let (load, dynamic) = (load?, dynamic?);
        let (mut hash, mut strtab, mut symtab) = (0, 0, 0);
        for i in 0..MAX_ENTRIES {
            let (tag, val) = (
                at::<i64>(dynamic, i * DYN_SIZE),
                at::<u64>(dynamic, i * DYN_SIZE + 8),
            );
            let addr = load.wrapping_add(val as usize);
            match tag {
                DT_NULL => break,
                DT_HASH => hash = addr,
                DT_STRTAB => strtab = addr,
                DT_SYMTAB => symtab = addr,
                _ => {}
            }
        }
        if hash == 0 || strtab == 0 || symtab == 0 {
            return None;
        }
        // The SysV hash table's second word is the number of symbols.
        let nsyms = (at::<u32>(hash, 4) as usize).min(MAX_ENTRIES);
        for i in 0..nsyms {
            let sym = symtab + i * SYM_SIZE;
            let (st_name, st_info) = (at::<u32>(sym, 0), at::<u8>(sym, 4));
            let (st_shndx, st_value) = (at::<u16>(sym, 6), at::<u64>(sym, 8));
            if st_info & 0xf != STT_FUNC || st_shndx == 0 || st_value == 0 {
                continue;
            }
            let s = strtab + st_name as usize;
            if (0..name.len()).all(|k| at::<u8>(s, k) == name[k]) && at::<u8>(s, name.len()) == 0 {
                return Some(load.wrapping_add(st_value as usize));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vdso_clock_agrees_with_libc() {
        // SAFETY: as in `lookup`.
        let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
        if base == 0 {
            return; // no vDSO (valgrind): libc's wrapper serves
        }
        assert_ne!(lookup(), NONE, "x86-64 vDSOs define __vdso_clock_gettime");
        // SAFETY: as in `lookup`.
        assert_eq!(unsafe { find_symbol(base, b"__vdso_no_such_thing") }, None);
        for clock in [libc::CLOCK_MONOTONIC, libc::CLOCK_MONOTONIC_COARSE] {
            let mut a = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let mut b = a;
            let mut c = a;
            // SAFETY: clock_gettime writes into the timespec we pass.
            assert_eq!(unsafe { libc::clock_gettime(clock, &mut a) }, 0);
            clock_gettime(clock, &mut b).unwrap();
            // SAFETY: as above.
            assert_eq!(unsafe { libc::clock_gettime(clock, &mut c) }, 0);
            let ns = |t: libc::timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
            assert!(
                ns(a) <= ns(b) && ns(b) <= ns(c),
                "{clock}: not between two libc reads"
            );
        }
        assert_eq!(
            clock_gettime(
                -1000,
                &mut libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0
                }
            ),
            Err(libc::EINVAL)
        );
    }
}
