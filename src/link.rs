//! Free-list links: the first word of every free small object, encoded.
//!
//! Every free list of small objects (a thread cache's lists, the batches on the
//! transfer stacks, a span's list of returned objects) is intrusive: a free object's
//! first word links to the next one. That word is exactly what a buffer overflow out
//! of the block below, or a write after free, overwrites first. Stored plainly, an
//! overwritten link is followed by the next pop and the allocator hands out whatever
//! address was written: a write anywhere for whoever controls the bytes. So links are
//! stored encoded, and checked when they are decoded.
//!
//! # The encoding
//! ```text
//! stored = next ^ this ^ KEY          next = stored ^ this ^ KEY
//! ```
//! `this` is the address of the object holding the link, `KEY` a per-process random
//! word with bit 63 and bit 0 forced to 1. Why this shape:
//! - Random `KEY`: someone who can write a free object but not read one cannot make
//!   a link decode to an address of their choosing.
//! - Bit 63 of `KEY` set: every address we hand out or link is canonical user space
//!   (below 2^47), so any word that is itself below 2^47 (a pointer, a small integer,
//!   zero, a length) decodes to a word with bit 63 set, which the check below
//!   rejects, always, not with some probability. Bit 0 set does the same for 8-aligned
//!   words (a pointer written over a link decodes misaligned).
//! - `this` in the key binds the word to its slot: a link word copied or replayed
//!   into another free object does not decode to the same target, and the end of a
//!   list (the `END` link, see [`end`]) is not stored as the same word in every
//!   list's last object, which a read of one would otherwise give away. Detection does not depend on it (it
//!   costs one XOR on each side, 2 of the 6 instructions a pair; see
//!   `thread_heap.rs`).
//! - XOR only: encode is two XORs on top of the plain store (`this` is in a
//!   register, the key a memory operand: the thread heap's copy, see [`LinkKey`]);
//!   decode is two XORs (the load of the word folds into one), a mask test and a
//!   branch. mimalloc's `rotl(p ^ k1, k0) + k0` also hides the key from someone
//!   who reads links; that costs a rotate, an add and a second key, and is not what
//!   this is for (see limits).
//!
//! # The check
//! A decoded link must be a plausible object address (or null, or the list end
//! [`end`], which is one): canonical user space (`< 2^47`) and 8-aligned, one mask
//! test (`BAD_BITS`). Hardened, a chain ends at [`end`] in memory (a link to null
//! is stored as a link to it), whose own word never decodes: the thread cache's
//! `pop` needs no separate test for an empty list. It runs wherever a link is
//! followed: the thread heap's pop, its refill, the walk that splits a batch off a
//! list, and the central tier's walks (returning objects to spans, carving from a
//! span's list); validators report it as a violation instead. On failure the process
//! aborts with one line on stderr naming the object, its size class and its first
//! word (`corrupt_link`), written without allocating.
//!
//! # Limits
//! - A partial overwrite of the low bytes keeps the decoded high bits right: it
//!   passes the check when the result is 8-aligned (1 in 8 for a random byte) and
//!   then names a nearby address inside our heap, not an arbitrary one.
//! - Someone who can read a free object's first word and knows its address learns
//!   `next ^ KEY`, hence most of `KEY`; this is a guard against overwrites, not
//!   against an attacker who can both read and write freed memory.
//! - A double free is caught only while the block is still in the freeing thread's
//!   cache (`ThreadHeap::try_push` asks [`FreeObj::looks_free`], and `free_slow`
//!   walks the list to confirm); once the block has moved on to the central tier or
//!   another thread's cache, it is not. Checked mode catches every one.
//! - Corruption is found when the link is next followed, not when it is written.
//!
//! # The key's lifetime
//! `KEY` starts at 0 and is set once, by `ensure_key`, from the slow paths that run
//! before any link can be written: a thread heap's activation (every encode by a
//! thread cache happens on a live heap), carving objects from a span (every object
//! we link comes from a carve, or is a block handed back to a live heap), and a free
//! straight to the central tier (`Backend::free_small_direct`, for a thread whose
//! heap could not be set up). It
//! never changes afterwards (a fork keeps it, which is fine: the child's lists are
//! the parent's). Loads are Relaxed: any thread that encodes or decodes a link got
//! the object through a handoff (its own heap's creation, a lock, the transfer
//! stack) ordered after the initialisation, and as there is only one non-zero value
//! ever stored, coherence makes such a load return it. Under loom `KEY` is a
//! constant.

use crate::size_class::{ADDRESS_BITS, CLASS_SIZE, MIN_ALIGN, SizeClass};
#[cfg(not(strata_loom))]
use crate::sync::{AtomicUsize, Ordering};

/// An object on a free list. Its first word is the encoded link to the next object;
/// the field is private so that every read and write goes through
/// [`FreeObj::set_next`], [`FreeObj::next`] or [`FreeObj::try_next`].
#[repr(C)]
pub struct FreeObj {
    link: usize,
}

/// Whether links are encoded and checked: the `harden` feature, on by default. Off,
/// a link is the plain address of the next object and nothing is checked (the
/// key is still set, unused).
pub const HARDENED: bool = cfg!(feature = "harden");

/// Bits a decoded link must have clear: above canonical user space, and below the
/// minimum alignment.
const BAD_BITS: usize = !((1usize << ADDRESS_BITS) - 1) | (MIN_ALIGN - 1);

/// Bits forced into the key (module docs: why every canonical or aligned word
/// written over a link decodes with one of `BAD_BITS` set).
const KEY_FORCED: usize = (1 << 63) | 1;

const_assert!(KEY_FORCED & BAD_BITS == KEY_FORCED);

/// The object every free list ends at in memory, hardened (the end of a chain as a
/// link stores it, and a thread cache's empty list as its head holds it): never
/// handed out, never written, and its word never decodes, whatever the key (below).
/// So the thread cache's `pop` needs no test for an empty list: it decodes the
/// head's link as for any object, the check fails on `END`, and the branch that
/// reports a corrupt link first looks whether the object is `END` (an empty list:
/// a miss) instead (2 instructions fewer on `malloc`, `objdump -d`).
///
/// The word is `2^62`: decoded under the process's key (bit 63 forced to 1) it has
/// bit 63 set; under a sentinel's unset key (0) bit 62; either is in `BAD_BITS`.
/// Outside the fast paths `END` never shows: [`FreeObj::next`] and
/// [`FreeObj::try_next`] give null for it, and [`FreeObj::set_next`] stores null
/// as `END`. Without `harden`, links are not checked and `END` is null.
#[cfg(feature = "harden")]
static END_OBJ: FreeObj = FreeObj { link: 1 << 62 };

const_assert!((1usize << 62) & BAD_BITS != 0 && ((1usize << 62) ^ KEY_FORCED) & BAD_BITS != 0);

/// The end of a free list in memory: [`END_OBJ`]'s address hardened, else null.
#[inline(always)]
pub const fn end() -> *mut FreeObj {
    #[cfg(feature = "harden")]
    return (&raw const END_OBJ).cast_mut();
    #[cfg(not(feature = "harden"))]
    return core::ptr::null_mut();
}

/// `p`, with null as [`end`] (what a link or a list head stores).
#[inline(always)]
pub fn null_to_end(p: *mut FreeObj) -> *mut FreeObj {
    if HARDENED && p.is_null() { end() } else { p }
}

/// `p`, with [`end`] as null (what callers outside the fast paths see).
#[inline(always)]
pub fn end_to_null(p: *mut FreeObj) -> *mut FreeObj {
    if HARDENED && p == end() {
        core::ptr::null_mut()
    } else {
        p
    }
}

#[cfg(not(strata_loom))]
static KEY: AtomicUsize = AtomicUsize::new(0);

/// Loom: a fixed key (loom's atomics cannot live in statics; the models only need
/// links to round-trip).
#[cfg(strata_loom)]
const LOOM_KEY: usize = 0x9E37_79B9_7F4A_7C15 | KEY_FORCED;

/// The process's link key (0 before `ensure_key`).
#[inline(always)]
fn key() -> usize {
    // Relaxed: set once before any link exists and never changed (module docs).
    #[cfg(not(strata_loom))]
    return KEY.load(Ordering::Relaxed);
    #[cfg(strata_loom)]
    return LOOM_KEY;
}

/// A copy of the process's link key, for a fast path that has a better place to
/// load it from than the static (a thread heap keeps one next to its lists: one
/// load off the heap pointer already in a register, where the static costs a GOT
/// load and a load).
///
/// No `Debug`: the key is a secret and has no business in a message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LinkKey(usize);

impl LinkKey {
    /// No key: what a heap holds before it is activated (the sentinels forever;
    /// their lists are empty, so they never encode or decode).
    pub const UNSET: LinkKey = LinkKey(0);

    /// The process's key; set (by `ensure_key`) before any link is written.
    #[inline(always)]
    pub fn current() -> LinkKey {
        LinkKey(key())
    }
}

/// The mask of the check (`BAD_BITS`), for a fast path that keeps a copy in
/// memory beside its [`LinkKey`] copy: the test then takes it as a memory operand
/// off the heap pointer already in a register, where the constant costs a 10-byte
/// `movabs` into a register first (one instruction on each of pop and push).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LinkMask(usize);

impl LinkMask {
    /// The only value: the bits a decoded link must have clear.
    pub const BAD: LinkMask = LinkMask(BAD_BITS);
}

/// `this ^ key`: what both encoding a link into `this` and decoding the word found
/// there XOR in. A free fast path that does both (the double-free test of the
/// freed block's word, then the encode of its new link) computes it once: one XOR
/// less than two full encodings.
#[derive(Clone, Copy)]
pub struct Salt(usize);

/// Sets the link key if it is not set yet. Call on every slow path that comes before
/// the first link a thread writes (module docs, "The key's lifetime").
#[inline]
pub fn ensure_key() {
    #[cfg(not(strata_loom))]
    if key() == 0 {
        init_key();
    }
}

#[cfg(not(strata_loom))]
#[cold]
#[inline(never)]
fn init_key() {
    let k = crate::os::random_u64() as usize | KEY_FORCED;
    // Relaxed: the key is the only data. Racing initialisers agree through the CAS:
    // the loser's value is dropped and everyone reads the winner's from KEY.
    let _ = KEY.compare_exchange(0, k, Ordering::Relaxed, Ordering::Relaxed);
}

impl FreeObj {
    /// Makes `next` the link of `this` (encoded).
    ///
    /// # Safety
    /// `this` is a free object of ours (at least 8 bytes) that the caller owns; the
    /// link key is set (`ensure_key`).
    #[inline(always)]
    pub unsafe fn set_next(this: *mut FreeObj, next: *mut FreeObj) {
        // SAFETY: forwarded contract.
        unsafe { Self::set_next_keyed(this, next, LinkKey::current()) }
    }

    /// `set_next` with a key the caller loaded (`LinkKey::current()` or a copy).
    ///
    /// # Safety
    /// As for `set_next`, and `key` is the process's key.
    #[inline(always)]
    pub unsafe fn set_next_keyed(this: *mut FreeObj, next: *mut FreeObj, key: LinkKey) {
        let word = if HARDENED {
            debug_check!(key.0 != 0, "free-list link written before ensure_key");
            null_to_end(next) as usize ^ this as usize ^ key.0
        } else {
            next as usize
        };
        // SAFETY: per the contract `this` is writable and ours.
        unsafe { (*this).link = word };
    }

    /// The link of `this`, decoded and checked: aborts with a report naming `this`
    /// and its class `c` if the word does not decode to null or a plausible object
    /// address (a write after free or an overflow into the object).
    ///
    /// # Safety
    /// `this` is a free object of class `c` that the caller owns, whose link was
    /// written by `set_next`, or overwritten by a bug this is meant to catch.
    #[inline(always)]
    pub unsafe fn next(this: *mut FreeObj, c: SizeClass) -> *mut FreeObj {
        // SAFETY: forwarded contract.
        unsafe { Self::next_keyed(this, c, LinkKey::current()) }
    }

    /// `next` with a key the caller loaded (`LinkKey::current()` or a copy).
    ///
    /// # Safety
    /// As for `next`, and `key` is the process's key.
    #[inline(always)]
    pub unsafe fn next_keyed(this: *mut FreeObj, c: SizeClass, key: LinkKey) -> *mut FreeObj {
        // SAFETY: per the contract `this` is readable and ours.
        let word = unsafe { (*this).link };
        if !HARDENED {
            return word as *mut FreeObj;
        }
        let next = word ^ this as usize ^ key.0;
        // One mask test and a branch that is never taken in a correct program.
        if next & BAD_BITS != 0 {
            corrupt_link(this, c);
        }
        end_to_null(next as *mut FreeObj)
    }

    /// Whether the first word of `this`, a block being freed, decodes as a link
    /// (hardened builds; false otherwise): true for every block already on a free
    /// list, false for a block handed out since (its first word was cleared when it
    /// was handed out, [`FreeObj::clear`], and zero never decodes) unless the program
    /// wrote there a word that happens to decode, which the caller's confirmation
    /// (a walk of the list) tells apart. Three instructions and a branch on the
    /// free fast path: the load, the XOR with `this ^ key` that the encode computes
    /// anyway, the mask test.
    ///
    /// # Safety
    /// `this` is a block of ours, at least 8 bytes, that the caller gives up.
    #[inline(always)]
    pub unsafe fn looks_free(this: *mut FreeObj, key: LinkKey) -> bool {
        if !HARDENED {
            return false;
        }
        // SAFETY: per the contract `this` is readable and ours.
        let word = unsafe { (*this).link };
        (word ^ this as usize ^ key.0) & BAD_BITS == 0
    }

    /// The [`Salt`] of `this` under `key` (hardened builds; 0 otherwise).
    #[inline(always)]
    pub fn salt(this: *mut FreeObj, key: LinkKey) -> Salt {
        Salt(if HARDENED { this as usize ^ key.0 } else { 0 })
    }

    /// [`FreeObj::set_next_keyed`] with the salt of `this` computed already, and
    /// `next` as a list head stores it: [`end`] for none, never null when hardened
    /// (the thread cache's push passes its head as it is).
    ///
    /// # Safety
    /// As for `set_next`, and `salt` is `FreeObj::salt(this, key)` with the
    /// process's key.
    #[inline(always)]
    pub unsafe fn set_next_salted(this: *mut FreeObj, next: *mut FreeObj, salt: Salt) {
        debug_check!(
            !HARDENED || !next.is_null(),
            "set_next_salted: null for the end"
        );
        let word = if HARDENED {
            next as usize ^ salt.0
        } else {
            next as usize
        };
        // SAFETY: per the contract `this` is writable and ours.
        unsafe { (*this).link = word };
    }

    /// [`FreeObj::looks_free`] with the salt of `this` computed already and the
    /// mask from memory: a load, one XOR, one test (its operand the mask's copy)
    /// and the caller's branch.
    ///
    /// # Safety
    /// As for `looks_free`, and `salt` is `FreeObj::salt(this, key)` with the
    /// process's key.
    #[inline(always)]
    pub unsafe fn looks_free_salted(this: *mut FreeObj, salt: Salt, mask: LinkMask) -> bool {
        if !HARDENED {
            return false;
        }
        // SAFETY: per the contract `this` is readable and ours.
        let word = unsafe { (*this).link };
        (word ^ salt.0) & mask.0 == 0
    }

    /// The link of `this`, the head of a thread cache's list, decoded as it is
    /// stored (the list's end as [`end`], not null) and tested with the mask's copy
    /// `mask` (a memory operand, see [`LinkMask`]); None when `this` is [`end`]
    /// (the list is empty: its word never decodes). Aborts with a report, as
    /// [`FreeObj::next`], when any other object's link does not decode.
    ///
    /// # Safety
    /// `this` is [`end`] or a free object of class `c` that the caller owns, whose
    /// link was written by `set_next` (or overwritten by a bug this is meant to
    /// catch); `key` is the process's key, or 0 only if `this` is [`end`].
    #[inline(always)]
    pub unsafe fn pop_next(
        this: *mut FreeObj,
        c: SizeClass,
        key: LinkKey,
        mask: LinkMask,
    ) -> Option<*mut FreeObj> {
        if !HARDENED {
            if this.is_null() {
                return None;
            }
            // SAFETY: not the end (null): an object of ours, per the contract.
            return Some(unsafe { (*this).link } as *mut FreeObj);
        }
        // SAFETY: per the contract `this` is readable: an object of ours, or the
        // static END_OBJ.
        let next = unsafe { (*this).link } ^ this as usize ^ key.0;
        if next & mask.0 != 0 {
            // Taken in a correct program only at the end of a list (a miss).
            if this != end() {
                corrupt_link(this, c);
            }
            return None;
        }
        Some(next as *mut FreeObj)
    }

    /// Clears the link of `this`, a free object about to be handed to the program
    /// (hardened builds; nothing otherwise): a block fresh from `malloc` must not
    /// carry `next ^ this ^ KEY`, which with the next block's address gives the key
    /// away to anyone who reads uninitialised memory (glibc clears its tcache key
    /// the same way), and [`FreeObj::looks_free`] must not take it for a free one.
    /// One store on the alloc fast path.
    ///
    /// # Safety
    /// `this` is an object of ours that the caller owns and is handing out.
    #[inline(always)]
    pub unsafe fn clear(this: *mut FreeObj) {
        if HARDENED {
            // SAFETY: per the contract `this` is writable and ours.
            unsafe { (*this).link = 0 };
        }
    }

    /// The link of `this` read with a volatile load and decoded with `key` (the
    /// process's); None if it does not decode. For a thread cache's drainer,
    /// which reads the first links of a list whose owner may be finishing one
    /// operation on them (`front::thread_cache::drain`): a word that does not
    /// decode there is not corruption but the owner's write, and the caller leaves
    /// the list alone.
    ///
    /// # Safety
    /// `this` is an object of ours, at least 8 bytes, in a free list.
    #[inline]
    pub unsafe fn peek_next(this: *mut FreeObj, key: LinkKey) -> Option<*mut FreeObj> {
        // SAFETY: per the contract `this` is readable.
        let word = unsafe { core::ptr::read_volatile(&raw const (*this).link) };
        if !HARDENED {
            return Some(word as *mut FreeObj);
        }
        let next = word ^ this as usize ^ key.0;
        (next & BAD_BITS == 0).then_some(end_to_null(next as *mut FreeObj))
    }

    /// The link of `this`, decoded; None if it is not null or a plausible object
    /// address (for validators, which report instead of aborting).
    ///
    /// # Safety
    /// As for [`FreeObj::next`].
    #[inline]
    pub unsafe fn try_next(this: *mut FreeObj) -> Option<*mut FreeObj> {
        // SAFETY: per the contract `this` is readable and ours.
        let word = unsafe { (*this).link };
        if !HARDENED {
            return Some(word as *mut FreeObj);
        }
        let next = word ^ this as usize ^ key();
        (next & BAD_BITS == 0).then_some(end_to_null(next as *mut FreeObj))
    }
}

/// A free object's link does not decode: report it and abort. Never returns.
///
/// Reads the word again rather than taking it as an argument, so that the fast path
/// need not keep it in a register (it can XOR it straight from memory).
#[cold]
#[inline(never)]
fn corrupt_link(obj: *mut FreeObj, c: SizeClass) -> ! {
    // SAFETY: `obj` was just read by the caller (`next_keyed`'s contract).
    let word = unsafe { (*obj).link };
    let size = CLASS_SIZE.get(c.index()).copied().unwrap_or(0);
    report::die(format_args!(
        "free-list corruption: object {:#x} of class {} ({} B) has a bad link \
         (a write after free or a buffer overflow into a free block); its first word is \
         {:#x}",
        obj as usize, c.0, size, word
    ))
}

/// The block a thread frees is already in that thread's cache of its class, at
/// `depth` (0: the head of the list, the block freed last; glibc's "fasttop"
/// check; more: with other frees of the class in between, glibc's tcache check).
/// Report it and abort. Never returns.
#[cold]
#[inline(never)]
pub fn double_free(p: *mut u8, c: SizeClass, depth: usize) -> ! {
    let size = CLASS_SIZE.get(c.index()).copied().unwrap_or(0);
    if depth == 0 {
        report::die(format_args!(
            "double free of {:#x} (class {}, {} B): it is already the last block freed in \
             its size class on this thread",
            p as usize, c.0, size
        ))
    }
    report::die(format_args!(
        "double free of {:#x} (class {}, {} B): it is already in this thread's cache of \
         its size class ({} frees of the class ago)",
        p as usize, c.0, size, depth
    ))
}

/// Reports a double free found in a per-CPU cache (`STRATA_PERCPU=1`) and stops
/// the process.
#[cfg_attr(strata_loom, allow(dead_code))] // its caller, the front end, is not built under loom
pub fn double_free_percpu(p: *mut u8, c: SizeClass) -> ! {
    let size = CLASS_SIZE.get(c.index()).copied().unwrap_or(0);
    report::die(format_args!(
        "double free of {:#x} (class {}, {} B): it is already in a per-CPU cache of its \
         size class",
        p as usize, c.0, size
    ))
}

/// A span's free list (span at `base`, class `c`) holds `obj`, which is not one of
/// the span's objects or is on the list twice: report and abort. Never returns.
#[cold]
#[inline(never)]
pub fn corrupt_span_list(obj: *mut FreeObj, c: SizeClass, base: usize) -> ! {
    let size = CLASS_SIZE.get(c.index()).copied().unwrap_or(0);
    report::die(format_args!(
        "free-list corruption: the free list of the span at {:#x} (class {}, {} B) holds \
         {:#x}, which is not a free object of that span or is on the list twice (a write \
         after free, or a double free that went unnoticed)",
        base, c.0, size, obj as usize
    ))
}

#[cfg(not(strata_loom))]
use crate::report;

/// Loom: a panic fails the model with the message (there is no stderr report).
#[cfg(strata_loom)]
mod report {
    pub fn die(args: core::fmt::Arguments<'_>) -> ! {
        panic!("strata: {args}")
    }
}

#[cfg(all(test, not(strata_loom), feature = "harden"))]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_overwrites_do_not_decode() {
        ensure_key();
        let mut words = [0usize; 2];
        let wa = words.as_mut_ptr();
        // SAFETY: both words are in bounds of the array.
        let wb = unsafe { wa.add(1) };
        let (pa, pb) = (wa.cast::<FreeObj>(), wb.cast::<FreeObj>());
        // SAFETY: both objects are ours, 8-aligned and 8 bytes; every access below
        // goes through `wa`/`wb` or pointers derived from them.
        unsafe {
            FreeObj::set_next(pa, pb);
            FreeObj::set_next(pb, core::ptr::null_mut());
            assert_eq!(FreeObj::next(pa, SizeClass(0)), pb);
            assert!(FreeObj::next(pb, SizeClass(0)).is_null());
            // The stored words are neither the pointer nor null.
            assert_ne!(wa.read(), pb as usize);
            assert_ne!(wb.read(), 0);
            // Words written over a link fail the check: pointers, zero, small
            // integers, eight bytes of text.
            for w in [
                pb as usize,
                pa as usize,
                0,
                1,
                96,
                0x4141_4141_4141_4141,
                8 << 40,
            ] {
                wa.write(w);
                assert_eq!(FreeObj::try_next(pa), None, "{w:#x}");
            }
            // A link word copied into another object does not decode to its target.
            FreeObj::set_next(pa, pb);
            wb.write(wa.read());
            assert_ne!(FreeObj::try_next(pb), Some(pb));
        }
    }

    /// The list end (`end`): a null link is stored as a link to it and read back as
    /// null; the thread cache's decode gives it as it is stored, and finds the end
    /// itself (its word never decodes, under the process's key or a sentinel's 0).
    #[test]
    fn lists_end_at_the_end_object_and_the_pop_decode_finds_it() {
        ensure_key();
        let mut words = [0usize; 2];
        let wa = words.as_mut_ptr();
        // SAFETY: both words are in bounds of the array.
        let wb = unsafe { wa.add(1) };
        let (pa, pb) = (wa.cast::<FreeObj>(), wb.cast::<FreeObj>());
        let (key, mask) = (LinkKey::current(), LinkMask::BAD);
        // SAFETY: both objects are ours, 8-aligned and 8 bytes; END_OBJ is only read.
        unsafe {
            FreeObj::set_next(pa, pb);
            FreeObj::set_next(pb, core::ptr::null_mut());
            assert_eq!(FreeObj::try_next(pb), Some(core::ptr::null_mut()));
            assert_eq!(FreeObj::pop_next(pa, SizeClass(0), key, mask), Some(pb));
            assert_eq!(FreeObj::pop_next(pb, SizeClass(0), key, mask), Some(end()));
            assert_eq!(FreeObj::pop_next(end(), SizeClass(0), key, mask), None);
            assert_eq!(
                FreeObj::pop_next(end(), SizeClass(0), LinkKey::UNSET, mask),
                None
            );
            assert!(
                FreeObj::looks_free(pb, key),
                "a block linking to the end is free"
            );
        }
        assert_eq!(null_to_end(core::ptr::null_mut()), end());
        assert!(end_to_null(end()).is_null());
        assert_eq!(end_to_null(pa), pa);
    }
}
