//! x86-64 Linux: the thread slot as a symbol of our own in `.tdata`, read with the
//! initial-exec TLS model.
//!
//! Stable Rust gives a cdylib only the general-dynamic model for `thread_local!`: a
//! call to `__tls_get_addr` per access (measured: 11 instructions per call plus
//! spills around it in `free`). Initial-exec (`@GOTTPOFF`) is one load from the GOT
//! and one `%fs`-relative load; in an executable the linker relaxes it further to
//! local-exec. The slot's initial value is the address of the `INIT` static: glibc
//! applies the relocation to the TLS image before copying it for the first thread,
//! and copies the relocated image for every later one, so no code runs at thread
//! start. The cost: a library using it must be loaded at start-up (`LD_PRELOAD`,
//! `DT_NEEDED`) or fit glibc's surplus static TLS when `dlopen`ed (8 bytes here, and
//! the 64 of the own rseq area in `rseq_x86_64.rs`), as with mimalloc and jemalloc.

/// See `platform::thread_slot!`. Defines the hidden symbol `__strata_tls_slot`.
macro_rules! thread_slot {
    ($vis:vis mod $name:ident: *mut $t:ty = $init:path;) => {
        $vis mod $name {
            #[allow(unused_imports)]
            use super::*;

            core::arch::global_asm!(
                ".pushsection .tdata,\"awT\",@progbits",
                ".p2align 3",
                ".hidden __strata_tls_slot",
                ".globl __strata_tls_slot",
                ".type __strata_tls_slot,@object",
                ".size __strata_tls_slot,8",
                "__strata_tls_slot:",
                ".quad {init}",
                ".popsection",
                init = sym $init,
            );

            /// The calling thread's value.
            #[inline(always)]
            pub(crate) fn get() -> *mut $t {
                let p: *mut $t;
                // SAFETY: reads this thread's slot through the initial-exec TLS
                // sequence (the slot is 8 bytes, 8-aligned, defined above); it
                // holds `&INIT` or a value `set` stored.
                unsafe {
                    core::arch::asm!(
                        "mov {p}, qword ptr [rip + __strata_tls_slot@GOTTPOFF]",
                        "mov {p}, qword ptr fs:[{p}]",
                        p = out(reg) p,
                        options(nostack, readonly, preserves_flags, pure),
                    );
                }
                p
            }

            /// The address of the calling thread's slot (valid until the thread's
            /// TLS is freed at its exit). Another thread may read or write the
            /// slot through it, atomically: the owner's `get` and `set` are
            /// single aligned 8-byte moves in assembly.
            #[inline]
            pub(crate) fn addr() -> *mut *mut $t {
                let p: *mut *mut $t;
                // SAFETY: the initial-exec TLS sequence for the slot's address:
                // the thread pointer (`fs:0` holds it) plus the slot's offset.
                unsafe {
                    core::arch::asm!(
                        "mov {p}, qword ptr fs:[0]",
                        "add {p}, qword ptr [rip + __strata_tls_slot@GOTTPOFF]",
                        p = out(reg) p,
                        options(nostack, readonly),
                    );
                }
                p
            }

            /// Sets the calling thread's value.
            #[inline(always)]
            pub(crate) fn set(v: *mut $t) {
                // SAFETY: writes this thread's slot through the initial-exec TLS
                // sequence; no other thread can reach it.
                unsafe {
                    core::arch::asm!(
                        "mov {t}, qword ptr [rip + __strata_tls_slot@GOTTPOFF]",
                        "mov qword ptr fs:[{t}], {v}",
                        t = out(reg) _,
                        v = in(reg) v,
                        options(nostack, preserves_flags),
                    );
                }
            }
        }
    };
}
pub(crate) use thread_slot;
