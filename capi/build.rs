//! Link flags for the C library (`libstrata.so`).
//!
//! `-z nodelete`: once loaded, the library is never unmapped, even by `dlclose`.
//! A thread that allocated through it has a pthread-key destructor (its thread
//! heap's tear-down) and may hold blocks of ours; glibc runs that destructor when
//! the thread exits, which may be after a `dlclose`, and every block it still
//! holds may be freed later through whatever `free` the program then reaches. An
//! allocator that could be unloaded would leave both pointing at unmapped code
//! and memory.
//!
//! `-z pack-relative-relocs`: the loader's relative relocations (pointers in our
//! own data to our own code and data, ~480 of them) as a DT_RELR bitmap of 136
//! bytes instead of 24-byte `Elf64_Rela` records (11.6 KB): the read-only segment
//! that every process maps resident shrinks by 10 KiB (`benches/footprint.sh`:
//! -8 KiB of peak RSS on the `first` program). glibc 2.36 and later read it (the
//! linker adds the `GLIBC_ABI_DT_RELR` version need); a linker older than
//! binutils 2.38 ignores the option with a warning.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
}
