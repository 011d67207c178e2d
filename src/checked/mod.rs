//! Checked mode (cargo feature `checked`): every block remembers its requested size
//! and carries a canary, every pointer handed back is validated before anything is
//! written, freed blocks wait in a quarantine filled with a pattern, and any misuse
//! aborts with one line on stderr naming the pointer, its size class and what was
//! wrong. Without the feature none of this is compiled: the plain fast paths in
//! `global` are untouched.
//!
//! # Block layout
//! A request of `n` bytes is served as `n + 9` bytes (route and class chosen for the
//! larger size): an 8-byte trailer and at least one canary byte. The block's *slot*
//! is what the tiers gave it, found from the address alone: the class size (Small),
//! the span's bytes (Large) or the mapping's length (huge). The last 8 bytes of the
//! slot are the trailer:
//! ```text
//!  p                       p+n                      p+slot-8     p+slot
//!  | caller's n bytes       | canary 0xCA ...        | trailer    |
//! ```
//! - live: `((v << 16) | check16(v)) ^ key(p)` with `v = generation << 40 | n` (the
//!   leak generation, bumped by `leak_mark`, and the requested size, below 2^40);
//!   freed: `FREED ^ key(p)`, where
//!   `key(p) = secret ^ mix(p)` binds the word to the block's address and to a
//!   per-process random secret, so stale or random bytes (a never-allocated object, a
//!   copy of another block's trailer, a write past the end) do not decode as a live
//!   block, except with probability about 2^-16 × slot / 2^40.
//! - Because `p` is in the key, a trailer left behind in memory that is later reused
//!   with another geometry never reads as the trailer of the new block.
//!
//! # What each entry point checks
//! `free`/`dealloc`/`realloc`/`malloc_usable_size` first classify the pointer by
//! address (chunk map, page map, huge registry; nothing is read through a pointer
//! that is not in our memory), then read the trailer, then the canary:
//! foreign pointer → "strata never returned"; not on an object boundary →
//! "interior or misaligned"; `FREED` → "double free"; undecodable → "trailer is
//! damaged"; canary byte changed → "write past the end". Rust's `dealloc` and
//! `realloc` also compare the layout with the recorded size ("size mismatch").
//!
//! # Quarantine (why not "check the pattern when the block is reused")
//! A freed block is filled with 0xDF (all of it up to the trailer) and parked in a
//! FIFO quarantine before the tiers get it back: 32 MiB by default
//! (`STRATA_QUARANTINE_BYTES`), in 8 shards that threads hash to, each holding up to
//! an eighth of the bytes and 65,536 blocks. When a block leaves the quarantine its
//! pattern and freed trailer are verified ("write to a freed block"); only then is it
//! really freed. Checking the pattern at reuse instead would need to know whether an
//! object is recycled or freshly carved: a span can go back to the page heap and be
//! carved again with another class, leaving free-list links and trailers of the old
//! geometry inside what looks like a freed block of the new one, which would give
//! false reports. The quarantine is exact (no one but a buggy caller can write a
//! block while we hold it) and also delays reuse, so that a double free or a use
//! after free soon after the free is caught rather than hitting a block that was
//! handed out again. Huge blocks are not quarantined: they are unmapped at once, so
//! a late access faults, and their addresses are remembered for a while to name a
//! later double free.
//!
//! # Invariants checked by `validate_heap` in checked mode
//! Block 1: every live block's bytes between its requested size and its trailer hold
//! the canary. Block 2: every block in quarantine holds the free pattern and its
//! freed trailer. The walk holds every class lock and reads other threads' blocks,
//! so it is exact when no other thread is freeing or reallocating meanwhile (a
//! mismatch is re-checked against the trailer, which a concurrent free has changed
//! first, so a false report needs an unlucky interleaving).
//!
//! Reports are formatted into a stack buffer and written with `write(2)`; nothing
//! here allocates through the allocator.
//!
//! # Files
//! `mod.rs`: the entry points (`GlobalAlloc`, the C functions' back ends), the checks
//! and the reports. `block.rs`: the trailer's encoding and what lies at an address.
//! `quarantine.rs`: the quarantine. `leaks.rs`: the walk over every block (validator,
//! leak report) and the configuration read at load time. Layering: `checked` sits
//! beside `global` and uses its by-address paths (`alloc_bytes`, `free_by_address`,
//! `owner_of`) and the backend's in-place resizes; nothing below knows about it
//! (except `HugeRegistry::for_each`, a read-only walk compiled only here).

mod block;
mod leaks;
mod quarantine;

pub use leaks::{LeakCount, LeakMark, LeakReport};
pub(crate) use leaks::{
    configure, leak_mark, leak_report, leak_report_since, print_leak_report, validate_blocks,
};
pub(crate) use quarantine::drain_quarantine;

use crate::Strata;
use crate::backend::{Route, route};
use crate::global::{self, BACKEND};
use crate::os::OS_PAGE;
use crate::report::die;
use crate::size_class::class_for;
use crate::sync::Ordering;
use block::{
    Block, Desc, Found, Kind, Trailer, decode, find, first_not, freed_word, live_word,
    remember_unmapped,
};
use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr;
use core::sync::atomic::fence;
use quarantine::quarantine;

/// Bytes of the trailer.
const TRAILER: usize = 8;
/// Bytes added to every request: the trailer and at least one canary byte, so that
/// the first byte past the end (the most common overflow) is always a canary byte,
/// reported with its offset, never part of the trailer.
const OVERHEAD: usize = TRAILER + 1;
/// Fills the bytes between the requested size and the trailer.
const CANARY: u8 = 0xCA;
/// Fills a freed block while it is in quarantine.
const FREE_FILL: u8 = 0xDF;
/// The decoded trailer of a freed block (no live size encodes to it: sizes are
/// below `MAX_REQUEST`).
const FREED: u64 = u64::MAX;
/// Requests from here on are refused: the trailer keeps 40 bits of size (the other
/// 8 of its 48 are the leak generation), and the all-ones size is never used, so no
/// live word equals `FREED`.
const MAX_REQUEST: usize = (1 << block::SIZE_BITS) - 1;
/// Default quarantine size, all shards together (each gets an eighth).
pub(crate) const DEFAULT_QUARANTINE_BYTES: usize = 32 << 20;

// ---- reports -----------------------------------------------------------------------

/// The entry point a pointer was handed to (`Free` and `UsableSize` are C's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "c-abi"), allow(dead_code))]
enum Verb {
    Free,
    Dealloc,
    Realloc,
    UsableSize,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Free => "free()",
            Verb::Dealloc => "dealloc()",
            Verb::Realloc => "realloc()",
            Verb::UsableSize => "malloc_usable_size()",
        })
    }
}

/// The live block starting at `p` and its requested size, canary checked; aborts
/// with a report if `p` is anything else.
fn live_block(p: *const u8, verb: Verb) -> (Block, usize) {
    let b = match find(p) {
        Found::Block(b) => b,
        Found::Interior { block, off } => die(format_args!(
            "{verb} of an interior or misaligned pointer {:#x}: offset {off} in the block at \
             {:#x} ({})",
            p as usize,
            block.p as usize,
            Desc(block)
        )),
        Found::FreeMemory => die(format_args!(
            "{verb} of a pointer strata never returned: {:#x} lies in a strata chunk but is not \
             a live block (freed already, or never allocated)",
            p as usize
        )),
        Found::UnmappedHuge => match verb {
            Verb::Free | Verb::Dealloc => die(format_args!(
                "double free of {:#x} (a huge block, already unmapped)",
                p as usize
            )),
            _ => die(format_args!(
                "{verb} of a freed block {:#x} (a huge block, already unmapped)",
                p as usize
            )),
        },
        Found::Foreign => die(format_args!(
            "{verb} of a pointer strata never returned: {:#x} (not in any strata chunk or huge \
             mapping: a stack, global or another allocator's pointer?)",
            p as usize
        )),
    };
    let word = b.trailer().load(Ordering::Relaxed);
    match decode(b.p, word) {
        Trailer::Live(n) if n <= b.capacity() => {
            check_canary(b, n, verb);
            (b, n)
        }
        Trailer::Freed => match verb {
            Verb::Free | Verb::Dealloc => die(format_args!(
                "double free of {:#x} ({})",
                p as usize,
                Desc(b)
            )),
            _ => die(format_args!(
                "{verb} of a freed block {:#x} ({})",
                p as usize,
                Desc(b)
            )),
        },
        _ => die(format_args!(
            "{verb} of {:#x} ({}): its trailer is damaged ({word:#018x}): a write past the end \
             of the block, or a pointer strata never returned",
            p as usize,
            Desc(b)
        )),
    }
}

fn check_canary(b: Block, n: usize, verb: Verb) {
    // SAFETY: [n, capacity) lies inside the block's slot, which is mapped.
    if let Some(k) = unsafe { first_not(b.p.add(n), b.capacity() - n, CANARY) } {
        let off = n + k;
        // SAFETY: off < capacity, inside the slot.
        let byte = unsafe { *b.p.add(off) };
        die(format_args!(
            "write past the end of the block {:#x} ({}), {n} bytes requested: byte {off} is \
             {byte:#04x}, not the canary {CANARY:#04x} (found by {verb})",
            b.p as usize,
            Desc(b)
        ));
    }
}

// ---- allocation and free -------------------------------------------------------------

#[inline]
fn enomem() -> *mut u8 {
    crate::platform::set_errno(crate::platform::ENOMEM);
    ptr::null_mut()
}

/// Writes the canary and the live trailer of a block now holding `n` bytes.
fn arm(b: Block, n: usize) {
    // SAFETY: [n, capacity) lies inside the block's slot, which the caller owns.
    unsafe { ptr::write_bytes(b.p.add(n), CANARY, b.capacity() - n) };
    b.trailer().store(live_word(b.p, n), Ordering::Relaxed);
    // Keeps the caller's later writes after the trailer store (see the validator).
    fence(Ordering::Release);
}

/// Gives up a live, checked block of `n` bytes: mark it freed, fill it, quarantine
/// it (huge blocks are unmapped at once).
///
/// # Safety
/// `b` is a live block of ours (checked by `live_block`) that the caller gives up.
unsafe fn retire(b: Block, n: usize) {
    // A CAS, not a store: of two threads freeing the same block at once, one sees
    // the other's mark. The expected word is the live trailer as read (its
    // generation is whatever the block was stamped with); a word that no longer
    // says live with `n` bytes was changed by a concurrent free.
    let word = b.trailer().load(Ordering::Relaxed);
    if decode(b.p, word) != Trailer::Live(n)
        || b.trailer()
            .compare_exchange(word, freed_word(b.p), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        die(format_args!(
            "double free of {:#x} ({}): freed by two threads at once",
            b.p as usize,
            Desc(b)
        ));
    }
    // Keeps the fill below after the mark (see the validator).
    fence(Ordering::Release);
    if b.kind == Kind::Huge {
        remember_unmapped(b.p);
        // SAFETY: the caller gives the block up.
        unsafe { global::free_by_address(b.p) };
        return;
    }
    // SAFETY: the block's bytes before the trailer are ours now.
    unsafe { ptr::write_bytes(b.p, FREE_FILL, b.capacity()) };
    quarantine(&b);
}

/// Checked `malloc`: `n` bytes at 16-byte alignment.
#[cfg(feature = "c-abi")]
pub(crate) fn alloc_c(n: usize) -> *mut u8 {
    alloc_bytes(n, 16, false)
}

/// Checked `malloc`/`calloc`/`memalign`: `n` bytes at `align`, zeroed if `zero`.
pub(crate) fn alloc_bytes(n: usize, align: usize, zero: bool) -> *mut u8 {
    if n >= MAX_REQUEST {
        return enomem();
    }
    let p = global::alloc_bytes(n + OVERHEAD, align, zero);
    if !p.is_null() {
        match find(p) {
            Found::Block(b) => arm(b, n),
            _ => die(format_args!(
                "internal error: fresh block {:#x} not found by address",
                p as usize
            )),
        }
    }
    p
}

/// Checked `free`: ignores null, aborts unless `p` is a live block of ours. True
/// unless `p` is null.
///
/// # Safety
/// None beyond C's: a live block of ours is given up; anything else aborts.
#[cfg(feature = "c-abi")]
pub(crate) unsafe fn free_by_address(p: *mut u8) -> bool {
    if p.is_null() {
        return false;
    }
    let (b, n) = live_block(p, Verb::Free);
    // SAFETY: live_block checked that `b` is a live block; the caller gives it up.
    unsafe { retire(b, n) };
    true
}

/// Checked `realloc` (non-null `p`, non-zero size).
///
/// # Safety
/// As for C's `realloc`; a pointer that is not a live block of ours aborts.
#[cfg(feature = "c-abi")]
pub(crate) unsafe fn realloc_by_address(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    let (b, n) = live_block(p, Verb::Realloc);
    // SAFETY: `b` is live with `n` bytes.
    let q = unsafe { resize(b, n, new_size, align) };
    crate::global::count_realloc(p, q);
    q
}

/// Checked `malloc_usable_size`: exactly the requested size (so that a caller
/// writing up to it never touches the canary); aborts on anything but a live block.
#[cfg(feature = "c-abi")]
pub(crate) fn malloc_usable_size(p: *const u8) -> usize {
    live_block(p, Verb::UsableSize).1
}

/// `strata::usable_size` in checked mode: the requested size of a live block, None
/// for anything else (a query: it does not abort).
pub(crate) fn usable_size(p: *const u8) -> Option<usize> {
    match find(p) {
        Found::Block(b) => b.live_size(),
        _ => None,
    }
}

/// Resizes the live block `b` of `n` bytes to `new_size`: in place where the plain
/// allocator would (same class, Large span resized in place, huge `mremap`), else by
/// a new block, a copy and a checked free of the old one (which goes to quarantine,
/// so writes through the stale pointer are caught).
///
/// # Safety
/// `b` is a live block of `n` bytes that the caller gives up on success.
unsafe fn resize(b: Block, n: usize, new_size: usize, align: usize) -> *mut u8 {
    if new_size >= MAX_REQUEST {
        return enomem();
    }
    let total = new_size + OVERHEAD;
    match b.kind {
        Kind::Small(c) => {
            if class_for(total, align) == Some(c) {
                arm(b, new_size);
                return b.p;
            }
        }
        Kind::Large => {
            if route(total, align) == Route::Large {
                // Clear the old trailer first: after a shrink its word lies in pages
                // that go back to the page heap, and a live-looking word must not
                // outlive its block there.
                let old = b.trailer().swap(0, Ordering::Relaxed);
                // SAFETY: `b` is a live Large block (checked by address and trailer).
                if unsafe { BACKEND.resize_large_in_place(b.p, total) } {
                    match find(b.p) {
                        Found::Block(nb) => arm(nb, new_size),
                        _ => die(format_args!(
                            "internal error: resized block {:#x} not found",
                            b.p as usize
                        )),
                    }
                    return b.p;
                }
                // Not resized: the block keeps its trailer, generation included.
                b.trailer().store(old, Ordering::Relaxed);
            }
        }
        Kind::Huge => {
            if align <= OS_PAGE && route(total, align) == Route::Huge {
                // SAFETY: a live huge block aligned to at most a page; on failure it
                // stays intact, trailer included.
                let q = unsafe { BACKEND.realloc_huge(b.p, total) };
                if q.is_null() {
                    return enomem();
                }
                if q != b.p {
                    remember_unmapped(b.p);
                }
                let len = BACKEND.huge.lookup(q).unwrap_or(total);
                let nb = Block {
                    p: q,
                    slot: len,
                    kind: Kind::Huge,
                };
                arm(nb, new_size);
                return q;
            }
        }
    }
    let q = alloc_bytes(new_size, align, false);
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct; `b` holds n bytes, `q` new_size.
        unsafe {
            ptr::copy_nonoverlapping(b.p, q, n.min(new_size));
            retire(b, n);
        }
    }
    q
}

/// Rust's `dealloc`/`realloc` also promise the layout the block was allocated with.
fn check_layout(b: Block, n: usize, layout: Layout, verb: Verb) {
    if layout.size() != n || (b.p as usize) % layout.align() != 0 {
        die(format_args!(
            "size mismatch in {verb} of {:#x} ({}): the layout says {} bytes at align {}, the \
             block was allocated with {n} bytes",
            b.p as usize,
            Desc(b),
            layout.size(),
            layout.align()
        ));
    }
}

// SAFETY: blocks come from the same tiers as in the plain build, `size + 9` bytes at
// the layout's alignment, so the first `size` bytes are the caller's; a block is not
// handed out again before it is freed (it even waits in quarantine); failures return
// null; misuse aborts (never unwinds).
unsafe impl GlobalAlloc for Strata {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc_bytes(layout.size(), layout.align(), false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc_bytes(layout.size(), layout.align(), true)
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let (b, n) = live_block(p, Verb::Dealloc);
        check_layout(b, n, layout, Verb::Dealloc);
        // SAFETY: checked live; the caller gives it up.
        unsafe { retire(b, n) };
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (b, n) = live_block(p, Verb::Realloc);
        check_layout(b, n, layout, Verb::Realloc);
        // SAFETY: checked live with n bytes.
        let q = unsafe { resize(b, n, new_size, layout.align()) };
        crate::global::count_realloc(p, q);
        q
    }
}
