//! Placement policies: which free span a new span is cut from.
//!
//! The bins (a list per page count, a bitmap of non-empty bins) are the same under
//! every policy, and so are coalescing, purge and unmapping: a policy only picks one
//! free span among those of at least `need` pages. What each costs, under the lock:
//!
//! - [`Placement::Best`] (the default): the head of the smallest non-empty bin that
//!   fits, found in the bitmap; O(bins / 64).
//! - [`Placement::First`]: the fitting span of lowest address; a scan of the fitting
//!   bins, O(free spans of at least `need` pages).
//! - [`Placement::Next`]: the fitting span of lowest address at or after a roving
//!   address (the end of the span handed out last), wrapping around to the lowest
//!   address; the same scan. The rover is an address only: nothing reads through
//!   it, so a chunk unmapped under it does no harm.
//!
//! There is no buddy policy: `docs/DESIGN.md`, "Placement policies", says why it
//! would change how this page heap frees and coalesces, not only where it places.

use super::*;

/// How the page heap picks the free pages for a new span (a Small span for a size
/// class, or a Large block). Chosen at start-up with `STRATA_PLACEMENT=best|first|next`
/// or with [`crate::set_placement`] early in `main`. The thread caches
/// and the size-class tiers are the same under every policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Best fit: the smallest free span that fits (ties: the most recently freed).
    #[default]
    Best,
    /// First fit: the free span of lowest address that fits.
    First,
    /// Next fit: the first fitting free span at or after where the last one was
    /// taken, wrapping around.
    Next,
}

impl Placement {
    /// Every policy, the default first.
    pub const ALL: [Placement; 3] = [Placement::Best, Placement::First, Placement::Next];

    /// The name `STRATA_PLACEMENT` takes: `best`, `first` or `next`.
    pub const fn name(self) -> &'static str {
        match self {
            Placement::Best => "best",
            Placement::First => "first",
            Placement::Next => "next",
        }
    }

    /// The policy of a `STRATA_PLACEMENT` value (ASCII case ignored); None if there
    /// is none of that name.
    pub fn from_name(name: &[u8]) -> Option<Placement> {
        Placement::ALL
            .into_iter()
            .find(|p| name.eq_ignore_ascii_case(p.name().as_bytes()))
    }
}

impl core::fmt::Display for Placement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.pad(self.name())
    }
}

/// [`crate::set_placement`] was called once the heap was in use (it had freed a
/// span or mapped a second chunk, so its layout may show the policy in force):
/// the policy stays as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacementError {
    /// The policy in force, which stays.
    pub current: Placement,
}

impl core::fmt::Display for PlacementError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "the heap is in use: the placement policy stays {} (choose it before the first allocation)",
            self.current
        )
    }
}

impl core::error::Error for PlacementError {}

impl<O: Os> PageHeap<O> {
    /// The placement policy in force.
    pub fn placement(&self) -> Placement {
        self.with_inner(|h| h.placement)
    }

    /// Sets the placement policy; refused once the layout may show the policy in
    /// force (`Inner::committed`: a span freed, free pages left before an aligned
    /// span, or a second chunk), unless it is the same policy.
    pub fn set_placement(&self, p: Placement) -> Result<(), PlacementError> {
        self.with_inner(|h| {
            if h.committed && h.placement != p {
                return Err(PlacementError {
                    current: h.placement,
                });
            }
            h.placement = p;
            Ok(())
        })
    }

    /// Sets the placement policy even if spans have been handed out (start-up
    /// settings, read after the C runtime's own first allocations, and tests):
    /// every policy keeps every invariant whatever the layout it starts from.
    pub fn force_placement(&self, p: Placement) {
        self.with_inner(|h| h.placement = p);
    }
}

/// A free span of at least `need` pages under `policy`, left in its bin (the
/// caller unlinks it); null if none fits.
pub(super) fn find_free(h: &Inner, need: usize, policy: Placement) -> *mut Span {
    match policy {
        Placement::Best => match find_bin(h, need) {
            Some(b) => h.bins[b],
            None => ptr::null_mut(),
        },
        Placement::First => lowest_from(h, need, 0),
        Placement::Next => {
            let s = lowest_from(h, need, h.rover);
            if s.is_null() {
                lowest_from(h, need, 0)
            } else {
                s
            }
        }
    }
}

/// The fitting free span of lowest base address at or after `from`; null if none.
fn lowest_from(h: &Inner, need: usize, from: usize) -> *mut Span {
    let mut best: *mut Span = ptr::null_mut();
    let mut best_base = usize::MAX;
    for_each_free_span_from(h, need, |sp| {
        let base = sp.base() as usize;
        if base >= from && base < best_base {
            best = sp as *const Span as *mut Span;
            best_base = base;
        }
    });
    best
}
