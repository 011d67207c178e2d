//! Scaffolding for strata's loom models (the models are in `tests/`, one file per
//! handoff path; see the README's "Correctness" section and `run-mutants.sh`).
//!
//! Everything here exists only under `--cfg strata_loom`; without it this crate is
//! empty and its tests compile to nothing.
//!
//! - [`FakeOs`]: a page source on the heap (`std::alloc::alloc_zeroed` at the asked
//!   alignment) that counts what is mapped and unmapped, zero-fills purged ranges and
//!   records them, and reads a clock the model sets.
//! - [`model`]: `loom::model` with the bounds taken from the environment
//!   (`LOOM_MAX_PREEMPTIONS`, ...) and a branch budget that fits strata's spin-yield
//!   locks.
//! - Helpers that walk object chains and check the end-of-model conservation
//!   ([`assert_all_returned`]): every page back in the page heap, every chunk back
//!   to the OS.

#[cfg(strata_loom)]
mod fake_os;
#[cfg(strata_loom)]
mod helpers;

#[cfg(strata_loom)]
pub use fake_os::FakeOs;
#[cfg(strata_loom)]
pub use helpers::*;
