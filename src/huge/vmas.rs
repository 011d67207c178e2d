//! Where the OS mappings (Linux VMAs) of a huge mapping begin.
//!
//! A block built from cached mappings (`Backend::build_huge`) spans one OS mapping
//! for each mapping `mremap` moved into it, and one more for the fresh pages that end
//! it; a later split of it (its tail cached, the head a block) leaves each part the
//! mappings that lie in it. Counting only the number made both parts inherit the
//! whole count at every split, so the bound doubled with each reuse: on
//! `malloc-large` (20 blocks of 5-25 MiB, replaced at random) every cached mapping
//! reached [`MAX_VMAS`] within a few hundred replacements, after which none could be
//! moved into a new block and the requests took fresh pages: 403,000 page faults in
//! 1,000 replacements where the mappings really spanned about 4 OS mappings each
//! (`/proc/PID/maps`). Knowing where each one starts gives each part its own count.

use super::MAX_VMAS;
use crate::os::OS_PAGE;

/// Most boundaries a range may have inside it.
const MAX_AT: usize = MAX_VMAS as usize - 1;

/// The OS mappings a range spans: at most `count()`, starting at its start and at
/// each offset of `at[..n]`.
///
/// Invariants: 1. `n < MAX_VMAS`; 2. if `known`, `at[..n]` are strictly ascending
/// offsets inside the range, in [`OS_PAGE`] units, none 0, and every OS mapping
/// boundary inside the range is among them; if not `known` (a mapping whose unmap the
/// OS refused, recorded by its count alone), the range spans at most `n + 1` OS
/// mappings, where in it is not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vmas {
    n: u8,
    known: bool,
    at: [u32; MAX_AT],
}

const_assert!(MAX_AT < u8::MAX as usize);

impl Vmas {
    /// A range inside one OS mapping.
    pub const ONE: Vmas = Vmas {
        n: 0,
        known: true,
        at: [0; MAX_AT],
    };

    /// A range of at most `count` OS mappings (`1..=MAX_VMAS`), where they begin not
    /// known: both parts of a split keep the whole count.
    pub fn unknown(count: u32) -> Vmas {
        debug_check!(
            (1..=MAX_VMAS).contains(&count),
            "Vmas::unknown: a count out of range"
        );
        Vmas {
            n: (count.clamp(1, MAX_VMAS) - 1) as u8,
            known: false,
            at: [0; MAX_AT],
        }
    }

    /// At most how many OS mappings the range spans (`1..=MAX_VMAS`).
    pub fn count(&self) -> u32 {
        u32::from(self.n) + 1
    }

    /// The boundaries inside the range (offsets in [`OS_PAGE`] units); none if they
    /// are not known.
    fn known_at(&self) -> &[u32] {
        if self.known {
            &self.at[..self.n as usize]
        } else {
            &[]
        }
    }

    /// The OS mappings of `[0, at)` and of `[at, len)` (the tail's offsets from its
    /// own start), `at` a byte offset that is a multiple of [`OS_PAGE`] if the range
    /// has boundaries (only `mremap` makes them, and a test double whose pages are
    /// smaller than [`OS_PAGE`] has none: `Os::can_move` is false there).
    pub fn split(&self, at: usize) -> (Vmas, Vmas) {
        if !self.known || self.n == 0 {
            return (*self, *self);
        }
        debug_check!(
            at % OS_PAGE == 0,
            "Vmas::split: a range with boundaries split off an OS page"
        );
        let cut = at / OS_PAGE;
        let (mut head, mut tail) = (Vmas::ONE, Vmas::ONE);
        for &b in self.known_at() {
            // `cut` itself is no boundary of either part.
            if (b as usize) < cut {
                head.at[head.n as usize] = b;
                head.n += 1;
            } else if b as usize > cut {
                tail.at[tail.n as usize] = (b as usize - cut) as u32;
                tail.n += 1;
            }
        }
        (head, tail)
    }

    /// Whether `self` (a range `len` bytes long) can take [`Vmas::append`] of a range
    /// spanning `next` OS mappings: the sum stays within [`MAX_VMAS`], and `len` in
    /// [`OS_PAGE`] units fits a boundary.
    pub fn can_append(&self, len: usize, next: u32) -> bool {
        self.count() + next <= MAX_VMAS && len / OS_PAGE <= u32::MAX as usize
    }

    /// Appends a range spanning `next`, placed `len` bytes after the start (`self`
    /// describing `[0, len)`, `len > 0`): it starts an OS mapping of its own. The
    /// caller checked [`Vmas::can_append`].
    pub fn append(&mut self, len: usize, next: &Vmas) {
        if !self.can_append(len, next.count()) {
            debug_check!(
                false,
                "Vmas::append: more OS mappings than a block may span"
            );
            *self = Vmas::unknown(MAX_VMAS);
            return;
        }
        if !(self.known && next.known) {
            *self = Vmas::unknown(self.count() + next.count());
            return;
        }
        debug_check!(
            len % OS_PAGE == 0,
            "Vmas::append: a range placed off an OS page"
        );
        let base = (len / OS_PAGE) as u32;
        let mut n = self.n as usize;
        self.at[n] = base;
        n += 1;
        for &b in next.known_at() {
            self.at[n] = base + b;
            n += 1;
        }
        self.n = n as u8;
    }

    /// Checks invariants 1 and 2 for a range of `len` bytes.
    pub fn valid(&self, len: usize) -> bool {
        (self.n as usize) <= MAX_AT
            && (!self.known
                || self.known_at().iter().enumerate().all(|(i, &b)| {
                    b > 0 && (b as usize) < len / OS_PAGE && (i == 0 || self.at[i - 1] < b)
                }))
    }
}

impl super::HugeRegistry {
    /// At most how many OS mappings the huge block at `p` spans, if `p` is one.
    pub fn vmas_of(&self, p: *const u8) -> Option<u32> {
        self.with(|h| {
            // SAFETY: a bucket head, under the lock.
            unsafe { super::chain(h.buckets[super::hash(p as usize)]) }
                .find(|r| r.ptr == p as usize)
                .map(|r| r.vmas.count())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = OS_PAGE;

    /// `[a | b | c]` of 10, 20 and 5 pages, then split and reassembled.
    #[test]
    fn splits_give_each_part_only_its_own_mappings() {
        let mut v = Vmas::ONE;
        v.append(10 * P, &Vmas::ONE);
        v.append(30 * P, &Vmas::ONE);
        assert_eq!(v.count(), 3);
        assert!(v.valid(35 * P));
        // Inside the middle one: two and two.
        let (h, t) = v.split(15 * P);
        assert_eq!((h.count(), t.count()), (2, 2));
        assert!(h.valid(15 * P) && t.valid(20 * P));
        // At a boundary: one and two.
        let (h, t) = v.split(10 * P);
        assert_eq!((h.count(), t.count()), (1, 2));
        assert_eq!(t.split(20 * P).0, Vmas::ONE);
        // Reassembled after a part of one mapping: the boundaries shift.
        let mut w = Vmas::ONE;
        w.append(4 * P, &t);
        assert_eq!(w.count(), 3);
        assert_eq!(w.split(24 * P).1, Vmas::ONE);
        assert_eq!(w.split(4 * P), (Vmas::ONE, t));
    }

    #[test]
    fn unknown_boundaries_leave_both_parts_the_whole_count() {
        let u = Vmas::unknown(5);
        assert_eq!(u.split(3 * P), (u, u));
        let mut v = Vmas::ONE;
        v.append(P, &u);
        assert_eq!(v.count(), 6);
        assert_eq!(v.split(P).0.count(), 6);
        assert!(v.valid(2 * P));
    }

    #[test]
    fn appends_stop_at_the_most_a_block_may_span() {
        let mut v = Vmas::ONE;
        for i in 1..MAX_VMAS as usize {
            assert!(v.can_append(i * P, 1));
            v.append(i * P, &Vmas::ONE);
        }
        assert_eq!(v.count(), MAX_VMAS);
        assert!(!v.can_append(MAX_VMAS as usize * P, 1));
        assert!(v.valid(MAX_VMAS as usize * P));
        assert_eq!(v.split(P).0, Vmas::ONE);
        assert_eq!(v.split(P).1.count(), MAX_VMAS - 1);
    }
}
