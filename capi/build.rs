//! Link flags for the C library (`libstrata.so`).
//!
//! `-z nodelete`: once loaded, the library is never unmapped, even by `dlclose`.
//! A thread that allocated through it has a pthread-key destructor (its thread
//! heap's tear-down) and may hold blocks of ours; glibc runs that destructor when
//! the thread exits, which may be after a `dlclose`, and every block it still
//! holds may be freed later through whatever `free` the program then reaches. An
//! allocator that could be unloaded would leave both pointing at unmapped code
//! and memory.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
