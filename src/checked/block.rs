//! Checked mode: the trailer's encoding, and what lies at an address (a block, an
//! interior pointer, free memory, or nothing of ours).

use super::{FREED, TRAILER};
use crate::chunk::{ChunkHeader, SpanKind};
use crate::global::{self, BACKEND, Owner};
use crate::size_class::{PAGE_SIZE, SizeClass};
use crate::sync::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use core::fmt;

// ---- the trailer -------------------------------------------------------------------

static SECRET: AtomicU64 = AtomicU64::new(0);

/// The per-process secret mixed into every trailer; set on first use.
#[inline]
pub(super) fn secret() -> u64 {
    // Relaxed: the value is the only data; racing initialisers agree through the CAS.
    let s = SECRET.load(Ordering::Relaxed);
    if s != 0 { s } else { init_secret() }
}

#[cold]
fn init_secret() -> u64 {
    let s = crate::platform::entropy_u64() | 1;
    match SECRET.compare_exchange(0, s, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => s,
        Err(first) => first,
    }
}

#[inline]
pub(super) fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}

/// The key that binds a trailer to the block at `p`.
#[inline]
fn key(p: *const u8) -> u64 {
    secret() ^ mix(p as u64)
}

#[inline]
fn check16(n: u64, key: u64) -> u64 {
    (n ^ key).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 48
}

/// Bits of the requested size in a live trailer (the rest of the 48 bits above the
/// check is the generation).
pub(super) const SIZE_BITS: u32 = 40;
const SIZE_MASK: u64 = (1 << SIZE_BITS) - 1;

/// The leak generation new blocks are stamped with: bumped by `leak_mark` (8 bits,
/// wrapping).
static GENERATION: AtomicU8 = AtomicU8::new(0);

/// The generation blocks allocated now get.
#[inline]
pub(super) fn generation() -> u8 {
    // Relaxed: a label; a block allocated concurrently with a mark may get either.
    GENERATION.load(Ordering::Relaxed)
}

/// Starts a new generation and returns it.
pub(super) fn next_generation() -> u8 {
    GENERATION.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

/// The live trailer of a block at `p` of `n` requested bytes (`n < 2^SIZE_BITS`),
/// stamped with the current generation.
#[inline]
pub(super) fn live_word(p: *const u8, n: usize) -> u64 {
    live_word_in(p, n, generation())
}

#[inline]
fn live_word_in(p: *const u8, n: usize, generation: u8) -> u64 {
    let k = key(p);
    let v = ((generation as u64) << SIZE_BITS) | (n as u64 & SIZE_MASK);
    ((v << 16) | check16(v, k)) ^ k
}

#[inline]
pub(super) fn freed_word(p: *const u8) -> u64 {
    FREED ^ key(p)
}

/// What a trailer word says about the block at `p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trailer {
    /// A live block of this many requested bytes.
    Live(usize),
    /// A block freed through checked mode.
    Freed,
    /// Neither: never allocated, or overwritten.
    Damaged,
}

#[inline]
pub(super) fn decode(p: *const u8, word: u64) -> Trailer {
    match decode_live(p, word) {
        Some((n, _)) => Trailer::Live(n),
        None if word ^ key(p) == FREED => Trailer::Freed,
        None => Trailer::Damaged,
    }
}

/// A live trailer's requested size and generation; None for any other word.
#[inline]
pub(super) fn decode_live(p: *const u8, word: u64) -> Option<(usize, u8)> {
    let k = key(p);
    let x = word ^ k;
    if x == FREED {
        return None;
    }
    let v = x >> 16;
    if x & 0xFFFF == check16(v, k) {
        Some(((v & SIZE_MASK) as usize, (v >> SIZE_BITS) as u8))
    } else {
        None
    }
}

// ---- blocks, found by address --------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Small(SizeClass),
    Large,
    Huge,
}

/// A block the tiers handed out: its start, its slot (see the module docs), its kind.
#[derive(Clone, Copy, Debug)]
pub(super) struct Block {
    pub(super) p: *mut u8,
    pub(super) slot: usize,
    pub(super) kind: Kind,
}

impl Block {
    /// Bytes before the trailer: the most a caller may ask for in this slot.
    #[inline]
    pub(super) fn capacity(&self) -> usize {
        self.slot - TRAILER
    }

    /// The trailer word, accessed atomically so that a validator walking other
    /// threads' blocks never races on it.
    #[inline]
    pub(super) fn trailer(&self) -> &AtomicU64 {
        // SAFETY: a Block is only built for memory of ours that is mapped while we
        // look at it; slot >= 16 and slots end 8-byte aligned (class sizes, pages and
        // mapping lengths are multiples of 8, blocks start 8-aligned).
        unsafe { &*(self.p.add(self.capacity()) as *const AtomicU64) }
    }

    #[inline]
    pub(super) fn state(&self) -> Trailer {
        decode(self.p, self.trailer().load(Ordering::Relaxed))
    }

    /// The requested size and generation of a live block whose trailer is sane.
    #[inline]
    pub(super) fn live_size_and_generation(&self) -> Option<(usize, u8)> {
        match decode_live(self.p, self.trailer().load(Ordering::Relaxed)) {
            Some((n, g)) if n <= self.capacity() => Some((n, g)),
            _ => None,
        }
    }

    /// The requested size of a live block whose trailer is sane.
    #[inline]
    pub(super) fn live_size(&self) -> Option<usize> {
        match self.state() {
            Trailer::Live(n) if n <= self.capacity() => Some(n),
            _ => None,
        }
    }
}

/// The block's size class, for reports.
pub(super) struct Desc(pub(super) Block);

impl fmt::Display for Desc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        match b.kind {
            Kind::Small(c) => write!(f, "size class {}: {}-byte objects", c.0, b.slot),
            Kind::Large => write!(
                f,
                "large block: {} bytes, {} pages",
                b.slot,
                b.slot / PAGE_SIZE
            ),
            Kind::Huge => write!(f, "huge block: a {}-byte mapping", b.slot),
        }
    }
}

/// What lies at an address.
pub(super) enum Found {
    /// The start of a block.
    Block(Block),
    /// `off` bytes into a block.
    Interior { block: Block, off: usize },
    /// Inside one of our chunks but in no block (free pages, headers, span slack).
    FreeMemory,
    /// The start of a huge block that was unmapped recently.
    UnmappedHuge,
    /// Not in our memory at all.
    Foreign,
}

/// Classifies `p` by address; never reads through a pointer outside our memory.
pub(super) fn find(p: *const u8) -> Found {
    match global::owner_of(p) {
        // (owner_of may or may not check the object boundary; small_at does, and
        // that the span contains `p`: a stale page-map entry inside a Large span
        // can name a Small span elsewhere.)
        Owner::Small(c) => small_at(p, c).unwrap_or_else(|| not_a_block(p)),
        Owner::Large(bytes) => Found::Block(Block {
            p: p as *mut u8,
            slot: bytes,
            kind: Kind::Large,
        }),
        Owner::Huge(len) => Found::Block(Block {
            p: p as *mut u8,
            slot: len,
            kind: Kind::Huge,
        }),
        Owner::Foreign => not_a_block(p),
    }
}

/// What `p` is inside the Small span its page maps to; None if that span does not
/// contain `p` (a stale page-map entry).
fn small_at(p: *const u8, c: SizeClass) -> Option<Found> {
    // SAFETY: owner_of found `p` in a mapped chunk, in a Small span; the descriptor
    // lives in the chunk header.
    let span = unsafe { &*(*ChunkHeader::of(p)).span_of(p) };
    // Neither read takes a lock: the base comes from the descriptor's address and
    // the length from the class (a Small span of class c has `c.span_pages()`
    // pages), so no plain field of a span another thread may be changing is read.
    let base = span.base() as usize;
    let size = c.size_bytes();
    let off = (p as usize).wrapping_sub(base);
    let idx = off / size;
    if off >= c.span_pages() * PAGE_SIZE {
        return None;
    }
    if idx >= c.objects_per_span() {
        return Some(Found::FreeMemory);
    }
    let block = Block {
        p: (base + idx * size) as *mut u8,
        slot: size,
        kind: Kind::Small(c),
    };
    Some(match off % size {
        0 => Found::Block(block),
        off => Found::Interior { block, off },
    })
}

/// The error path of `find`: `p` is not the start of a block; say what it is.
#[cold]
fn not_a_block(p: *const u8) -> Found {
    if BACKEND.page_heap.owns(p) {
        // SAFETY: `p` lies in a mapped chunk, so its header is readable; the page map
        // and kinds are atomics.
        let span = unsafe { &*(*ChunkHeader::of(p)).span_of(p) };
        // Every page of a Small span maps to it (Span invariant 2); `small_at`
        // checks that the span contains `p`.
        if span.kind() == SpanKind::Small {
            if let Some(found) = small_at(p, span.class()) {
                return found;
            }
        }
        // The page map may be stale inside a Large span, so look for a Large span
        // that contains `p` by walking the spans (under the page-heap lock; this is
        // the error path).
        let mut inside = None;
        BACKEND.page_heap.for_each_span(|s| {
            let off = (p as usize).wrapping_sub(s.base() as usize);
            if s.kind() == SpanKind::Large && off < s.bytes() {
                inside = Some((s.base(), s.bytes(), off));
            }
        });
        return match inside {
            Some((q, bytes, off)) => Found::Interior {
                block: Block {
                    p: q,
                    slot: bytes,
                    kind: Kind::Large,
                },
                off,
            },
            None => Found::FreeMemory,
        };
    }
    let mut inside = None;
    BACKEND.huge.for_each(|q, len| {
        let off = (p as usize).wrapping_sub(q as usize);
        if off < len {
            inside = Some((q, len, off));
        }
    });
    if let Some((q, len, off)) = inside {
        let block = Block {
            p: q,
            slot: len,
            kind: Kind::Huge,
        };
        return Found::Interior { block, off };
    }
    if recently_unmapped(p) {
        Found::UnmappedHuge
    } else {
        Found::Foreign
    }
}

/// Addresses of the last huge blocks unmapped, to tell a double free of one from a
/// foreign pointer.
static RECENT_HUGE: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];
static RECENT_NEXT: AtomicUsize = AtomicUsize::new(0);

pub(super) fn remember_unmapped(p: *const u8) {
    // Relaxed: a diagnostic hint only.
    let i = RECENT_NEXT.fetch_add(1, Ordering::Relaxed) % RECENT_HUGE.len();
    RECENT_HUGE[i].store(p as usize, Ordering::Relaxed);
}

fn recently_unmapped(p: *const u8) -> bool {
    RECENT_HUGE
        .iter()
        .any(|a| a.load(Ordering::Relaxed) == p as usize)
}

/// Offset of the first byte of `[p, p+len)` that is not `v`.
///
/// # Safety
/// The range is readable.
pub(super) unsafe fn first_not(p: *const u8, len: usize, v: u8) -> Option<usize> {
    let word = u64::from_ne_bytes([v; 8]);
    let mut i = 0;
    // SAFETY: every read is inside [p, p+len); word reads are 8-aligned.
    unsafe {
        while i < len && (p as usize + i) % 8 != 0 {
            if *p.add(i) != v {
                return Some(i);
            }
            i += 1;
        }
        while i + 8 <= len && (p.add(i) as *const u64).read() == word {
            i += 8;
        }
        while i < len {
            if *p.add(i) != v {
                return Some(i);
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checked::MAX_REQUEST;

    #[test]
    fn trailers_round_trip_and_reject_other_addresses() {
        let p = 0x7f00_1234_5670 as *const u8;
        for n in [0usize, 1, 7, 8, 100, 1 << 20, MAX_REQUEST - 1] {
            assert_eq!(decode(p, live_word(p, n)), Trailer::Live(n));
            assert_eq!(
                decode(p.wrapping_add(16), live_word(p, n)),
                Trailer::Damaged
            );
        }
        assert_eq!(decode(p, freed_word(p)), Trailer::Freed);
        assert_ne!(decode(p.wrapping_add(16), freed_word(p)), Trailer::Freed);
        assert_eq!(decode(p, 0), Trailer::Damaged);
        // Every generation round-trips, and stays bound to the size.
        for g in [0u8, 1, 200, 255] {
            let w = live_word_in(p, 12345, g);
            assert_eq!(decode_live(p, w), Some((12345, g)));
            assert_eq!(decode(p, w), Trailer::Live(12345));
            assert_ne!(decode_live(p, w ^ (1 << 60)), Some((12345, g ^ 16)));
        }
        // One byte of a write past the end changes the check.
        let w = live_word(p, 40);
        for i in 0..8 {
            let bad = w ^ (0x41u64 << (8 * i));
            assert_ne!(decode(p, bad), Trailer::Live(40));
        }
    }

    #[test]
    fn first_not_finds_the_first_odd_byte_at_any_offset() {
        let mut buf = [0xCAu8; 64];
        // SAFETY: [3, 53) lies inside `buf`.
        assert_eq!(unsafe { first_not(buf.as_ptr().add(3), 50, 0xCA) }, None);
        for k in 0..50 {
            buf[3 + k] = 0;
            // SAFETY: [3, 53) lies inside `buf`.
            assert_eq!(unsafe { first_not(buf.as_ptr().add(3), 50, 0xCA) }, Some(k));
            buf[3 + k] = 0xCA;
        }
    }
}
