//! The operation language of the differential stress test (tests/stress_differential.rs)
//! and of the fuzz target (fuzz/fuzz_targets/ops.rs): malloc, calloc, aligned
//! allocation, realloc and free into a few slots, and hand-offs of blocks through a
//! shared mailbox (another thread frees them: cross-thread frees).
//!
//! Differential: next to the allocator runs a model of what every live block must
//! hold. Each block gets a tag; byte `i` of a block is `pattern(tag, i)`, so the
//! model needs no copy of the data: every operation that touches a block first
//! compares its whole content (and its alignment and usable size) with the model,
//! calloc'd blocks must read as zeros, realloc must keep the prefix. A mismatch
//! panics with the operation's number.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;
use strata::Strata;

/// SplitMix64: tiny, seedable, good enough to drive operations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One operation. Slots are taken modulo the machine's slot count; an allocation
/// into an occupied slot frees the old block first, so every sequence is valid.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `malloc`: `size` bytes at alignment 8.
    Malloc { slot: usize, size: usize },
    /// `calloc`: `size` zeroed bytes at alignment 16.
    Calloc { slot: usize, size: usize },
    /// `aligned_alloc`: `size` bytes at alignment `1 << align_log2`.
    Aligned {
        slot: usize,
        size: usize,
        align_log2: u32,
    },
    /// `realloc` to `size` bytes (alignment kept).
    Realloc { slot: usize, size: usize },
    /// `free`.
    Free { slot: usize },
    /// Moves the slot's block to the mailbox.
    Send { slot: usize },
    /// Takes a block (maybe another thread's) from the mailbox into the slot.
    Take { slot: usize },
}

/// A size from 32 random bits: mostly small, some up to 64 KiB, a few Large
/// (to 1 MiB) and huge (to 3 MiB).
pub fn size_from(r: u32) -> usize {
    let pick = r % 1000;
    let v = (r / 1000) as usize;
    match pick {
        0..=599 => 1 + v % 128,
        600..=849 => 129 + v % 3968,
        850..=959 => 4097 + v % 61440,
        960..=994 => 65537 + v % (1 << 20),
        _ => (1 << 20) + v % (2 << 20),
    }
}

/// An operation from a byte and 32 random bits (used by both the seeded generator
/// and the fuzz decoder).
pub fn op_from(code: u8, slot: usize, r: u32) -> Op {
    let size = size_from(r);
    match code % 100 {
        0..=29 => Op::Malloc { slot, size },
        30..=39 => Op::Calloc { slot, size },
        40..=49 => Op::Aligned {
            slot,
            size,
            // 8 B to 4 KiB mostly; now and then 64 KiB or 2 MiB (huge path).
            align_log2: match r % 16 {
                0 => 16,
                1 => 21,
                k => 3 + k % 10,
            },
        },
        50..=64 => Op::Realloc { slot, size },
        65..=89 => Op::Free { slot },
        90..=94 => Op::Send { slot },
        _ => Op::Take { slot },
    }
}

pub fn random_op(rng: &mut Rng, slots: usize) -> Op {
    let x = rng.next();
    op_from(x as u8, (x >> 8) as usize % slots, (x >> 32) as u32)
}

/// Byte `off` of a block tagged `tag`, eight at a time.
#[inline]
fn word(tag: u64, w: usize) -> u64 {
    let mut x = tag ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^ (x >> 29)
}

#[inline]
fn byte(tag: u64, off: usize) -> u8 {
    word(tag, off / 8).to_le_bytes()[off % 8]
}

/// Fills `[from, to)` of the block at `p` with its pattern.
///
/// # Safety
/// `p` is valid for writes of `to` bytes and 8-aligned.
unsafe fn fill(p: *mut u8, tag: u64, from: usize, to: usize) {
    let mut i = from;
    // SAFETY: every write is inside [from, to) of the block.
    unsafe {
        while i < to && i % 8 != 0 {
            *p.add(i) = byte(tag, i);
            i += 1;
        }
        while i + 8 <= to {
            (p.add(i) as *mut u64).write(u64::from_le_bytes(word(tag, i / 8).to_le_bytes()));
            i += 8;
        }
        while i < to {
            *p.add(i) = byte(tag, i);
            i += 1;
        }
    }
}

/// The first byte of `[0, len)` that differs from the pattern.
///
/// # Safety
/// `p` is valid for reads of `len` bytes and 8-aligned.
unsafe fn mismatch(p: *const u8, tag: u64, len: usize) -> Option<usize> {
    let mut i = 0;
    // SAFETY: every read is inside [0, len) of the block.
    unsafe {
        while i + 8 <= len {
            if (p.add(i) as *const u64).read() != u64::from_le_bytes(word(tag, i / 8).to_le_bytes())
            {
                break;
            }
            i += 8;
        }
        while i < len {
            if *p.add(i) != byte(tag, i) {
                return Some(i);
            }
            i += 1;
        }
    }
    None
}

/// A live block and what the model says it holds.
pub struct Block {
    p: *mut u8,
    layout: Layout,
    tag: u64,
}

// SAFETY: a block is owned by whoever holds this value; the memory is the
// allocator's, usable from any thread.
unsafe impl Send for Block {}

/// Shared between the machines of all threads.
#[derive(Default)]
pub struct Mailbox(Mutex<Vec<Block>>);

impl Mailbox {
    /// Frees every block left in the mailbox (checking each).
    pub fn drain(&self) -> usize {
        let blocks = std::mem::take(&mut *self.0.lock().unwrap());
        let n = blocks.len();
        for b in blocks {
            check(&b, u64::MAX);
            // SAFETY: a live block of this layout.
            unsafe { Strata.dealloc(b.p, b.layout) };
        }
        n
    }
}

/// Checks a block against the model; `at` is the operation number for the report.
fn check(b: &Block, at: u64) {
    assert!(
        b.p as usize % b.layout.align() == 0,
        "op {at}: {:p} not aligned to {}",
        b.p,
        b.layout.align()
    );
    let usable = strata::usable_size(b.p).unwrap_or(0);
    if strata::CHECKED {
        assert_eq!(usable, b.layout.size(), "op {at}: usable size of {:p}", b.p);
    } else {
        assert!(
            usable >= b.layout.size(),
            "op {at}: usable size of {:p}",
            b.p
        );
    }
    // SAFETY: a live block of b.layout.size() bytes, aligned to at least 8.
    if let Some(i) = unsafe { mismatch(b.p, b.tag, b.layout.size()) } {
        panic!(
            "op {at}: block {:p} ({} bytes, tag {:#x}) differs from the model at byte {i}",
            b.p,
            b.layout.size(),
            b.tag
        );
    }
}

/// One thread's interpreter.
pub struct Machine<'a> {
    slots: Vec<Option<Block>>,
    mailbox: &'a Mailbox,
    tag_base: u64,
    next_tag: u64,
    /// Operations run so far.
    pub ops: u64,
}

impl<'a> Machine<'a> {
    pub fn new(slots: usize, mailbox: &'a Mailbox, id: u64) -> Machine<'a> {
        Machine {
            slots: (0..slots).map(|_| None).collect(),
            mailbox,
            tag_base: id << 48,
            next_tag: 0,
            ops: 0,
        }
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.tag_base | self.next_tag
    }

    fn free_slot(&mut self, slot: usize) {
        if let Some(b) = self.slots[slot].take() {
            check(&b, self.ops);
            // SAFETY: a live block of this layout.
            unsafe { Strata.dealloc(b.p, b.layout) };
        }
    }

    fn alloc(&mut self, slot: usize, size: usize, align: usize, zero: bool) {
        self.free_slot(slot);
        let layout = Layout::from_size_align(size.max(1), align).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe {
            if zero {
                Strata.alloc_zeroed(layout)
            } else {
                Strata.alloc(layout)
            }
        };
        assert!(
            !p.is_null(),
            "op {}: allocation of {layout:?} failed",
            self.ops
        );
        if zero {
            // SAFETY: a fresh block of layout.size() bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
            if let Some(i) = bytes.iter().position(|&b| b != 0) {
                panic!(
                    "op {}: calloc'd block {p:p} has {:#x} at {i}",
                    self.ops, bytes[i]
                );
            }
        }
        let tag = self.tag();
        // SAFETY: a fresh block of layout.size() bytes, aligned to at least 8.
        unsafe { fill(p, tag, 0, layout.size()) };
        self.slots[slot] = Some(Block { p, layout, tag });
    }

    /// Runs one operation.
    pub fn step(&mut self, op: Op) {
        self.ops += 1;
        let n = self.slots.len();
        match op {
            Op::Malloc { slot, size } => self.alloc(slot % n, size, 8, false),
            Op::Calloc { slot, size } => self.alloc(slot % n, size, 16, true),
            Op::Aligned {
                slot,
                size,
                align_log2,
            } => self.alloc(slot % n, size, 1 << align_log2, false),
            Op::Realloc { slot, size } => {
                let slot = slot % n;
                let Some(b) = self.slots[slot].take() else {
                    return self.alloc(slot, size, 8, false);
                };
                check(&b, self.ops);
                let (old, new) = (b.layout.size(), size.max(1));
                // SAFETY: a live block of this layout; new is non-zero.
                let q = unsafe { Strata.realloc(b.p, b.layout, new) };
                assert!(!q.is_null(), "op {}: realloc to {new} failed", self.ops);
                let layout = Layout::from_size_align(new, b.layout.align()).unwrap();
                let nb = Block {
                    p: q,
                    layout,
                    tag: b.tag,
                };
                // The prefix survived; the grown part gets the same tag's pattern.
                // SAFETY: the first min(old, new) bytes are the old block's.
                if let Some(i) = unsafe { mismatch(q, b.tag, old.min(new)) } {
                    panic!("op {}: realloc {:p} -> {q:p} lost byte {i}", self.ops, b.p);
                }
                // SAFETY: q holds `new` bytes.
                unsafe { fill(q, b.tag, old.min(new), new) };
                check(&nb, self.ops);
                self.slots[slot] = Some(nb);
            }
            Op::Free { slot } => self.free_slot(slot % n),
            Op::Send { slot } => {
                if let Some(b) = self.slots[slot % n].take() {
                    check(&b, self.ops);
                    self.mailbox.0.lock().unwrap().push(b);
                }
            }
            Op::Take { slot } => {
                let slot = slot % n;
                let taken = {
                    let mut m = self.mailbox.0.lock().unwrap();
                    let len = m.len();
                    if len == 0 {
                        None
                    } else {
                        Some(m.swap_remove(self.next_tag as usize % len))
                    }
                };
                if let Some(b) = taken {
                    check(&b, self.ops);
                    self.free_slot(slot);
                    self.slots[slot] = Some(b);
                }
            }
        }
    }

    /// Frees every block in the slots (checking each).
    pub fn clear(&mut self) {
        for s in 0..self.slots.len() {
            self.free_slot(s);
        }
    }
}

impl Drop for Machine<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.clear();
        }
    }
}

/// Decodes a fuzz input into operations: 5 bytes each (code, slot, 3 size bytes
/// spread over 32 bits).
pub fn ops_from_bytes(data: &[u8]) -> impl Iterator<Item = Op> + '_ {
    data.chunks_exact(5).map(|c| {
        let r = u32::from_le_bytes([c[2], c[3], c[4], c[2] ^ c[4]]);
        op_from(c[0], c[1] as usize, r.wrapping_mul(0x9E37_79B9))
    })
}
