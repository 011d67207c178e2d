//! What std gives every Rust program and the C library must bring itself when it
//! builds this crate without std (`c-abi` without the `std` feature, as `capi/`
//! does): the panic handler, and the allocator behind `alloc` (the heap map's
//! buffers, the purge thread's table), which is strata itself.
//!
//! Nothing under `malloc` panics (see `debug_check!` and `fatal!`); a panic from
//! anywhere else (a bound check in a report, say) ends as std's would under
//! `panic = "abort"`: one line on stderr, then abort. Rust code linking such a
//! build together with std would get two panic handlers: the feature set is for
//! the C library only (Cargo.toml, feature `std`).

/// `alloc`'s allocations go to strata, as `malloc` does.
#[global_allocator]
static ALLOCATOR: crate::Strata = crate::Strata;

/// Reports the panic in one `strata: ` line (no allocation) and aborts.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => crate::report::die(format_args!("panicked at {at}: {}", info.message())),
        None => crate::report::die(format_args!("panicked: {}", info.message())),
    }
}

// Two symbols of the unwinder ABI that the prebuilt `core` and `alloc` name (they
// are built for `panic = "unwind"`; std and libgcc_s would define them), defined
// here as hidden symbols, so that the link resolves them without libgcc_s and
// the library never exports them (a program's own unwinder stays the only one).
//
// Nothing in this library unwinds (`panic = "abort"`, and every panic aborts
// above). The only unwinding that can pass through its frames is a forced one
// started by the C library, when a thread is cancelled or calls `pthread_exit`
// in a cancellation point beneath one of our calls (`write` in a report,
// `nanosleep` in the purge thread): such a frame takes no part in it, as a C
// frame would not. So `rust_eh_personality` answers `_URC_CONTINUE_UNWIND` (8)
// in both phases, no landing pad is ever entered, and `_Unwind_Resume` (called
// only at the end of a landing pad) is never reached: if it were, it aborts.
core::arch::global_asm!(
    ".pushsection .text.strata_unwind_stubs,\"ax\",@progbits",
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality,@function",
    "rust_eh_personality:",
    "mov eax, 8",
    "ret",
    ".size rust_eh_personality, . - rust_eh_personality",
    ".globl _Unwind_Resume",
    ".hidden _Unwind_Resume",
    ".type _Unwind_Resume,@function",
    "_Unwind_Resume:",
    "jmp {resume}",
    ".size _Unwind_Resume, . - _Unwind_Resume",
    ".popsection",
    resume = sym unwind_resume,
);

/// `_Unwind_Resume`, which no unwinding through this library can reach (see
/// above): reports and aborts.
extern "C" fn unwind_resume() -> ! {
    crate::report::die(format_args!("unwinding reached a Rust landing pad"))
}
