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
}
