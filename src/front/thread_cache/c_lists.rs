//! C `malloc`'s size lookup straight to a list: the byte offset in a
//! [`ThreadHeap`] of the free list serving `size` bytes at 16-byte alignment, for
//! sizes up to [`C_TABLE_MAX`].
//!
//! `class_for_c_table` gives the class, which `pop` then scales by the list's size
//! (32 bytes): a register copy and a shift on every `malloc`. This table holds the
//! scaled value (the class's list offset) instead, so that the load gives the
//! address operand directly: 2 instructions fewer on the C fast path, for 2 KiB of
//! table instead of 1 (a program touches the lines of the sizes it asks for).

use super::{FreeList, ThreadHeap};
use crate::size_class::{CODE_STRIDE, NUM_CLASSES, SizeClass};
// The table is the shipped geometry's: loom's (two classes) serves no C sizes.
#[cfg(not(strata_loom))]
use crate::size_class::{C_TABLE_MAX, class_for};
use core::mem::{offset_of, size_of};

/// The byte offset of one class's free list in a [`ThreadHeap`]
/// (`lists[c]`): `c · 32`. Only [`list_for_c`] and [`ListOffset::of`] make one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOffset(u16);

// The lists are the heap's first field, and every class's offset fits a u16.
const_assert!(offset_of!(ThreadHeap, lists) == 0);
const_assert!(NUM_CLASSES * size_of::<FreeList>() <= u16::MAX as usize);

// `of_code`: a class's code times this is its list's offset, exactly.
const_assert!(size_of::<FreeList>() % CODE_STRIDE == 0);

impl ListOffset {
    /// The list of class `c`.
    #[inline(always)]
    pub const fn of(c: SizeClass) -> ListOffset {
        ListOffset((c.index() * size_of::<FreeList>()) as u16)
    }

    /// The list of the class whose page code (`size_class::page_code`) is `code`,
    /// as `chunk::small_object_code` gives it: the code times 8, an x86 scale.
    #[inline(always)]
    pub const fn of_code(code: usize) -> ListOffset {
        ListOffset((code * (size_of::<FreeList>() / CODE_STRIDE)) as u16)
    }

    /// The class whose list this is.
    #[inline(always)]
    pub const fn class(self) -> SizeClass {
        SizeClass((self.0 as usize / size_of::<FreeList>()) as u8)
    }

    /// The offset in bytes.
    #[inline(always)]
    pub(super) const fn bytes(self) -> usize {
        self.0 as usize
    }
}

#[cfg(not(strata_loom))]
/// Entries of [`C_LIST`]: a power of two, so that masking the index keeps it in
/// bounds without a check.
const C_LIST_LEN: usize = 1024;
#[cfg(not(strata_loom))]
const_assert!(C_TABLE_MAX / 16 < C_LIST_LEN);

#[cfg(not(strata_loom))]
/// The list offset of the class of `n` 16-byte units, for `n <= C_TABLE_MAX / 16`
/// (0 gets the class of 16 bytes, as glibc gives `malloc(0)` a minimum block).
#[allow(clippy::disallowed_macros)] // evaluated by the compiler
static C_LIST: [ListOffset; C_LIST_LEN] = {
    let mut t = [ListOffset(0); C_LIST_LEN];
    let mut n = 0;
    while n <= C_TABLE_MAX / 16 {
        let size = if n == 0 { 16 } else { 16 * n };
        match class_for(size, 16) {
            Some(c) => t[n] = ListOffset::of(c),
            None => panic!("C_TABLE_MAX is above the small sizes"),
        }
        n += 1;
    }
    t
};

#[cfg(not(strata_loom))]
/// The list serving C `malloc(size)` for `size <= C_TABLE_MAX`: an add, a shift
/// and a load (the same class as `class_for_c_table`).
// Only the C library's `malloc` uses it; the unit test below checks it in every build.
#[cfg_attr(
    not(all(feature = "c-abi", not(feature = "checked"))),
    allow(dead_code)
)]
#[inline(always)]
pub fn list_for_c(size: usize) -> ListOffset {
    debug_check!(size <= C_TABLE_MAX, "list_for_c: size above the table");
    // Masking instead of a bounds check: for size <= C_TABLE_MAX the index is at
    // most C_TABLE_MAX / 16.
    C_LIST[((size + 15) >> 4) & (C_LIST_LEN - 1)]
}

/// Sizes up to which C `malloc` finds its list by the size itself
/// ([`list_direct`]: one load, no rounding to 16-byte units).
#[cfg(not(strata_loom))]
pub const C_DIRECT_MAX: usize = 1024;

#[cfg(not(strata_loom))]
const_assert!(C_DIRECT_MAX <= C_TABLE_MAX);

#[cfg(not(strata_loom))]
/// The page code (`size_class::page_code`, which `ListOffset::of_code` scales to
/// the list in the addressing mode) of the class serving C `malloc(size)`, by
/// `size`, for `size <= C_DIRECT_MAX` (0 gets the class of 16 bytes, as in
/// [`C_LIST`]). 1,025 bytes, where `C_LIST` by 16-byte units takes an add and a
/// shift of the size first: 2 instructions fewer on `malloc` (`objdump -d`), as
/// mimalloc indexes its direct pages by the size up to 1 KiB. A program touches the
/// lines of the sizes it asks for (one per 64 sizes).
#[allow(clippy::disallowed_macros)] // evaluated by the compiler
static C_DIRECT: [u8; C_DIRECT_MAX + 1] = {
    let mut t = [0u8; C_DIRECT_MAX + 1];
    let mut size = 0;
    while size <= C_DIRECT_MAX {
        match class_for(if size == 0 { 16 } else { size }, 16) {
            Some(c) => t[size] = crate::size_class::page_code(c.index()),
            None => panic!("C_DIRECT_MAX is above the small sizes"),
        }
        size += 1;
    }
    t
};

#[cfg(not(strata_loom))]
/// The list serving C `malloc(size)` for `size <= C_DIRECT_MAX`: one load, the
/// size its index (the same list as [`list_for_c`]).
#[cfg_attr(
    not(all(feature = "c-abi", not(feature = "checked"))),
    allow(dead_code)
)]
#[inline(always)]
pub fn list_direct(size: usize) -> ListOffset {
    debug_check!(size <= C_DIRECT_MAX, "list_direct: size above the table");
    // `min` instead of a bounds check: the caller's test of the size makes it
    // vanish.
    ListOffset::of_code(C_DIRECT[size.min(C_DIRECT_MAX)] as usize)
}

#[cfg(all(test, not(strata_loom)))]
mod tests {
    use super::*;
    use crate::size_class::class_for_c_table;

    #[test]
    fn list_for_c_is_the_list_of_class_for_c_table() {
        for size in 0..=C_TABLE_MAX {
            let c = class_for_c_table(size);
            assert_eq!(list_for_c(size), ListOffset::of(c), "size {size}");
            assert_eq!(list_for_c(size).class(), c, "size {size}");
        }
    }

    #[test]
    fn list_direct_is_list_for_c() {
        for size in 0..=C_DIRECT_MAX {
            assert_eq!(list_direct(size), list_for_c(size), "size {size}");
        }
    }
}
