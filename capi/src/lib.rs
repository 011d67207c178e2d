//! strata as a C library: `libstrata.so`, a drop-in `malloc` for `LD_PRELOAD`.
//!
//! This crate holds no code of its own. It links the `strata-alloc` crate with its
//! `c-abi` feature (the exported `malloc`, `free`, `calloc`, `realloc`,
//! `posix_memalign`, `malloc_usable_size`, `mallinfo2`, the `strata_*` entry points
//! of `include/strata.h`, ...) into a `cdylib`, and `build.rs` links it with
//! `-z nodelete`. It is a crate (and a workspace) of its own so that Rust programs
//! that depend on `strata-alloc` never build or link a shared library, and never
//! get `c-abi` turned on by feature unification.
//!
//! ```sh
//! cargo build --release --manifest-path capi/Cargo.toml   # capi/target/release/libstrata.so
//! cargo build --release --manifest-path capi/Cargo.toml --features checked
//! cargo build --release --manifest-path capi/Cargo.toml --no-default-features  # no `harden`
//! ```
#![no_std]

pub use strata::*;
