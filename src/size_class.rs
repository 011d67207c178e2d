//! Size classes and the allocator's geometry: const tables and pure functions, no
//! unsafe.
//!
//! Classes: exact 8-byte steps up to 128 B (16 classes), then 4 per doubling up to
//! [`MAX_SMALL`] (44 classes): between 2^e and 2^(e+1) the classes are
//! 2^e + k·2^(e-2), k = 1..=4. The worst internal waste is just under 20 % of the
//! class (a request of 2^e + 1 gets 2^e + 2^(e-2)); on a uniform mix it averages
//! about 10 %. Size → class is one table load on `size - 1` below 8 KiB and a few bit
//! operations above, see [`class_for`].
//!
//! Why 256 KiB is the small-object limit: below it a request is served from a thread
//! cache without a lock; above it each request takes the page-heap lock. Measured on
//! a ring of 8 live blocks (alloc+free pairs, median of 5, 2-core x86-64): 16 KiB to
//! 256 KiB cost 9-10 ns a pair through the thread cache, 260 KiB to 1 MiB cost 63-115
//! ns through the page heap. tcmalloc draws the line at the same size; a 256 KiB class
//! costs one 256 KiB span per object, so nothing is wasted by going that high.

/// Smallest alignment every block has.
pub const MIN_ALIGN: usize = 8;
/// Bits of user address space (x86-64 and aarch64 Linux with 4-level page tables):
/// every address we map lies below `1 << ADDRESS_BITS`.
pub const ADDRESS_BITS: usize = 47;

/// How a geometry spaces its size classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassScheme {
    /// The shipped classes: 8-byte steps up to 128 B, then four per doubling (module
    /// docs); spans of up to 64 KiB, batches of up to 32 objects.
    Quarters,
    /// Multiples of 64 B on one-page spans, batches of two: a model fills, empties
    /// and returns spans within a few operations.
    Tiny,
}

/// The allocator's geometry: every size that shapes chunks, spans, classes and the
/// metadata blocks, in one value. Every constant below ([`PAGE_SHIFT`],
/// [`NUM_CLASSES`], [`CLASS_SIZE`], [`OBJECT_CHECKS`], ...) is computed from
/// [`GEOMETRY`], the one that is built in; tests build tables for the other
/// geometry from the same `const fn`s (`ObjectChecks::new`,
/// [`Geometry::class_size`], ...), so the tiny geometry the loom models run on is
/// checked by ordinary unit tests too.
///
/// A plain value rather than a type parameter: the constants stay constants (array
/// lengths, immediates in the fast path), and no type in the crate grows a
/// parameter.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// log2 of the page size.
    pub page_shift: usize,
    /// log2 of the chunk size.
    pub chunk_shift: usize,
    /// Number of size classes.
    pub num_classes: usize,
    /// The largest small request (bytes); larger ones take whole pages.
    pub max_small: usize,
    /// How the classes are spaced.
    pub classes: ClassScheme,
    /// Bytes the metadata arena takes from the OS at a time.
    pub meta_block: usize,
    /// log2 of the batch descriptors in one block of the descriptor pool.
    pub desc_block_shift: u32,
    /// Blocks the descriptor pool can have.
    pub desc_dir_len: usize,
}

impl Geometry {
    /// The shipped geometry: 8 KiB pages, 4 MiB chunks, 60 classes up to 256 KiB.
    pub const REAL: Geometry = Geometry {
        page_shift: 13,
        chunk_shift: 22,
        num_classes: 60,
        max_small: 256 << 10,
        classes: ClassScheme::Quarters,
        meta_block: 256 << 10,
        // 512 chain descriptors of 16 bytes a block (array descriptors, 272
        // bytes, come 64 a block: transfer/desc.rs).
        desc_block_shift: 9,
        desc_dir_len: 4096,
    };
    /// The geometry of the loom models: 256 B pages, 4 KiB chunks (16 pages, of which
    /// the header takes 7: loom's atomics are bigger than the real ones), and two
    /// classes of 64 and 128 bytes on one-page spans: 4 and 2 objects a span.
    /// Metadata blocks of two OS pages (not one, so that a fake OS can tell arena
    /// blocks from the one-page chunks), descriptor blocks of 4.
    pub const TINY: Geometry = Geometry {
        page_shift: 8,
        chunk_shift: 12,
        num_classes: 2,
        max_small: 128,
        classes: ClassScheme::Tiny,
        meta_block: 2 * 4096,
        desc_block_shift: 2,
        desc_dir_len: 4,
    };

    /// Bytes per page.
    pub const fn page_size(&self) -> usize {
        1 << self.page_shift
    }
    /// Bytes per chunk.
    pub const fn chunk_size(&self) -> usize {
        1 << self.chunk_shift
    }
    /// Pages per chunk, header pages included.
    pub const fn pages_per_chunk(&self) -> usize {
        self.chunk_size() / self.page_size()
    }
    /// Bytes per object of class `c` (`c < num_classes`).
    pub const fn class_size(&self, c: usize) -> usize {
        match self.classes {
            ClassScheme::Tiny => 64 * (c + 1),
            ClassScheme::Quarters if c < 16 => 8 * (c + 1),
            ClassScheme::Quarters => {
                let e = 7 + (c - 16) / 4;
                let k = (c - 16) % 4;
                (1 << e) + (k + 1) * (1 << (e - 2))
            }
        }
    }
    /// Pages per span of class `c`.
    pub const fn span_pages(&self, c: usize) -> usize {
        let size = self.class_size(c);
        if let ClassScheme::Tiny = self.classes {
            return 1;
        }
        // At least one object, and up to 16 objects within 64 KiB; then the fewest
        // pages that waste at most 1/8 of the span on the tail.
        let want = if 16 * size < 64 << 10 {
            16 * size
        } else {
            64 << 10
        };
        let want = if want < size { size } else { want };
        let mut pages = want.div_ceil(self.page_size());
        while (pages * self.page_size()) % size > pages * self.page_size() / 8 {
            pages += 1;
        }
        pages
    }
    /// Objects per span of class `c`.
    pub const fn objects_per_span(&self, c: usize) -> usize {
        self.span_pages(c) * self.page_size() / self.class_size(c)
    }
    /// Objects per batch of class `c`.
    pub const fn batch(&self, c: usize) -> usize {
        if let ClassScheme::Tiny = self.classes {
            return 2;
        }
        let b = (64 << 10) / self.class_size(c);
        if b < 2 {
            2
        } else if b > 32 {
            32
        } else {
            b
        }
    }
    /// Objects in a thread cache's first refill of class `c` that carves from spans:
    /// what fits in [`FIRST_REFILL_BYTES`], at least one and at most a batch. Each
    /// later refill of the list doubles it, up to the batch (`thread_cache::slow`),
    /// so a small program's first use of a class touches a page or so of it, not
    /// the 64 KiB of a full batch of 2-4 KiB objects (whose links are written as
    /// they are carved).
    pub const fn first_refill(&self, c: usize) -> usize {
        let n = FIRST_REFILL_BYTES / self.class_size(c);
        let batch = self.batch(c);
        if n < 1 {
            1
        } else if n > batch {
            batch
        } else {
            n
        }
    }
    /// The longest a thread cache's list of class `c` may grow: 1 MiB of objects
    /// up to 2 KiB, 256 KiB above, at most 2,048 objects and at least two batches.
    /// glibc-simple's rounds of 400 and 1,600 objects of 256 B to 2 KiB overflowed
    /// 256 KiB lists through the central tier every round (0.89x tcmalloc; with 1
    /// MiB, 0.97x in interleaved runs: BENCHMARKS.md); the byte budget bounds the
    /// whole cache either way.
    pub const fn max_cached(&self, c: usize) -> usize {
        let size = self.class_size(c);
        let bytes = if size <= 2048 { 1 << 20 } else { 256 << 10 };
        let cap = bytes / size;
        let cap = if cap > 2048 { 2048 } else { cap };
        let batch = self.batch(c);
        if cap < 2 * batch { 2 * batch } else { cap }
    }
    /// The class of `m = size - 1` for `m < max_small`, by arithmetic.
    const fn class_of_m(&self, m: usize) -> SizeClass {
        match self.classes {
            ClassScheme::Tiny => SizeClass((m >> 6) as u8),
            ClassScheme::Quarters => class_of_m_arith(m),
        }
    }
    /// The class serving `size` bytes at alignment `align`, by arithmetic alone (the
    /// reference for [`class_for`], which takes tables for the shipped geometry).
    pub const fn class_for(&self, size: usize, align: usize) -> Option<SizeClass> {
        let m = round_up(size, align).wrapping_sub(1);
        if m < self.max_small && align <= self.page_size() {
            // Classes are multiples of 64 (Tiny), or of a quarter of their power of
            // two (Quarters): rounding the size to the alignment first makes the
            // class a multiple of it, as for `class_for`.
            Some(self.class_of_m(m))
        } else {
            None
        }
    }
}

/// The geometry built in: [`Geometry::TINY`] under loom (whose models must stay
/// small), [`Geometry::REAL`] everywhere else. The only place that chooses one.
pub const GEOMETRY: Geometry = if cfg!(strata_loom) {
    Geometry::TINY
} else {
    Geometry::REAL
};

/// log2 of the page size (8 KiB pages).
pub const PAGE_SHIFT: usize = GEOMETRY.page_shift;
/// log2 of the chunk size (4 MiB chunks).
pub const CHUNK_SHIFT: usize = GEOMETRY.chunk_shift;
/// Number of size classes.
pub const NUM_CLASSES: usize = GEOMETRY.num_classes;
/// The largest small request (bytes); larger ones take whole pages.
pub const MAX_SMALL: usize = GEOMETRY.max_small;

/// Bytes a thread cache's first refill of a class asks for (one OS page): see
/// [`Geometry::first_refill`].
pub const FIRST_REFILL_BYTES: usize = 4096;

/// A page: the unit spans are made of (8 KiB).
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// A chunk: the unit of address space taken from the OS, aligned to its size (4 MiB).
pub const CHUNK_SIZE: usize = 1 << CHUNK_SHIFT;
/// Pages in a chunk, header pages included.
pub const PAGES_PER_CHUNK: usize = CHUNK_SIZE / PAGE_SIZE;
/// Requests above this (or aligned above [`HUGE_ALIGN`]) get a mapping of their own.
pub const HUGE_THRESHOLD: usize = CHUNK_SIZE / 4;
/// Alignments above this go to their own mapping too (a span cannot be trimmed to it).
pub const HUGE_ALIGN: usize = CHUNK_SIZE / 4;

/// A size class index, `0..NUM_CLASSES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SizeClass(pub u8);

impl SizeClass {
    /// The index, for table lookups.
    #[inline(always)]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
    /// Bytes per object.
    #[inline(always)]
    pub const fn size_bytes(self) -> usize {
        CLASS_SIZE[self.0 as usize] as usize
    }
    /// Pages per span of this class.
    #[inline]
    pub const fn span_pages(self) -> usize {
        CLASS_PAGES[self.0 as usize] as usize
    }
    /// Objects per span of this class.
    #[inline]
    pub const fn objects_per_span(self) -> usize {
        self.span_pages() * PAGE_SIZE / self.size_bytes()
    }
    /// The index of the object that starts `offset` bytes into one of this class's
    /// spans, or None if no object starts there (not a multiple of the size, or in
    /// the span's tail, or beyond it). One multiply and one compare
    /// ([`ObjectChecks::accepts`]), and the high word of the same product: an
    /// accepted offset is `k·size`, and `k·size·m = k·2^64 + k·e` with
    /// `k·e < 2^64` (the low word, which the check compared), so the high word is
    /// `k`. No division.
    #[inline]
    pub fn object_index(self, offset: usize) -> Option<usize> {
        let code = page_code(self.index());
        let off = u32::try_from(offset).ok()?;
        if !OBJECT_CHECKS.accepts(code, off) {
            return None;
        }
        let m = OBJECT_CHECKS.magic[code as usize] as u128;
        Some(((off as u128 * m) >> 64) as usize)
    }
    /// Objects moved between a thread cache and the central tier at once.
    #[inline]
    pub const fn batch(self) -> usize {
        CLASS_BATCH[self.0 as usize] as usize
    }
    /// The longest a thread cache's list of this class may grow.
    #[inline]
    pub const fn max_cached(self) -> usize {
        CLASS_CAP[self.0 as usize] as usize
    }
}

/// The class arithmetic: 8-byte steps below 128, then 2^e <= m < 2^(e+1) with the
/// two bits below the top picking the quarter.
#[inline(always)]
const fn class_of_m_arith(m: usize) -> SizeClass {
    if m < 128 {
        SizeClass((m >> 3) as u8)
    } else {
        let e = (usize::BITS - 1 - m.leading_zeros()) as usize;
        let k = (m >> (e - 2)) & 3;
        SizeClass((4 * e + k - 12) as u8)
    }
}

/// `m = size - 1` below this takes [`SMALL_CLASS`] (8 KiB: Rust's `Vec`s and
/// `String`s of a few KiB too).
const SMALL_TABLE_M: usize = 8192;

/// The class of `m = size - 1` for `m < SMALL_TABLE_M`, indexed by `m >> 3`: one
/// load instead of ~10 instructions of bit arithmetic. Every class boundary below
/// 8 KiB is a multiple of 8, so `m >> 3` determines the class (checked as the table
/// is built). 1 KiB; a program touches the lines of the sizes it asks for.
///
/// A `const`, not a `static`: where `class_for` is inlined into another crate's
/// code (a program's `__rust_alloc`), a static of ours is reached through the
/// address table (rustc does not let the linker relax those loads), one more
/// dependent load on every allocation and free; a constant is emitted beside the
/// code that indexes it and addressed directly (`lea` off the instruction pointer).
#[allow(clippy::disallowed_macros)] // evaluated by the compiler
const SMALL_CLASS: [u8; SMALL_TABLE_M / 8] = {
    let mut t = [0u8; SMALL_TABLE_M / 8];
    let mut i = 0;
    while i < SMALL_TABLE_M / 8 {
        t[i] = class_of_m_arith(i * 8).0;
        assert!(class_of_m_arith(i * 8 + 7).0 == t[i]);
        i += 1;
    }
    t
};
/// The class serving `size` bytes at alignment `align`, or `None` when the request
/// is not small (too big, aligned beyond a page, or zero-sized).
///
/// Fast path (align known at compile time, as it is after inlining a `Layout`): a
/// subtract, a compare, a shift and a load. The tables are the shipped geometry's;
/// another geometry built in takes the arithmetic ([`Geometry::class_for`]; the
/// test is on a constant, so it costs nothing).
#[inline(always)]
pub const fn class_for(size: usize, align: usize) -> Option<SizeClass> {
    if let ClassScheme::Tiny = GEOMETRY.classes {
        return GEOMETRY.class_for(size, align);
    }
    // Every class is a multiple of 8, so at alignments up to 8 rounding the size
    // first changes nothing; above, rounding to the alignment makes the class a
    // multiple of it (every class is a multiple of 2^(e-2)) and spans are page
    // aligned, so the objects are aligned.
    let s = if align <= MIN_ALIGN {
        size
    } else {
        round_up(size, align)
    };
    // Working on s - 1 sends a zero size around to usize::MAX: the slow path.
    let m = s.wrapping_sub(1);
    if m < SMALL_TABLE_M {
        // m < 8 KiB implies align <= 8 KiB = PAGE_SIZE (s is a multiple of align when
        // align > 8), so the request is small.
        return Some(SizeClass(SMALL_CLASS[m >> 3]));
    }
    // One compare checks m < MAX_SMALL and align <= PAGE_SIZE together:
    // align << SMALL_ALIGN_SHIFT < MAX_SMALL exactly when align <= PAGE_SIZE.
    if (m | (align << SMALL_ALIGN_SHIFT)) < MAX_SMALL {
        Some(class_of_m_arith(m))
    } else {
        None
    }
}

/// Entries of [`C_CLASS`]: a power of two, so that masking the index keeps it in
/// bounds without a check.
const C_TABLE_LEN: usize = 1024;

/// The class of `n` 16-byte units for `n <= C_TABLE_MAX / 16`, by `n` (0 gets the
/// class of 16; the shipped geometry's classes): `class_for(size, 16)` rounds the
/// size up to its 16-byte units first, so they determine the class. 513 bytes are
/// used; a program touches the lines of the sizes it asks for.
static C_CLASS: [u8; C_TABLE_LEN] = {
    let mut t = [0u8; C_TABLE_LEN];
    let mut n = 0;
    while n <= C_TABLE_MAX / 16 {
        let size = if n == 0 { 16 } else { 16 * n };
        t[n] = class_of_m_arith(size - 1).0;
        n += 1;
    }
    t
};

/// The class serving C `malloc(size)` (16-byte alignment, glibc's `max_align_t`), or
/// `None` when the request is not small. Size 0 gets the smallest 16-byte class, as
/// glibc gives `malloc(0)` a minimum-size block.
///
/// Up to [`C_TABLE_MAX`] (8 KiB): a compare, an add, a shift and a load, by 16-byte
/// units, where `class_for(size, 16)` rounds, subtracts and shifts first (and above
/// 1 KiB takes ten instructions of bit arithmetic).
#[inline(always)]
pub fn class_for_c(size: usize) -> Option<SizeClass> {
    if size <= C_TABLE_MAX && matches!(GEOMETRY.classes, ClassScheme::Quarters) {
        Some(class_for_c_table(size))
    } else {
        class_for(size, 16)
    }
}

/// The largest size [`class_for_c_table`] takes: 8 KiB, so that the sizes C
/// programs ask for most (espresso's, glibc's thread benchmark's) take `malloc`'s
/// fast path rather than its out-of-line lookup.
pub const C_TABLE_MAX: usize = 8192;
const_assert!(C_TABLE_MAX / 16 < C_TABLE_LEN);

/// [`class_for_c`] for `size <= C_TABLE_MAX`: an add, a shift and a load.
#[inline(always)]
pub fn class_for_c_table(size: usize) -> SizeClass {
    debug_check!(
        size <= C_TABLE_MAX,
        "class_for_c_table: size above the table"
    );
    // Masking instead of a bounds check: for size <= C_TABLE_MAX the index is at
    // most C_TABLE_MAX / 16.
    SizeClass(C_CLASS[((size + 15) >> 4) & (C_TABLE_LEN - 1)])
}

/// `align << SMALL_ALIGN_SHIFT < MAX_SMALL` iff `align <= PAGE_SIZE`: see `class_for`.
const SMALL_ALIGN_SHIFT: u32 = (MAX_SMALL / PAGE_SIZE).trailing_zeros() - 1;

/// Rounds `size` up to a multiple of the power of two `align`; wraps on overflow
/// (the caller's range check then rejects it).
#[inline(always)]
pub const fn round_up(size: usize, align: usize) -> usize {
    size.wrapping_add(align - 1) & !(align - 1)
}

macro_rules! class_table {
    ($ty:ty, $f:expr) => {{
        let mut t = [0 as $ty; NUM_CLASSES];
        let mut c = 0;
        while c < NUM_CLASSES {
            t[c] = $f(c) as $ty;
            c += 1;
        }
        t
    }};
}

/// Bytes per object, by class.
pub static CLASS_SIZE: [u32; NUM_CLASSES] = class_table!(u32, size_for);
/// Pages per span, by class.
pub static CLASS_PAGES: [u16; NUM_CLASSES] = class_table!(u16, pages_for);
/// Objects per batch, by class.
pub static CLASS_BATCH: [u16; NUM_CLASSES] = class_table!(u16, batch_for);
/// Objects in a list's first carving refill, by class ([`Geometry::first_refill`]).
pub static CLASS_FIRST_REFILL: [u16; NUM_CLASSES] = class_table!(u16, first_refill_for);
/// Longest thread-cache list, by class.
pub static CLASS_CAP: [u16; NUM_CLASSES] = class_table!(u16, cap_for);

const fn size_for(c: usize) -> usize {
    GEOMETRY.class_size(c)
}
const fn pages_for(c: usize) -> usize {
    GEOMETRY.span_pages(c)
}
const fn batch_for(c: usize) -> usize {
    GEOMETRY.batch(c)
}
const fn first_refill_for(c: usize) -> usize {
    GEOMETRY.first_refill(c)
}
const fn cap_for(c: usize) -> usize {
    GEOMETRY.max_cached(c)
}

/// What `free` by address needs to know about each class to accept an offset into
/// one of its spans, indexed by a page's class code: `page_code(c)` for class `c`,
/// or [`NO_CLASS`] (and every other code that is not a class's), which accepts
/// nothing. 256 entries so
/// that a `u8` code needs no bounds check or mask; two arrays of 8-byte words rather
/// than one of pairs, so that the code indexes both with an x86 scale (there is no
/// ×16).
#[repr(C)]
pub struct ObjectChecks {
    /// `m = ⌊2^64 / size⌋ + 1`; 0 for a code that names no class.
    pub magic: [u64; 256],
    /// `objects_per_span × e`, where `e = m·size − 2^64` (`1 <= e <= size`); 0 for a
    /// code that names no class, so that nothing is accepted.
    pub limit: [u64; 256],
}

impl ObjectChecks {
    /// Whether `offset` (bytes from a span's base, as a 32-bit wrapping difference)
    /// is the start of one of the span's objects for class code `code`: a multiple
    /// of the class size, and below `objects_per_span × size` (not in the span's
    /// tail). One multiply and one compare, no division.
    ///
    /// Why it works (after Lemire, Kaser and Kurz, "Faster remainder by direct
    /// computation", 2019): write `offset = k·size + r` with `0 <= r < size`, and
    /// `q = offset·m mod 2^64 = k·e + r·m mod 2^64`. If `r == 0`, `q = k·e` (no wrap:
    /// `k·e <= 2^32`), which is below `limit = N·e` exactly when `k < N`. If `r > 0`,
    /// `r·m > 2^64 / size` and `k·e + r·m < 2^64 − 2^64/size + (k+1)·e <= 2^64`
    /// (as `(k+1)·e <= 2^32 + size <= 2^64 / size` for sizes up to 2^18), so `q` does
    /// not wrap and is at least `2^64 / size >= 2^46`, above every limit
    /// (`N·e <= N·size`, a span's bytes). `e >= 1` matters: with `e == 0` (a power of
    /// two size and `m = 2^64 / size`) every multiple would give `q == 0`.
    /// Checked for every class and every offset in a chunk, and at random above, by
    /// the tests below.
    #[inline(always)]
    pub fn accepts(&self, code: u8, offset: u32) -> bool {
        let c = code as usize;
        (offset as u64).wrapping_mul(self.magic[c]) < self.limit[c]
    }

    /// The checks of every class of geometry `g` ([`OBJECT_CHECKS`] is those of
    /// [`GEOMETRY`]; tests build the other's).
    pub const fn new(g: &Geometry) -> ObjectChecks {
        let mut t = ObjectChecks {
            magic: [0; 256],
            limit: [0; 256],
        };
        let mut c = 0;
        while c < g.num_classes {
            let code = page_code(c) as usize;
            (t.magic[code], t.limit[code]) = object_magic_and_limit(g, c);
            c += 1;
        }
        t
    }
}

#[allow(clippy::disallowed_macros)] // only called in constant initialisers
const fn object_magic_and_limit(g: &Geometry, c: usize) -> (u64, u64) {
    let size = g.class_size(c) as u128;
    let magic = ((1u128 << 64) / size) as u64 + 1;
    let e = (magic as u128 * size - (1u128 << 64)) as u64;
    let n = g.objects_per_span(c) as u64;
    assert!(e >= 1 && e as u128 <= size && size <= 1 << 18);
    (magic, n * e)
}

/// The class code of a page that holds no small objects (see [`OBJECT_CHECKS`]).
pub const NO_CLASS: u8 = u8::MAX;

/// Page entries hold class `c` as the code `c · CODE_STRIDE` (`page_code`), so that
/// C `free` reaches the class's thread-cache list (32 bytes a list) from the code
/// with an x86 scale of 8 and no shift. [`NO_CLASS`] is not a multiple of it.
pub const CODE_STRIDE: usize = 4;

/// The page-entry code of class `c` (see [`CODE_STRIDE`]).
#[inline(always)]
pub const fn page_code(c: usize) -> u8 {
    (c * CODE_STRIDE) as u8
}

const_assert!(NUM_CLASSES * CODE_STRIDE <= NO_CLASS as usize);
const_assert!(NO_CLASS as usize % CODE_STRIDE != 0);

/// [`ObjectChecks`] of every class.
pub static OBJECT_CHECKS: ObjectChecks = OBJECT_CHECKS_VALUE;
/// The value of [`OBJECT_CHECKS`], which `free` reads from a copy beside the chunk
/// map (`chunk::map`).
pub const OBJECT_CHECKS_VALUE: ObjectChecks = ObjectChecks::new(&GEOMETRY);

const_assert!(NUM_CLASSES <= 64 && CHUNK_SIZE <= 1 << 32 && NUM_CLASSES < NO_CLASS as usize);

const_assert!(GEOMETRY.class_size(NUM_CLASSES - 1) == MAX_SMALL);
// `class_for`'s table: every m below it is a small request at any alignment it allows.
const_assert!(
    !matches!(GEOMETRY.classes, ClassScheme::Quarters)
        || (SMALL_TABLE_M <= PAGE_SIZE && SMALL_TABLE_M <= MAX_SMALL)
);
// The tables of `class_for` and `class_for_c` and its one-compare range check are
// the shipped geometry's.
const_assert!(
    !matches!(GEOMETRY.classes, ClassScheme::Quarters)
        || (MAX_SMALL >> SMALL_ALIGN_SHIFT == 2 * PAGE_SIZE && MAX_SMALL >= C_TABLE_MAX)
);

#[cfg(all(test, not(strata_loom)))]
mod tests;
