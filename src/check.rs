//! The validators' one helper: a [`Violation`] unless a condition holds.
//!
//! A leaf: every tier's `validate` uses it (front end, central, page heap, huge
//! registry, backend), and it uses nothing of theirs.

use crate::Violation;

/// Returns a [`Violation`] of `structure`'s numbered `invariant` unless `ok`.
pub(crate) fn check(
    ok: bool,
    structure: &'static str,
    invariant: u32,
    what: &'static str,
    addr: usize,
) -> Result<(), Violation> {
    if ok {
        Ok(())
    } else {
        Err(Violation {
            structure,
            invariant,
            what,
            addr,
        })
    }
}
