//! What the huge cache hands out: the cached mappings taken for one request
//! ([`Pieces`]) and the ones it let go ([`Evicted`]).

use super::{CACHE_SLOTS, MAX_PIECES, Vmas};

/// A cached mapping taken for a request.
#[derive(Clone, Copy)]
pub struct Piece {
    /// Its address.
    pub ptr: usize,
    /// Its length in bytes.
    pub len: usize,
    /// The OS mappings it spans.
    pub vmas: Vmas,
}

/// Cached mappings taken for one request: one that fits, or the pieces to build it
/// from, largest first.
pub struct Pieces {
    n: usize,
    items: [Piece; MAX_PIECES],
}

impl Pieces {
    pub(super) const NONE: Pieces = Pieces {
        n: 0,
        items: [Piece {
            ptr: 0,
            len: 0,
            vmas: Vmas::ONE,
        }; MAX_PIECES],
    };

    pub(super) fn push(&mut self, ptr: usize, len: usize, vmas: Vmas) {
        self.items[self.n] = Piece { ptr, len, vmas };
        self.n += 1;
    }

    pub(super) fn bytes(&self) -> usize {
        self.as_slice().iter().map(|e| e.len).sum()
    }

    pub(super) fn vmas(&self) -> u32 {
        self.as_slice().iter().map(|e| e.vmas.count()).sum()
    }

    /// The pieces taken.
    pub fn as_slice(&self) -> &[Piece] {
        &self.items[..self.n]
    }
}

/// Mappings the cache let go (or would not take), for the caller to unmap once the
/// registry lock is released: nothing names them any more, so no other thread can
/// reach them.
pub struct Evicted {
    n: usize,
    items: [(usize, usize, u32); CACHE_SLOTS + 1],
}

impl Evicted {
    pub(super) const NONE: Evicted = Evicted {
        n: 0,
        items: [(0, 0, 0); CACHE_SLOTS + 1],
    };

    pub(super) fn push(&mut self, ptr: usize, len: usize, vmas: u32) {
        self.items[self.n] = (ptr, len, vmas);
        self.n += 1;
    }

    /// The evicted mappings, `(address, length, vmas)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize, u32)> + '_ {
        self.items[..self.n].iter().copied()
    }
}
