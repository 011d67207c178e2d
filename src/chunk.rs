//! Chunks, their headers and page maps, spans, and the "is this pointer ours?" map.
//!
//! A chunk is [`CHUNK_SIZE`] bytes of address space aligned to its size, so
//! `p & !(CHUNK_SIZE - 1)` finds the header of any pointer inside it. The header
//! occupies the first [`HEADER_PAGES`] pages and holds one [`Span`] descriptor slot per
//! page (the span starting at that page uses it) and one [`PageEntry`] per page: the
//! first page of the span that covers the page (the page map), and for pages of
//! Small spans the class and the span's base, which is all that C `free` needs
//! ([`small_object`]).

//!
//! One implementation for every build: under loom only the `sync` shim changes (its
//! atomics, and the [`Witness`] that stands in for the header's plain fields), and
//! the geometry is [`GEOMETRY`](crate::size_class::GEOMETRY)'s.

mod map;
#[cfg(all(test, not(strata_loom)))]
mod tests;

pub use map::ChunkMap;
#[cfg(not(strata_loom))]
pub(crate) use map::after_fork_child;

use crate::link::FreeObj;
use crate::size_class::{
    CHUNK_SHIFT, CHUNK_SIZE, CODE_STRIDE, NO_CLASS, PAGE_SHIFT, PAGE_SIZE, PAGES_PER_CHUNK,
    SizeClass, page_code,
};
use crate::sync::{AtomicU8, AtomicU16, AtomicU32, LOOM, Ordering, Witness};
use core::ptr;

/// What a span descriptor slot currently describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SpanKind {
    /// The slot is not the start of any span.
    None = 0,
    /// Free pages owned by the page heap.
    Free = 1,
    /// Objects of one size class, owned by that class in the central tier.
    Small = 2,
    /// One large block handed to a user.
    Large = 3,
}

/// Span flag: every byte of the span's pages is known to be zero.
pub const SPAN_ZEROED: u8 = 1;
/// Span flag: the span is linked in its owner's list (a page-heap bin or a class's
/// partial list).
pub const SPAN_LISTED: u8 = 2;

/// A run of pages inside one chunk.
///
/// Invariants (checked by `PageHeap::validate` and `Central::validate`):
/// 1. `HEADER_PAGES <= start < start + npages <= PAGES_PER_CHUNK`; the spans of a
///    chunk tile its usable pages with no gap and no overlap.
/// 2. `first(p) == start` for every page of a Small span, and for the first and last
///    page of a Large or Free span (interior entries of those may be stale: lookups
///    by address check that the pointer lies inside the span they land on).
/// 3. Free: owned by the page heap under its lock, listed in bin `npages` (or in the
///    overflow bin), never adjacent to another Free span (coalesced).
/// 4. Small: owned by class `class` under that class's lock;
///    `live + |free list| + (capacity - carved) == capacity`, and it is listed in
///    the class's partial list iff it has an object to give (`free` non-null or
///    `carved < capacity`) and `live > 0`.
/// 5. `SPAN_ZEROED` is set only if every byte of the span's pages is zero.
/// 6. The page entries of a Small span name its class and base on every one of its
///    pages; those of every other page name no class (ChunkHeader invariant 3).
/// 7. A descriptor whose kind is not None sits in the slot of its first page:
///    `start` is its index in `ChunkHeader::spans`, so its base follows from its
///    address (`base` reads no field).
///
/// Aliasing: descriptors live in chunk headers that every thread reaches by address
/// (`free`, `usable_size`, statistics), so no `&mut Span` of a mapped chunk is ever
/// made. The atomics (`kind`, `class`) may be read by anyone; the other fields are
/// `LockedCell`s, written through `unsafe` setters by the holder of the lock of
/// the tier that owns the span (invariants 3 and 4) and read by it, or by the
/// owner of a Large span.
#[repr(C)]
pub struct Span {
    start: LockedCell<u32>,
    npages: LockedCell<u32>,
    kind: AtomicU8,
    class: AtomicU8,
    flags: LockedCell<u8>,
    free: LockedCell<*mut FreeObj>,
    carved: LockedCell<u32>,
    live: LockedCell<u32>,
    capacity: LockedCell<u32>,
    prev: LockedCell<*mut Span>,
    next: LockedCell<*mut Span>,
    free_since_ms: LockedCell<u64>,
}

/// A plain field of a span descriptor or chunk header, read and written only by
/// whoever holds the lock of the tier that owns it (Span invariants 3 and 4; the
/// page-heap lock for the header's links), so that a shared `&Span` or
/// `&ChunkHeader`, which any thread may hold, is never aliased by a `&mut`. `get`
/// and `set` compile to a plain load and store. Not loom-switched: the locks that
/// order these accesses are modelled, and loom's cells would change the loom
/// header's geometry.
#[repr(transparent)]
pub(crate) struct LockedCell<T>(core::cell::UnsafeCell<T>);

impl<T: Copy> LockedCell<T> {
    /// A cell holding `v` (a header built in place; see `ChunkHeader::init_in_place`).
    pub(crate) const fn new(v: T) -> LockedCell<T> {
        LockedCell(core::cell::UnsafeCell::new(v))
    }
    /// The value. The caller holds the owning lock (or owns the Large span): the
    /// `&` it reached the cell through was made under that argument.
    #[inline(always)]
    pub(crate) fn get(&self) -> T {
        // SAFETY: writes happen only under the owning lock (`set`'s contract), which
        // the reader holds too (above): no write races with this read.
        unsafe { *self.0.get() }
    }
    /// Sets the value.
    ///
    /// # Safety
    /// The caller holds the lock of the tier that owns the span or header (Span
    /// invariants 3/4), or the memory is not yet reachable by any other thread.
    #[inline(always)]
    pub(crate) unsafe fn set(&self, v: T) {
        // SAFETY: per the contract no other thread reads or writes the cell now; no
        // reference to its value is live (`get` copies).
        unsafe { *self.0.get() = v }
    }
}

/// Span field setters. Each is `unsafe`: the caller holds the lock of the tier that
/// owns the span (Span invariants 3/4), or the span is in a chunk no other thread
/// can reach yet.
macro_rules! span_fields {
    ($($(#[$doc:meta])* $get:ident, $set:ident: $t:ty;)*) => {
        impl Span {
            $(
                $(#[$doc])*
                #[inline(always)]
                pub fn $get(&self) -> $t {
                    self.$get.get()
                }
                /// Sets the field of the same name.
                ///
                /// # Safety
                /// The caller holds the lock of the tier that owns the span (Span
                /// invariants 3/4), or no other thread can reach the span yet.
                #[inline(always)]
                pub unsafe fn $set(&self, v: $t) {
                    // SAFETY: forwarded contract.
                    unsafe { self.$get.set(v) }
                }
            )*
        }
    };
}

span_fields! {
    /// First page of the span in its chunk (invariants 1 and 7).
    start, set_start: u32;
    /// Pages covered (invariant 1).
    npages, set_npages: u32;
    /// `SPAN_ZEROED` and `SPAN_LISTED`.
    flags, set_flags: u8;
    /// Small: the span's free list (invariant 4).
    free, set_free: *mut FreeObj;
    /// Small: objects carved so far (invariant 4).
    carved, set_carved: u32;
    /// Small: objects out of the span (invariant 4).
    live, set_live: u32;
    /// Small: objects the span holds (invariant 4).
    capacity, set_capacity: u32;
    /// Previous span in the owner's list (a bin or a class's partial list).
    prev, set_prev: *mut Span;
    /// Next span in the owner's list.
    next, set_next: *mut Span;
    /// Free: when the span became free (for the purge delay).
    free_since_ms, set_free_since_ms: u64;
}

// Loom's atomics are 8 bytes each, so under loom a Span is 80 bytes; the bound only
// matters for the real header's size.
const_assert!(LOOM || core::mem::size_of::<Span>() <= 64);

impl Span {
    /// A descriptor with every field zero and kind None (a fresh header's).
    fn empty() -> Span {
        Span {
            start: LockedCell::new(0),
            npages: LockedCell::new(0),
            kind: AtomicU8::new(SpanKind::None as u8),
            class: AtomicU8::new(0),
            flags: LockedCell::new(0),
            free: LockedCell::new(ptr::null_mut()),
            carved: LockedCell::new(0),
            live: LockedCell::new(0),
            capacity: LockedCell::new(0),
            prev: LockedCell::new(ptr::null_mut()),
            next: LockedCell::new(ptr::null_mut()),
            free_since_ms: LockedCell::new(0),
        }
    }

    /// The span's kind. Relaxed: a lookup of a live pointer is ordered after the
    /// span's set-up by the handoff that gave the pointer out; a bogus pointer only
    /// reads a stale but valid value.
    #[inline]
    pub fn kind(&self) -> SpanKind {
        match self.kind.load(Ordering::Relaxed) {
            1 => SpanKind::Free,
            2 => SpanKind::Small,
            3 => SpanKind::Large,
            _ => SpanKind::None,
        }
    }
    /// Sets the kind (under the lock of the tier that owns the span).
    #[inline]
    pub fn set_kind(&self, k: SpanKind) {
        self.kind.store(k as u8, Ordering::Relaxed);
    }
    /// The size class of a Small span.
    #[inline]
    pub fn class(&self) -> SizeClass {
        SizeClass(self.class.load(Ordering::Relaxed))
    }
    /// Sets the class (before the span is published to any other thread).
    #[inline]
    pub fn set_class(&self, c: SizeClass) {
        self.class.store(c.0, Ordering::Relaxed);
    }
    /// The chunk this descriptor lives in.
    #[inline]
    pub fn chunk(&self) -> *mut ChunkHeader {
        (self as *const Span as usize & !(CHUNK_SIZE - 1)) as *mut ChunkHeader
    }
    /// The descriptor's slot in its chunk's `spans`: its first page (invariant 7).
    #[inline]
    fn slot(&self) -> usize {
        (self as *const Span as usize - self.chunk() as usize - SPANS_OFFSET)
            / core::mem::size_of::<Span>()
    }
    /// First byte of the span's pages, from the descriptor's address (invariant 7),
    /// so that a lookup by address without a lock reads no plain field.
    #[inline]
    pub fn base(&self) -> *mut u8 {
        (self.chunk() as usize + (self.slot() << PAGE_SHIFT)) as *mut u8
    }
    /// Bytes covered.
    #[inline]
    pub fn bytes(&self) -> usize {
        (self.npages() as usize) << PAGE_SHIFT
    }
    /// Whether the span (Small) can give out an object.
    #[inline]
    pub fn has_free_object(&self) -> bool {
        !self.free().is_null() || self.carved() < self.capacity()
    }
}

/// What C `free` needs to accept a pointer into a page of a Small span: the span's
/// class and base (ChunkHeader invariant 3).
///
/// Eight bytes, so that `free` reaches it with a scaled index (see [`small_object`]);
/// the class a 32-bit word because the compiler re-extends a byte or a half-word
/// loaded atomically before using it as an index (one instruction more in `free`).
/// The same two atomics under loom, where each takes 8 bytes (the loom header is
/// bigger, see `HEADER_PAGES`).
#[repr(C, align(8))]
pub struct PageEntry {
    /// `(-base) mod 2^32`, `base` the address of the Small span's first byte: adding
    /// a pointer's low 32 bits gives its offset into the span.
    neg_base: AtomicU32,
    /// The Small span's class code (`page_code(class)`), or [`NO_CLASS`].
    class: AtomicU32,
}

/// Bytes per page entry: 8 outside loom (the scaled index in `small_object`).
const ENTRY_SIZE: usize = core::mem::size_of::<PageEntry>();
const_assert!(LOOM || ENTRY_SIZE == 8);
const_assert!(ENTRY_SIZE.is_power_of_two());

/// The header at the start of every chunk.
///
/// Invariants: 1. `magic == CHUNK_MAGIC` while the chunk is mapped.
/// 2. `next`/`prev` link every mapped chunk into the page heap's chunk list.
/// 3. `class(p) == c` and `neg_base(p) == (-base) mod 2^32` for every page `p` of a
///    Small span of class `c` whose first byte is at `base`; `class(p) == NO_CLASS`
///    for every other page (header pages, Free and Large spans). Every page is set
///    to `NO_CLASS` when the chunk is set up (`PageHeap::grow`), every page of a
///    Small span gets its class when the span is cut (`PageHeap::alloc_span`, before
///    the span is handed on) and loses it when the span comes back
///    (`PageHeap::free_locked`). Large spans map only their first and last page in
///    `first` (Span invariant 2), so without the reset a freed Small span's class
///    would survive in a later Large span's interior.
///
/// Aliasing: every thread reads headers by address (the page entries in `free`, the
/// span kinds in `usable_size`), so once the chunk map names a chunk no `&mut
/// ChunkHeader` of it is made: `magic`, `next` and `prev` are `LockedCell`s
/// (page-heap lock), the page map and entries atomics, and span descriptors are
/// reached as `&Span` or by [`ChunkHeader::span_ptr`]. A chunk not yet published is
/// set up through a raw pointer.
#[repr(C)]
pub struct ChunkHeader {
    magic: LockedCell<u64>,
    next: LockedCell<*mut ChunkHeader>,
    prev: LockedCell<*mut ChunkHeader>,
    /// Stands in for the header's plain fields in the loom model: marked when the
    /// chunk is set up and checked by every lookup through the page map, so that loom
    /// reports a lookup not ordered after the set-up (see `ChunkMap::set`). Zero
    /// bytes, and no code, outside loom.
    witness: Witness,
    /// The page map: the first page of the span covering each page (Span invariant
    /// 2).
    first: [AtomicU16; PAGES_PER_CHUNK],
    pages: [PageEntry; PAGES_PER_CHUNK],
    spans: [Span; PAGES_PER_CHUNK],
}

/// Marks a mapped chunk header (checked by validators).
pub const CHUNK_MAGIC: u64 = 0x5354_5241_5441_4348; // "STRATACH"

/// Pages taken by the header at the start of each chunk.
pub const HEADER_PAGES: usize = core::mem::size_of::<ChunkHeader>().div_ceil(PAGE_SIZE);
/// Pages a chunk can give to spans.
pub const USABLE_PAGES: usize = PAGES_PER_CHUNK - HEADER_PAGES;

const_assert!(HEADER_PAGES < PAGES_PER_CHUNK / 2);
const_assert!(PAGES_PER_CHUNK <= u16::MAX as usize);
// The page entries take 4 KiB of the header and cost no header page: it stays at 5.
// Under loom (8-byte atomics, 256 B pages) the header takes 7 of 16 pages.
const_assert!(HEADER_PAGES == if LOOM { 7 } else { 5 });

/// Byte offset of the page entries in a chunk header.
const PAGES_OFFSET: usize = core::mem::offset_of!(ChunkHeader, pages);
/// Byte offset of the span descriptors in a chunk header.
const SPANS_OFFSET: usize = core::mem::offset_of!(ChunkHeader, spans);

impl PageEntry {
    /// An entry naming no class (a header built in place).
    fn empty() -> PageEntry {
        PageEntry {
            neg_base: AtomicU32::new(0),
            class: AtomicU32::new(NO_CLASS as u32),
        }
    }
    /// Relaxed loads and stores throughout: entries are written under the page-heap
    /// lock when a span is cut, merged or returned, before the span is handed on; a
    /// lookup through a pointer the caller owns is ordered after that by the handoff
    /// that gave it the pointer (a lock or the transfer stack), and a lookup of any
    /// other address only needs some value once written (callers check containment).
    #[inline(always)]
    fn code(&self) -> u8 {
        let class = self.class.load(Ordering::Relaxed);
        // SAFETY: only ever written from a u8 (set_small, `empty`, or the zero of a
        // fresh chunk), and an atomic load returns a value once written. Saying so
        // spares `free` the zero-extension that a plain cast would cost.
        unsafe { core::hint::assert_unchecked(class <= u8::MAX as u32) };
        class as u8
    }
    #[inline(always)]
    fn neg_base(&self) -> u32 {
        self.neg_base.load(Ordering::Relaxed)
    }
    #[inline]
    fn set_small(&self, class: u8, neg_base: u32) {
        self.neg_base.store(neg_base, Ordering::Relaxed);
        self.class.store(class as u32, Ordering::Relaxed);
    }
}

/// The class of the Small-span object starting at address `a`, from its page's entry:
/// None unless the page belongs to a Small span (ChunkHeader invariant 3) and `a` is
/// the start of one of its objects (not interior, not in the span's tail). The hot
/// part of C `free`; it takes an address, not a pointer, as it never reads through
/// it.
///
/// The entry is reached without masking: with `idx = a >> CHUNK_SHIFT` (which the
/// chunk-map lookup just computed) the chunk is at `idx << CHUNK_SHIFT`, and
/// `(a >> PAGE_SHIFT) · E` (`E` = 8, the entry's size) is
/// `idx · PAGES_PER_CHUNK · E` plus the page's byte offset in the entry array, so
/// the entry lies at
/// `idx · (CHUNK_SIZE − PAGES_PER_CHUNK · E) + PAGES_OFFSET + (a >> PAGE_SHIFT) · E`:
/// one multiply by a constant, one shift and a scaled index, where masking out the
/// chunk and the page takes five instructions.
///
/// # Safety
/// `a` lies in a mapped chunk (the chunk map says so), so its header is readable.
#[inline(always)]
pub unsafe fn small_object(a: usize) -> Option<SizeClass> {
    // SAFETY: forwarded contract.
    unsafe { small_object_code(a) }.map(code_class)
}

/// [`small_object`] giving the page's class code (`page_code(class)`, a multiple of
/// [`CODE_STRIDE`] below 256) instead of the class: `free` by address scales the
/// code to the class's list offset in the addressing mode
/// (`ListOffset::of_code`), where a class costs a shift back, a zero-extension and
/// a shift up (3 instructions, `objdump -d` of `free`). The same checks accept the
/// same objects: `small_object(a) == small_object_code(a).map(code_class)`.
///
/// # Safety
/// As for `small_object`.
#[inline(always)]
pub unsafe fn small_object_code(a: usize) -> Option<usize> {
    // SAFETY: per the contract the header is mapped; only its witness is read (no
    // code outside loom).
    unsafe { (*ChunkHeader::of(a as *const u8)).check_published() };
    // `opaque` as in ChunkMap::contains, so that both share one index.
    let skew =
        map::opaque(a >> CHUNK_SHIFT).wrapping_mul(CHUNK_SIZE - PAGES_PER_CHUNK * ENTRY_SIZE);
    let at = skew
        .wrapping_add(PAGES_OFFSET)
        .wrapping_add((a >> PAGE_SHIFT) * ENTRY_SIZE);
    debug_check!(
        at == (a & !(CHUNK_SIZE - 1))
            + PAGES_OFFSET
            + ((a & (CHUNK_SIZE - 1)) >> PAGE_SHIFT) * ENTRY_SIZE,
        "small_object: skewed page-entry address differs from the masked one"
    );
    // SAFETY: `at` is the address of a's page entry (above), in the mapped header of
    // a's chunk (the contract); entries are atomics, so a stale read is not UB.
    let e = unsafe { &*(at as *const PageEntry) };
    // SAFETY: the chunk map said `a` is ours (the contract): the checks beside it
    // are filled.
    object_code(e, |code, off| unsafe { map::checks_accept(code, off) }, a)
}

/// The class of a page code that [`small_object_code`] accepted.
#[inline(always)]
pub fn code_class(code: usize) -> SizeClass {
    SizeClass((code / CODE_STRIDE) as u8)
}

/// The page code of the object starting at `a` by its page's entry `e` and the
/// object checks of the geometry (`small_object_code` without the lookup of the
/// entry).
#[inline(always)]
fn object_code(e: &PageEntry, accepts: impl Fn(u8, u32) -> bool, a: usize) -> Option<usize> {
    let code = e.code();
    if !accepts(code, e.neg_base().wrapping_add(a as u32)) {
        return None;
    }
    // SAFETY: the checks accept nothing for a code that is not `page_code` of a
    // class (their limit is 0 there), and those are multiples of CODE_STRIDE.
    unsafe { core::hint::assert_unchecked(code as usize % CODE_STRIDE == 0) };
    Some(code as usize)
}

/// The class of the object starting at `a` by its page's entry `e` and the object
/// checks of the geometry (`small_object` without the lookup of the entry).
#[cfg(test)]
#[inline(always)]
fn object_class(
    e: &PageEntry,
    checks: &crate::size_class::ObjectChecks,
    a: usize,
) -> Option<SizeClass> {
    object_code(e, |code, off| checks.accepts(code, off), a).map(code_class)
}

impl ChunkHeader {
    /// The chunk holding address `p` (which must lie inside a mapped chunk to be
    /// dereferenced).
    #[inline(always)]
    pub fn of(p: *const u8) -> *mut ChunkHeader {
        (p as usize & !(CHUNK_SIZE - 1)) as *mut ChunkHeader
    }
    /// The page index of `p` inside its chunk.
    #[inline(always)]
    pub fn page_of(p: *const u8) -> usize {
        (p as usize & (CHUNK_SIZE - 1)) >> PAGE_SHIFT
    }
    /// First page of the span covering `page` (meaningful per Span invariant 2).
    /// Relaxed, as the page entries (see `PageEntry`).
    #[inline]
    pub fn first(&self, page: usize) -> usize {
        self.first[page].load(Ordering::Relaxed) as usize
    }
    /// Records that `page` belongs to the span starting at `start`.
    #[inline]
    pub fn set_first(&self, page: usize, start: usize) {
        self.first[page].store(start as u16, Ordering::Relaxed);
    }
    /// The class of `page` (ChunkHeader invariant 3): a class or `NO_CLASS`.
    #[inline]
    pub fn page_class(&self, page: usize) -> u8 {
        match self.pages[page].code() {
            NO_CLASS => NO_CLASS,
            code => (code as usize / CODE_STRIDE) as u8,
        }
    }
    /// The base that `page`'s entry records, as `free` uses it (a 32-bit negation).
    #[inline]
    pub fn page_base_low32(&self, page: usize) -> u32 {
        self.pages[page].neg_base().wrapping_neg()
    }
    /// Records that `page` holds objects of class `c` of the span whose first byte is
    /// at `base` (ChunkHeader invariant 3).
    #[inline]
    pub fn set_small(&self, page: usize, c: SizeClass, base: *const u8) {
        self.pages[page].set_small(page_code(c.index()), (base as usize as u32).wrapping_neg());
    }
    /// Records that `page` holds no small objects (ChunkHeader invariant 3).
    #[inline]
    pub fn clear_small(&self, page: usize) {
        self.pages[page].set_small(NO_CLASS, 0);
    }
    /// The span covering `p`, by the page map.
    #[inline]
    pub fn span_of(&self, p: *const u8) -> *mut Span {
        self.check_published();
        // Masking instead of a bounds check: page-map entries are always page
        // indices, so the mask changes nothing and the lookup cannot panic.
        let start = self.first(Self::page_of(p)) & (PAGES_PER_CHUNK - 1);
        &self.spans[start] as *const Span as *mut Span
    }
    /// The descriptor in slot `i` (the span starting at page `i`, if any).
    #[inline]
    pub fn span(&self, i: usize) -> &Span {
        &self.spans[i]
    }
    /// The descriptor in slot `i` of `chunk`, by pointer arithmetic alone: no
    /// reference to the header or the descriptor is made.
    ///
    /// # Safety
    /// `chunk` is a chunk header's address and `i < PAGES_PER_CHUNK` (the result is
    /// dereferenceable while the chunk is mapped).
    #[inline]
    pub unsafe fn span_ptr(chunk: *mut ChunkHeader, i: usize) -> *mut Span {
        debug_check!(
            i < PAGES_PER_CHUNK,
            "span_ptr: slot index beyond the header"
        );
        // SAFETY: per the contract the slot lies inside the header's `spans`.
        unsafe { chunk.cast::<u8>().add(SPANS_OFFSET).cast::<Span>().add(i) }
    }
    /// `CHUNK_MAGIC` while the chunk is mapped (invariant 1; read under the
    /// page-heap lock, or by a validator holding it).
    #[inline]
    pub fn magic(&self) -> u64 {
        self.magic.get()
    }
    /// The next chunk in the page heap's list (page-heap lock held).
    #[inline]
    pub fn next(&self) -> *mut ChunkHeader {
        self.next.get()
    }
    /// The previous chunk in the page heap's list (page-heap lock held).
    #[inline]
    pub fn prev(&self) -> *mut ChunkHeader {
        self.prev.get()
    }
    /// Sets `magic`.
    ///
    /// # Safety
    /// The page-heap lock is held, or the chunk is not yet published.
    #[inline]
    pub unsafe fn set_magic(&self, v: u64) {
        // SAFETY: forwarded contract.
        unsafe { self.magic.set(v) }
    }
    /// Sets `next`.
    ///
    /// # Safety
    /// As for `set_magic`.
    #[inline]
    pub unsafe fn set_next(&self, v: *mut ChunkHeader) {
        // SAFETY: forwarded contract.
        unsafe { self.next.set(v) }
    }
    /// Sets `prev`.
    ///
    /// # Safety
    /// As for `set_magic`.
    #[inline]
    pub unsafe fn set_prev(&self, v: *mut ChunkHeader) {
        // SAFETY: forwarded contract.
        unsafe { self.prev.set(v) }
    }
    /// Base address of the chunk.
    #[inline]
    pub fn base(&self) -> *mut u8 {
        self as *const ChunkHeader as *mut u8
    }

    /// Builds a fresh header in zeroed chunk memory, where zero bytes are not one
    /// already: under loom, whose atomics and cells are handles into the model's
    /// object store. Outside loom zeroed memory is a valid header (null links, kind
    /// None, page map 0; the page entries are set by `PageHeap::grow`), so this does
    /// nothing, and `PageHeap::grow` relies on that.
    ///
    /// # Safety
    /// `chunk` is fresh chunk memory that no one else can see yet.
    pub unsafe fn init_in_place(chunk: *mut ChunkHeader) {
        if !LOOM {
            return;
        }
        // SAFETY: per the contract the header's memory is ours; `addr_of_mut!` never
        // creates a reference to the not-yet-valid fields.
        unsafe {
            ptr::addr_of_mut!((*chunk).witness).write(Witness::new_marked());
            let first = ptr::addr_of_mut!((*chunk).first).cast::<AtomicU16>();
            let pages = ptr::addr_of_mut!((*chunk).pages).cast::<PageEntry>();
            let spans = ptr::addr_of_mut!((*chunk).spans).cast::<Span>();
            for i in 0..PAGES_PER_CHUNK {
                first.add(i).write(AtomicU16::new(0));
                pages.add(i).write(PageEntry::empty());
                spans.add(i).write(Span::empty());
            }
        }
    }

    /// Under loom, reads the witness: loom fails the model ("causality violation")
    /// if the caller's view is not ordered after the chunk's set-up. Nothing
    /// outside loom.
    #[inline(always)]
    pub fn check_published(&self) {
        self.witness.check();
    }
}
