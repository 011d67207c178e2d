//! The by-address back end of the C ABI and checked mode: what a pointer is
//! ([`owner_of`]), and `free`/`realloc` of a block known only by its address. A
//! pointer that is not the start of a block of ours is never read through.

use super::{BACKEND, free_small, free_small_miss, heap};
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
use super::{alloc_bytes, count_realloc};
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
use crate::backend::{Route, route};
use crate::chunk::{ChunkHeader, SpanKind, code_class, small_object, small_object_code};
use crate::front::thread_cache::ListOffset;
use crate::size_class::SizeClass;
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
use crate::size_class::class_for;
use core::ptr;

/// What a pointer is, found by address without reading through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// An object of this class in one of our chunks.
    Small(SizeClass),
    /// The start of a Large span of this many bytes.
    Large(usize),
    /// The start of a huge mapping of this many bytes.
    Huge(usize),
    /// Not the start of a block of ours.
    Foreign,
}

/// Classifies `p` by address (chunk map, page entries, huge registry). Small objects
/// must be object starts inside their span (`chunk::small_object`); the checked
/// mode adds its own, stricter checks on top.
#[inline]
pub(crate) fn owner_of(p: *const u8) -> Owner {
    if BACKEND.page_heap.owns(p) {
        // SAFETY: `p` lies in a mapped chunk (chunk map), so the header is readable;
        // page entries and kinds are atomics.
        unsafe {
            if let Some(c) = small_object(p as usize) {
                return Owner::Small(c);
            }
            let span = &*(*ChunkHeader::of(p)).span_of(p);
            // The page-map entry of a Large block's interior page may be stale (Span
            // invariant 2): only the span's own start counts.
            match span.kind() {
                SpanKind::Large if ptr::eq(span.base(), p) => Owner::Large(span.bytes()),
                _ => Owner::Foreign,
            }
        }
    } else {
        match BACKEND.huge.lookup(p) {
            Some(len) => Owner::Huge(len),
            None => Owner::Foreign,
        }
    }
}

/// The page code of `p`'s class (`chunk::small_object_code`, which scales to the
/// class's list offset in the addressing mode) if `p` is the start of an object in
/// a Small span of ours: the hot part of `free` by address (chunk map entry, page
/// entry, one multiply; never reads `p`). An interior or misaligned pointer pushed
/// on a free list would later hand out overlapping memory, so `small_object`
/// checks both, and the span's tail.
#[inline(always)]
fn small_code_of(p: *const u8) -> Option<usize> {
    if !BACKEND.page_heap.owns(p) {
        return None;
    }
    // SAFETY: `p` lies in a mapped chunk (chunk map).
    unsafe { small_object_code(p as usize) }
}

/// Frees a block of ours found by address; false (and nothing done) if `p` is null
/// or not the start of a block of ours.
///
/// Budget: 27 instructions for a small object whose list has room (`objdump -d` of
/// `free` in the `c-abi` build without `harden`): chunk map 8 (`ChunkMap::contains`;
/// null and high addresses included), page entry and object check 9
/// (`chunk::small_object_code`; the object checks sit beside the chunk map, one base
/// register for both), TLS 2 and push 8 (to the list by the page code scaled by 8:
/// `size_class::CODE_STRIDE`, no conversion to a class); three branches to the slow
/// path, none taken. `harden` adds 6 to the push (see `free_small`): 33 in all.
///
/// # Safety
/// If `p` is ours, it is live and the caller gives it up.
#[inline(always)]
pub(crate) unsafe fn free_by_address(p: *mut u8) -> bool {
    if let Some(code) = small_code_of(p) {
        let h = heap();
        // `Front::free_fast` of the thread caches (`try_push`), to the list by the
        // page code: a class would cost `free` a shift back, a zero-extension and a
        // shift up to the list's offset.
        // SAFETY: `p` is a live object of ours (contract) of the class whose page
        // code is `code` (`small_object_code`), given up; `h` is this thread's heap
        // or a sentinel.
        if unsafe { (*h).try_push_at(ListOffset::of_code(code), p) } {
            return true;
        }
        // A full list or a sentinel heap: on to the per-CPU hit (a thread served
        // per CPU comes here on every small free) or the slow path, with the class
        // and the heap known (no second lookup; the thread-cache hit is the same
        // instructions: callgrind ring pair 66.0 either way).
        // SAFETY: as above; the push did nothing, `p` is still given up.
        unsafe { free_small_miss(p, code_class(code), h) };
        return true;
    }
    // SAFETY: forwarded contract; `p` is not a small object of ours.
    unsafe { free_by_address_slow(p) }
}

/// `free_by_address` for everything but small objects (null, Large and Huge
/// blocks, foreign pointers), out of line so that the hot path saves no registers.
///
/// # Safety
/// As for `free_by_address`.
#[cold]
#[inline(never)]
unsafe fn free_by_address_slow(p: *mut u8) -> bool {
    if p.is_null() {
        return false;
    }
    // SAFETY: per the contract; each arm frees through the path the block came from.
    unsafe {
        match owner_of(p) {
            Owner::Small(c) => free_small(c, p),
            Owner::Large(_) => BACKEND.free_large(p),
            Owner::Huge(_) => BACKEND.free_huge(p),
            Owner::Foreign => {
                #[cfg(all(feature = "c-abi", not(feature = "checked")))]
                crate::bad_free::report(crate::bad_free::Op::Free, p, BACKEND.page_heap.owns(p));
                return false;
            }
        }
    }
    true
}

/// Resizes a block found by address, keeping `min(old, new)` bytes; new blocks get
/// `align`. Null (and `p` untouched) on failure or if `p` is not ours.
///
/// # Safety
/// If `p` is ours, it is live; on success the caller uses the result instead.
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
pub(crate) unsafe fn realloc_by_address(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    // SAFETY: forwarded contract.
    let q = unsafe { realloc_by_address_uncounted(p, new_size, align) };
    count_realloc(p, q);
    q
}

/// `realloc_by_address` without the statistics.
///
/// # Safety
/// As for `realloc_by_address`.
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
unsafe fn realloc_by_address_uncounted(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    let owner = owner_of(p);
    let old_size = match owner {
        Owner::Small(c) => {
            if class_for(new_size, align) == Some(c) {
                return p;
            }
            c.size_bytes()
        }
        Owner::Large(bytes) => {
            if route(new_size, align) == Route::Large {
                // SAFETY: `p` is the start of a live Large span of ours.
                let in_place = unsafe { BACKEND.resize_large_in_place(p, new_size) };
                if in_place {
                    return p;
                }
            }
            bytes
        }
        Owner::Huge(len) => {
            if route(new_size, align) == Route::Huge {
                // SAFETY: a live huge block; its mapping starts at `p` (the registry
                // says so), so mremap of the whole mapping is valid. C's realloc
                // promises only the default alignment, which mremap keeps.
                return unsafe { BACKEND.realloc_huge(p, new_size) };
            }
            len
        }
        Owner::Foreign => {
            crate::bad_free::report(crate::bad_free::Op::Realloc, p, BACKEND.page_heap.owns(p));
            return ptr::null_mut();
        }
    };
    let q = alloc_bytes(new_size, align, false);
    if !q.is_null() {
        // SAFETY: both blocks are live, distinct, and at least min(old, new) long;
        // `p` is ours (not Foreign) and given up.
        unsafe {
            ptr::copy_nonoverlapping(p, q, old_size.min(new_size));
            free_by_address(p);
        }
    }
    q
}
