//! C `malloc` (the C ABI without checked mode): its fast path straight from the
//! size to a thread-cache list, and the out-of-line paths behind it.

use super::{alloc_other, alloc_small, alloc_small_miss, heap};
use crate::front::thread_cache::{C_DIRECT_MAX, ListOffset};
use crate::size_class::{C_TABLE_MAX, class_for_c};

/// C `malloc(size)`: [`alloc_bytes`] at 16-byte alignment (size 0 included).
/// Budget: 14 instructions up to 1 KiB (`C_DIRECT_MAX`) on a hit, 17 with `harden`
/// (callgrind and `objdump -d` of `malloc` in the `c-abi` build): size check 2, list
/// 2 (`list_direct`: the table's address and its load, indexed by the size itself,
/// giving the list's page code, which scales to the list in the addressing mode),
/// TLS 2, pop 8 (hardened 11: no empty-list test, the link check finds the list's
/// end, `link::end`). Up to 8 KiB (`C_TABLE_MAX`),
/// `alloc_c_medium` (2 more: its compare, and 16-byte units to round the size to).
/// A miss goes to `alloc_small_miss` with the list's class (the per-CPU hit or the
/// slow path), sizes above 8 KiB to `alloc_c_slow`.
#[inline(always)]
pub(crate) fn alloc_c(size: usize) -> *mut u8 {
    if size > C_DIRECT_MAX {
        return alloc_c_medium(size);
    }
    // The list straight from the size (its page code, not the class to scale).
    pop_or_slow(crate::front::thread_cache::list_direct(size))
}

/// `alloc_c` above 1 KiB: up to 8 KiB the list by 16-byte units (`list_for_c`),
/// above that `alloc_c_slow`.
#[inline(never)]
fn alloc_c_medium(size: usize) -> *mut u8 {
    if size <= C_TABLE_MAX {
        // The list straight from the size (its offset, not the class to scale).
        return pop_or_slow(crate::front::thread_cache::list_for_c(size));
    }
    alloc_c_slow(size)
}

/// A block from list `l` of the calling thread's heap (the list of the size's
/// class), or on a miss from [`alloc_small_miss`] with the list's class: a thread
/// served per CPU (whose sentinel's lists are always empty) goes straight on to
/// its CPU's stack, with no second lookup of the class.
#[inline(always)]
fn pop_or_slow(l: ListOffset) -> *mut u8 {
    let h = heap();
    // SAFETY: `h` is this thread's heap or a sentinel; `l` is a class's list.
    let p = unsafe { (*h).pop_at(l) };
    if !p.is_null() {
        return p;
    }
    alloc_small_miss(h, l.class())
}

/// `alloc_c` above 8 KiB (not cold: sizes up to 256 KiB are still small and
/// served from the thread cache here).
#[inline(never)]
fn alloc_c_slow(size: usize) -> *mut u8 {
    match class_for_c(size) {
        Some(c) => alloc_small(c),
        None => alloc_other(size, 16, false),
    }
}
