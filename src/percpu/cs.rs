//! The two restartable critical sections, in x86-64 asm: pop one object from, and
//! push one onto, the calling CPU's stack of a size class.
//!
//! Each section
//! 1. stores the address of its descriptor (`struct rseq_cs`: version 0, flags 0,
//!    start, post-commit offset, abort address; 32-byte aligned, in section
//!    `__rseq_cs`) into the thread's `rseq_cs` field, *before* its start label:
//!    from then on the kernel knows the range;
//! 2. reads `cpu_id` from the rseq area; a negative value (area not registered)
//!    leaves the section at once with "failed";
//! 3. finds that CPU's header (`slab + (cpu << shift) + class * 8`), checks the
//!    bound (`current > begin` to pop, `current < end` to push);
//! 4. commits with its last instruction, the 16-bit store of the new `current`.
//!    Push writes the object into `slot[current]` before that: the slot is above
//!    `current`, free space no one reads, so an aborted push leaves nothing behind.
//!    Pop reads `slot[current - 1]` before the commit; an aborted pop has taken
//!    nothing.
//!
//! If the thread is preempted, migrated or signalled between the start label and
//! the end of the commit store, the kernel does not resume it there: it moves the
//! instruction pointer to the abort handler (which must follow the 4-byte
//! signature the registration named, [`sys::RSEQ_SIG`]) and clears `rseq_cs`. The
//! handler counts the abort and jumps back to step 1, which stores the descriptor
//! again and rereads everything: the section restarts from scratch, with inputs
//! that it never modifies (they live in registers the asm only reads).
//!
//! So on one CPU the sections run as if atomic with respect to each other: the
//! kernel runs one thread at a time per CPU and any switch aborts the section that
//! was cut. A non-owner writing a CPU's headers must first make every section on
//! that CPU fail (see `slab.rs`, "Non-owners").
//!
//! Labels are local numeric ones (`2:`, `3b`, ...; never 0 or 1, which Intel syntax
//! would read as binary literals): when the compiler inlines or duplicates a
//! section, each copy gets its own descriptor and abort handler, with the
//! references resolved within the copy. The abort handler lives out of line in
//! `.text.unlikely`, so the fast path has no jump over it. The signature sits
//! before it as the immediate of a `ud1` instruction (`0f b9 3d` + the 4 bytes),
//! so that a disassembler decodes the bytes as an instruction, as glibc's and
//! librseq's x86 sections do.
//!
//! A section that fails (unregistered area, empty or full stack, locked header)
//! leaves through a two-instruction stub in `.text.unlikely` that writes the
//! failed result (null, 0) and jumps back to the section's end, so the hit path
//! sets no result register in advance.
//!
//! Cost: pop is 13 instructions, push 13 (from storing the descriptor to the
//! commit), and pop's count after its commit, with two branches each that the caller
//! should see as likely not taken (plus the caller's load of the area and slab).

use core::arch::asm;
use core::sync::atomic::AtomicU64;

use super::rseq::RseqArea;

/// How many times a critical section was aborted by the kernel (preemption,
/// migration or a signal inside it), process-wide. Counted only on the abort
/// path; the fast path never touches it.
pub(crate) static ABORTS: AtomicU64 = AtomicU64::new(0);

use super::slab::POPS_UNIT;

// The asm hard-codes the rseq area offsets and the header layout.
const_assert!(super::rseq::CPU_ID_OFFSET == 4);
const_assert!(super::rseq::RSEQ_CS_OFFSET == 8);
const_assert!(crate::platform::rseq::RSEQ_SIG == 0x5305_3053);

/// Pops the top object of `class` on the CPU the thread runs on; null if that
/// stack is empty, locked by a non-owner, or the thread's area is not registered.
/// A pop that took an object counts it in the region's pop counter of `class`,
/// after the commit (outside the restartable range: a restart never counts twice;
/// a thread moved to another CPU between the commit and the increment counts on
/// the region it popped from, unlocked, and may lose a count there).
///
/// # Safety
/// `area` is the calling thread's registered (or once-registered) rseq area;
/// `base` the start of a slab whose regions are `1 << shift` bytes, one for every
/// possible CPU, each starting with headers and pop counters for at least
/// `class + 1` classes laid out as `slab.rs` says (slab invariant 2; header
/// invariants 1–4 hold for every CPU).
#[inline(always)]
pub(crate) unsafe fn pop(area: *mut RseqArea, base: *mut u8, shift: u32, class: usize) -> *mut u8 {
    let ret: *mut u8;
    // SAFETY: by the caller's contract every CPU id the kernel can report has a
    // region inside the slab and `class` names a header in it; by header invariant
    // 1, `begin < current` implies `slot[current - 1]` lies inside the class's
    // slots, in the same region. The commit is the last instruction of the range
    // [4, 5), so an aborted section leaves the slab as it was; a locked header
    // (begin = 0xffff) fails the bound check. The abort handler is preceded by
    // RSEQ_SIG, the signature both glibc and `rseq::register_own` register. The
    // count after the commit writes unit POPS_UNIT + class of the same region, a
    // counter unit (slab invariant 2: inside the region, never a header or slot).
    unsafe {
        asm!(
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 4f, (5f - 4f), 6f",
            ".popsection",
            ".pushsection .text.unlikely, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long 0x53053053",
            "6:",
            "lock inc qword ptr [rip + {aborts}]",
            "jmp 2f",
            ".popsection",
            "2:",
            "lea {t}, [rip + 3b]",
            "mov qword ptr [{area} + 8], {t}",
            "4:",
            "movsxd {t}, dword ptr [{area} + 4]",
            "test {t}, {t}",
            "js 8f",
            "shl {t}, cl",
            "add {t}, {base}",
            "movzx {cur:e}, word ptr [{t} + {class} * 8]",
            "cmp {cur:x}, word ptr [{t} + {class} * 8 + 4]",
            "jbe 8f",
            "dec {cur:e}",
            "mov {ret}, qword ptr [{t} + {cur} * 8]",
            "mov word ptr [{t} + {class} * 8], {cur:x}",
            "5:",
            "inc qword ptr [{t} + {class} * 8 + {pops}]",
            "7:",
            ".pushsection .text.unlikely, \"ax\"",
            "8:",
            "xor {ret:e}, {ret:e}",
            "jmp 7b",
            ".popsection",
            aborts = sym ABORTS,
            pops = const POPS_UNIT * 8,
            area = in(reg) area,
            base = in(reg) base,
            class = in(reg) class,
            in("cl") shift as u8,
            t = out(reg) _,
            cur = out(reg) _,
            ret = out(reg) ret,
            options(nostack),
        );
    }
    ret
}

/// Pushes `p` onto the stack of `class` on the CPU the thread runs on; false if
/// that stack is full, locked by a non-owner, or the thread's area is not
/// registered (the caller then takes its slow path).
///
/// # Safety
/// As for [`pop`].
#[inline(always)]
pub(crate) unsafe fn push(
    area: *mut RseqArea,
    base: *mut u8,
    shift: u32,
    class: usize,
    p: *mut u8,
) -> bool {
    let top: u64;
    // SAFETY: as in `pop`: by header invariant 1, `current < end` implies
    // `slot[current]` lies inside the class's slots in this CPU's region, and it is
    // above the stack top, so writing it before the commit is invisible if the
    // section aborts; a locked header (end = 0) fails the bound check.
    unsafe {
        asm!(
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 4f, (5f - 4f), 6f",
            ".popsection",
            ".pushsection .text.unlikely, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long 0x53053053",
            "6:",
            "lock inc qword ptr [rip + {aborts}]",
            "jmp 2f",
            ".popsection",
            "2:",
            "lea {t}, [rip + 3b]",
            "mov qword ptr [{area} + 8], {t}",
            "4:",
            "movsxd {t}, dword ptr [{area} + 4]",
            "test {t}, {t}",
            "js 8f",
            "shl {t}, cl",
            "add {t}, {base}",
            "movzx {cur:e}, word ptr [{t} + {class} * 8]",
            "cmp {cur:x}, word ptr [{t} + {class} * 8 + 2]",
            "jae 8f",
            "mov qword ptr [{t} + {cur} * 8], {p}",
            "inc {cur:e}",
            "mov word ptr [{t} + {class} * 8], {cur:x}",
            "5:",
            ".pushsection .text.unlikely, \"ax\"",
            "8:",
            "xor {cur:e}, {cur:e}",
            "jmp 5b",
            ".popsection",
            aborts = sym ABORTS,
            area = in(reg) area,
            base = in(reg) base,
            class = in(reg) class,
            p = in(reg) p,
            in("cl") shift as u8,
            t = out(reg) _,
            cur = out(reg) top,
            options(nostack),
        );
    }
    // The new top after `inc` is at least 1; a failure leaves 0.
    top != 0
}

/// Pops up to `n` objects of `class` from the CPU the thread runs on into
/// `out[0..k]` in one critical section, and returns `k`: 0 if that stack is empty,
/// locked by a non-owner, or the thread's area is not registered. `out[k - 1]` was
/// the top of the stack.
///
/// The section copies the slots `[current - k, current)` into `out` and commits
/// `current - k` with its last store, as [`pop`] does for one: an aborted copy has
/// written only `out`, which the restart writes again.
///
/// # Safety
/// As for [`pop`]; and `out` is valid for writes of `n` pointers, and no other
/// thread reads or writes it meanwhile.
#[inline(always)]
pub(crate) unsafe fn pop_batch(
    area: *mut RseqArea,
    base: *mut u8,
    shift: u32,
    class: usize,
    out: *mut *mut u8,
    n: usize,
) -> usize {
    let k: usize;
    // SAFETY: as in `pop`; by header invariant 1, `begin < current` and
    // `k <= current - begin` keep every slot read in `[begin, current)`, inside the
    // class's slots in this CPU's region; `out` has room for `k <= n` pointers by the
    // caller's contract; the commit is the last instruction of [4, 5); a locked
    // header (begin = 0xffff) fails the bound check (`current <= begin`).
    unsafe {
        asm!(
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 4f, (5f - 4f), 6f",
            ".popsection",
            ".pushsection .text.unlikely, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long 0x53053053",
            "6:",
            "lock inc qword ptr [rip + {aborts}]",
            "jmp 2f",
            ".popsection",
            "2:",
            "lea {t}, [rip + 3b]",
            "mov qword ptr [{area} + 8], {t}",
            "4:",
            "xor {k:e}, {k:e}",
            "movsxd {t}, dword ptr [{area} + 4]",
            "test {t}, {t}",
            "js 5f",
            "shl {t}, cl",
            "add {t}, {base}",
            "movzx {cur:e}, word ptr [{t} + {class} * 8]",
            "movzx {tmp:e}, word ptr [{t} + {class} * 8 + 4]",
            "cmp {cur}, {tmp}",
            "jbe 5f",
            "mov {k}, {cur}",
            "sub {k}, {tmp}",
            "cmp {k}, {n}",
            "cmova {k}, {n}",
            "sub {cur}, {k}",
            "lea {src}, [{t} + {cur} * 8]",
            "xor {i:e}, {i:e}",
            "7:",
            "cmp {i}, {k}",
            "jae 8f",
            "mov {tmp}, qword ptr [{src} + {i} * 8]",
            "mov qword ptr [{out} + {i} * 8], {tmp}",
            "inc {i}",
            "jmp 7b",
            "8:",
            "mov word ptr [{t} + {class} * 8], {cur:x}",
            "5:",
            aborts = sym ABORTS,
            area = in(reg) area,
            base = in(reg) base,
            class = in(reg) class,
            out = in(reg) out,
            n = in(reg) n,
            in("cl") shift as u8,
            t = out(reg) _,
            cur = out(reg) _,
            tmp = out(reg) _,
            src = out(reg) _,
            i = out(reg) _,
            k = out(reg) k,
            options(nostack),
        );
    }
    k
}

/// Pushes `src[0..k]` onto the stack of `class` on the CPU the thread runs on in one
/// critical section, for the largest `k <= n` that fits, and returns `k`: 0 if that
/// stack is full, locked by a non-owner, or the thread's area is not registered.
/// `src[k..n]` are still the caller's.
///
/// The section copies into the free slots `[current, current + k)` and commits
/// `current + k` with its last store, as [`push`] does for one: an aborted copy has
/// written only slots above `current`, which no one reads.
///
/// # Safety
/// As for [`push`], for each of `src[0..n]`; and `src` is valid for reads of `n`
/// pointers that no other thread writes meanwhile.
#[inline(always)]
pub(crate) unsafe fn push_batch(
    area: *mut RseqArea,
    base: *mut u8,
    shift: u32,
    class: usize,
    src: *const *mut u8,
    n: usize,
) -> usize {
    let k: usize;
    // SAFETY: as in `push`; by header invariant 1, `current < end` and
    // `k <= end - current` keep every slot written in `[current, end)`, inside the
    // class's slots in this CPU's region and above the stack top, so an aborted
    // section leaves nothing behind; `src` holds `n >= k` pointers by the caller's
    // contract; a locked header (end = 0) fails the bound check.
    unsafe {
        asm!(
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 4f, (5f - 4f), 6f",
            ".popsection",
            ".pushsection .text.unlikely, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long 0x53053053",
            "6:",
            "lock inc qword ptr [rip + {aborts}]",
            "jmp 2f",
            ".popsection",
            "2:",
            "lea {t}, [rip + 3b]",
            "mov qword ptr [{area} + 8], {t}",
            "4:",
            "xor {k:e}, {k:e}",
            "movsxd {t}, dword ptr [{area} + 4]",
            "test {t}, {t}",
            "js 5f",
            "shl {t}, cl",
            "add {t}, {base}",
            "movzx {cur:e}, word ptr [{t} + {class} * 8]",
            "movzx {tmp:e}, word ptr [{t} + {class} * 8 + 2]",
            "cmp {cur}, {tmp}",
            "jae 5f",
            "mov {k}, {tmp}",
            "sub {k}, {cur}",
            "cmp {k}, {n}",
            "cmova {k}, {n}",
            "lea {dst}, [{t} + {cur} * 8]",
            "xor {i:e}, {i:e}",
            "7:",
            "cmp {i}, {k}",
            "jae 8f",
            "mov {tmp}, qword ptr [{src} + {i} * 8]",
            "mov qword ptr [{dst} + {i} * 8], {tmp}",
            "inc {i}",
            "jmp 7b",
            "8:",
            "add {cur}, {k}",
            "mov word ptr [{t} + {class} * 8], {cur:x}",
            "5:",
            aborts = sym ABORTS,
            area = in(reg) area,
            base = in(reg) base,
            class = in(reg) class,
            src = in(reg) src,
            n = in(reg) n,
            in("cl") shift as u8,
            t = out(reg) _,
            cur = out(reg) _,
            tmp = out(reg) _,
            dst = out(reg) _,
            i = out(reg) _,
            k = out(reg) k,
            options(nostack),
        );
    }
    k
}

/// The process-wide count of aborted critical sections (for tests and statistics).
pub fn aborts() -> u64 {
    // Relaxed: a statistic; no other memory is read on its strength.
    ABORTS.load(core::sync::atomic::Ordering::Relaxed)
}
