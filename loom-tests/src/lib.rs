//! Loom model checks for strata live in `tests/`; see issue 3.
