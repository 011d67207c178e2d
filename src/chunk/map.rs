//! Which chunk-sized regions of the address space are strata's chunks, so that "is
//! this pointer ours?" never reads through the pointer.
//!
//! One implementation of the map's logic and orderings ([`ChunkMapOf`]) over a
//! store of one byte per chunk. The store is the only thing that differs between
//! builds: the process-wide static [`ProcessMap`] outside loom (loom's atomics
//! cannot live in statics), a small table keyed by chunk index ([`SparseMap`])
//! under loom and in unit tests, which run it at the tiny geometry too.

use crate::size_class::CHUNK_SHIFT;
#[cfg(not(strata_loom))]
use crate::size_class::ObjectChecks;
use crate::sync::{AtomicU8, Ordering};

/// Where a chunk map keeps its entries: one byte per chunk index, 0 (not ours) or 1.
pub trait MapStore {
    /// log2 of the chunk size: an address's chunk index is `addr >> CHUNK_SHIFT`.
    const CHUNK_SHIFT: usize;
    /// The entry of chunk index `idx`, if the store has one (none: not ours).
    fn entry(&self, idx: usize) -> Option<&AtomicU8>;
    /// The entry of `idx`, made if the store makes entries on demand. The caller
    /// holds the lock of the page heap that registers the chunk, so makes never race.
    fn entry_for_set(&self, idx: usize) -> Option<&AtomicU8>;
}

/// The chunk map of the built-in store (see [`ChunkMapOf`]).
pub type ChunkMap = ChunkMapOf<BuiltinStore>;

/// The store of the build: the static outside loom, the table under it.
#[cfg(not(strata_loom))]
pub type BuiltinStore = ProcessMap;
/// The store of the build: the static outside loom, the table under it.
#[cfg(strata_loom)]
pub type BuiltinStore = SparseMap<CHUNK_SHIFT>;

/// Which chunk-aligned regions of the address space are strata's chunks.
///
/// Invariant: `entry(a >> CHUNK_SHIFT) != 0` iff a chunk is mapped at `a`; set before
/// the chunk's first span is given out, cleared before the chunk is unmapped.
/// Entries are set and cleared under the lock of the chunk's page heap; `contains`
/// runs without it. Model-checked by `loom-tests/tests/chunk_map.rs`.
pub struct ChunkMapOf<S> {
    store: S,
}

/// The ordering of `set`'s store (Release; a mutant weakens it).
#[cfg(not(strata_mutant = "chunk_map_set_relaxed"))]
const SET_ORDER: Ordering = Ordering::Release;
#[cfg(strata_mutant = "chunk_map_set_relaxed")]
const SET_ORDER: Ordering = Ordering::Relaxed;
/// The ordering of `contains`'s load (Acquire; a mutant weakens it).
#[cfg(not(strata_mutant = "chunk_map_contains_relaxed"))]
const CONTAINS_ORDER: Ordering = Ordering::Acquire;
#[cfg(strata_mutant = "chunk_map_contains_relaxed")]
const CONTAINS_ORDER: Ordering = Ordering::Relaxed;

impl<S: MapStore> ChunkMapOf<S> {
    /// Marks the chunk at `addr` as ours.
    #[inline]
    pub fn set(&self, addr: usize) {
        if let Some(e) = self.store.entry_for_set(addr >> S::CHUNK_SHIFT) {
            // Release: pairs with the Acquire in contains(); the chunk header is
            // initialised before anyone sees the entry.
            e.store(1, SET_ORDER);
        }
    }

    /// Marks the chunk at `addr` as no longer ours. Relaxed: nothing is published;
    /// a lookup racing with the unmap of the chunk it asks about is the caller's
    /// use-after-free, not something an ordering can fix.
    #[inline]
    pub fn clear(&self, addr: usize) {
        if let Some(e) = self.store.entry(addr >> S::CHUNK_SHIFT) {
            e.store(0, Ordering::Relaxed);
        }
    }

    /// Whether `p` lies in one of our chunks. With the process map: a compare
    /// against the map's bound (which also rejects addresses at or above 2^47) and
    /// one byte load.
    #[inline(always)]
    pub fn contains(&self, p: *const u8) -> bool {
        match self.store.entry(p as usize >> S::CHUNK_SHIFT) {
            // Acquire: pairs with the Release in set().
            Some(e) => e.load(CONTAINS_ORDER) != 0,
            None => false,
        }
    }
}

impl ChunkMap {
    crate::sync::loom_const_fn! {
        /// The map of the built-in store (outside loom a handle on the process's).
        pub fn new() -> ChunkMap {
            ChunkMapOf {
                store: BuiltinStore::new(),
            }
        }
    }
}

impl Default for ChunkMap {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's map: one byte per possible chunk of the 47-bit user address space,
/// in the static `PROCESS` (32 MiB of `.bss`: address space only, whose pages are
/// touched only where chunks are). A lookup is `idx = p >> CHUNK_SHIFT;
/// idx < MAP_ENTRIES && PROCESS.map[idx] != 0`, eight instructions in `free`: the one
/// unsigned compare rejects addresses at or above 2^47, and null lands on entry 0,
/// which is never set (nothing of ours lies at address 0), so `free` needs no null
/// test of its own. A byte instead of a bit saves a bitmap's shift and bit test.
///
/// The map is the process's, not a field of each `PageHeap`, because a static's
/// address and bound are constants: a per-heap map, mapped on first use, cost
/// `free` a load of its pointer and a load of its bound (0 until mapped). Every page
/// heap of the process registers its chunks here; strata has one outside tests, and
/// what the map promises (the header of a chunk it names is mapped) holds for all.
#[cfg(not(strata_loom))]
pub struct ProcessMap;

/// Entries of the process map: one per chunk-sized region of the address space.
#[cfg(not(strata_loom))]
const MAP_ENTRIES: usize = 1 << (crate::size_class::ADDRESS_BITS - CHUNK_SHIFT);

/// The process's chunk map (see [`ProcessMap`]) after a copy of the object checks
/// (`size_class::OBJECT_CHECKS`), in one static so that `free` reaches both from
/// one base register: two statics cost it a second load of an address. All zero,
/// so all in `.bss`; the checks are copied in at the first chunk (`fill_checks`).
///
/// Invariant: the checks are a copy of `OBJECT_CHECKS`, written once, before any
/// map entry is set: `fill_checks` runs first in `entry_for_set` and returns only
/// once the copy is complete (Acquire of `CHECKS_STATE`, Released by the copier);
/// the entry's Release store follows, and `contains` loads the entry with Acquire.
/// So a thread that found a chunk in the map reads the checks after their only
/// write, and plain loads suffice (the multiply and compare take them as memory
/// operands; atomic loads would cost two instructions more). Zero checks accept
/// no object at all.
#[cfg(not(strata_loom))]
#[repr(C)]
struct ProcessStatic {
    checks: ChecksCell,
    map: [AtomicU8; MAP_ENTRIES],
}

/// The copy of the object checks in [`ProcessStatic`].
#[cfg(not(strata_loom))]
struct ChecksCell(core::cell::UnsafeCell<ObjectChecks>);

// SAFETY: written once by one thread before any reader can reach it, read-only
// after (ProcessStatic's invariant).
#[cfg(not(strata_loom))]
unsafe impl Sync for ChecksCell {}

#[cfg(not(strata_loom))]
static PROCESS: ProcessStatic = ProcessStatic {
    checks: ChecksCell(core::cell::UnsafeCell::new(ObjectChecks {
        magic: [0; 256],
        limit: [0; 256],
    })),
    map: [const { AtomicU8::new(0) }; MAP_ENTRIES],
};

/// The copy's state: 0 not copied, 1 being copied, 2 copied.
#[cfg(not(strata_loom))]
static CHECKS_STATE: AtomicU8 = AtomicU8::new(0);

/// Copies `OBJECT_CHECKS` into `PROCESS` once, before the process's first chunk
/// is marked (see [`ProcessStatic`]). A page heap that comes here while another
/// copies (tests run several) waits for the copy: 4 KiB, once a process. A
/// one-time initialisation, not a lock: while the state is 1 the copier only
/// copies (no lock taken, nothing called), so the wait always ends.
#[cfg(not(strata_loom))]
#[cold]
fn fill_checks() {
    // Acquire: pairs with the Release below; the copy is complete and visible.
    if CHECKS_STATE.load(Ordering::Acquire) == 2 {
        return;
    }
    if CHECKS_STATE
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: the state went 0 -> 1 here, so this thread alone writes the copy,
        // and no thread reads it yet: no map entry is set before the state is 2.
        unsafe {
            PROCESS
                .checks
                .0
                .get()
                .write(crate::size_class::OBJECT_CHECKS_VALUE)
        };
        CHECKS_STATE.store(2, Ordering::Release);
        return;
    }
    while CHECKS_STATE.load(Ordering::Acquire) != 2 {
        core::hint::spin_loop();
    }
}

/// Fork child: a copy another thread had under way at the fork would leave the
/// state at 1 forever, and the child's first chunk would wait for it; it goes
/// back to 0 and the next chunk copies again. (The process's page heap marks
/// chunks under its lock, which the fork handlers hold across the fork, so this
/// is for other page heaps only.)
#[cfg(not(strata_loom))]
pub(crate) fn after_fork_child() {
    // Relaxed: the child has one thread.
    let _ = CHECKS_STATE.compare_exchange(1, 0, Ordering::Relaxed, Ordering::Relaxed);
}

/// Fills the copy of the checks as the first chunk does, for unit tests that
/// build chunk headers by hand and ask `small_object` about them.
#[cfg(all(test, not(strata_loom)))]
pub(crate) fn fill_checks_for_tests() {
    fill_checks();
}

/// `OBJECT_CHECKS.accepts(code, offset)` through the copy beside the map.
///
/// # Safety
/// The chunk map said that the address is ours (so the copy is filled:
/// [`ProcessStatic`]).
#[cfg(not(strata_loom))]
#[inline(always)]
pub(crate) unsafe fn checks_accept(code: u8, offset: u32) -> bool {
    // SAFETY: written once before any entry was set (ProcessStatic's invariant),
    // and the caller saw an entry set (Acquire): no write races this read.
    unsafe { (*PROCESS.checks.0.get()).accepts(code, offset) }
}

/// `OBJECT_CHECKS.accepts` (loom has no process map).
///
/// # Safety
/// None needed; the same contract as outside loom.
#[cfg(strata_loom)]
#[inline(always)]
pub(crate) unsafe fn checks_accept(code: u8, offset: u32) -> bool {
    crate::size_class::OBJECT_CHECKS.accepts(code, offset)
}

#[cfg(not(strata_loom))]
impl ProcessMap {
    const fn new() -> ProcessMap {
        ProcessMap
    }
}

#[cfg(not(strata_loom))]
impl MapStore for ProcessMap {
    const CHUNK_SHIFT: usize = CHUNK_SHIFT;
    #[inline(always)]
    fn entry(&self, idx: usize) -> Option<&AtomicU8> {
        PROCESS.map.get(opaque(idx))
    }
    #[inline(always)]
    fn entry_for_set(&self, idx: usize) -> Option<&AtomicU8> {
        fill_checks();
        PROCESS.map.get(idx)
    }
}

/// `x`, through an empty `asm!` block (no instruction), so that the compiler cannot
/// see how it was computed. For the chunk-map index: seeing `(p >> 22) < 2^25`, LLVM
/// rewrites it as `p < 2^47`, which takes a shift of its own on x86-64 (the bound
/// does not fit an immediate), and then shifts again for the index: two instructions
/// more in `free`.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
pub(super) fn opaque(mut x: usize) -> usize {
    // SAFETY: the block is empty: it executes nothing and touches no memory.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    x
}
/// Elsewhere, and under Miri (which runs no `asm!`), the identity.
#[cfg(any(not(target_arch = "x86_64"), miri))]
#[inline(always)]
pub(super) fn opaque(x: usize) -> usize {
    x
}

/// A map for a few chunks at any addresses, at any geometry: `keys[i]` is 0 (unused)
/// or 1 + the chunk index whose entry is `entries[i]`. Keys are claimed in order and
/// never given back (a cleared chunk keeps its key; a chunk mapped there again reuses
/// it), so a lookup stops at the first unused key.
#[cfg(any(test, strata_loom))]
pub struct SparseMap<const SHIFT: usize> {
    keys: [crate::sync::AtomicUsize; SPARSE_ENTRIES],
    entries: [AtomicU8; SPARSE_ENTRIES],
}

/// Chunks a [`SparseMap`] can name.
#[cfg(any(test, strata_loom))]
const SPARSE_ENTRIES: usize = 8;

#[cfg(any(test, strata_loom))]
impl<const SHIFT: usize> SparseMap<SHIFT> {
    /// An empty map.
    pub fn new() -> Self {
        SparseMap {
            keys: core::array::from_fn(|_| crate::sync::AtomicUsize::new(0)),
            entries: core::array::from_fn(|_| AtomicU8::new(0)),
        }
    }
}

#[cfg(any(test, strata_loom))]
impl<const SHIFT: usize> MapStore for SparseMap<SHIFT> {
    const CHUNK_SHIFT: usize = SHIFT;
    /// Relaxed: a key is written before its entry's first `set` (same thread, under
    /// the page-heap lock), so a reader that sees the entry set through the Acquire
    /// in contains() also sees the key; a reader that misses the key answers "not
    /// ours", as it would before the `set`.
    fn entry(&self, idx: usize) -> Option<&AtomicU8> {
        for (k, e) in self.keys.iter().zip(&self.entries) {
            match k.load(Ordering::Relaxed) {
                0 => return None,
                v if v == idx + 1 => return Some(e),
                _ => {}
            }
        }
        None
    }
    fn entry_for_set(&self, idx: usize) -> Option<&AtomicU8> {
        for (k, e) in self.keys.iter().zip(&self.entries) {
            let v = k.load(Ordering::Relaxed);
            if v == 0 {
                // Relaxed: see `entry`.
                k.store(idx + 1, Ordering::Relaxed);
            }
            if v == 0 || v == idx + 1 {
                return Some(e);
            }
        }
        fatal!("sparse chunk map full: raise SPARSE_ENTRIES")
    }
}

#[cfg(all(test, not(strata_loom)))]
mod tests {
    use super::*;
    use crate::size_class::{ADDRESS_BITS, Geometry};

    const TINY_SHIFT: usize = Geometry::TINY.chunk_shift;

    /// The loom models' map, at their geometry, outside loom.
    #[test]
    fn tiny_geometry_map_names_exactly_the_chunks_set() {
        let map = ChunkMapOf {
            store: SparseMap::<TINY_SHIFT>::new(),
        };
        let chunk = Geometry::TINY.chunk_size();
        let bases = [3 * chunk, 7 * chunk, 1000 * chunk];
        for &b in &bases {
            assert!(!map.contains(b as *const u8));
            map.set(b);
        }
        for &b in &bases {
            assert!(map.contains(b as *const u8));
            assert!(map.contains((b + chunk - 1) as *const u8));
            assert!(!map.contains((b + chunk) as *const u8) || bases.contains(&(b + chunk)));
            assert!(!map.contains((b - 1) as *const u8));
        }
        assert!(!map.contains(core::ptr::null()));
        map.clear(bases[1]);
        assert!(!map.contains(bases[1] as *const u8));
        assert!(map.contains(bases[2] as *const u8));
        // A chunk mapped again at a cleared address reuses its key.
        map.set(bases[1]);
        assert!(map.contains(bases[1] as *const u8));
        assert_eq!(
            map.store
                .keys
                .iter()
                .filter(|k| k.load(Ordering::Relaxed) != 0)
                .count(),
            3
        );
    }

    /// The copy of the object checks beside the map, once a chunk is set, is
    /// `OBJECT_CHECKS` (ProcessStatic's invariant).
    #[test]
    fn the_checks_beside_the_map_are_the_object_checks_once_a_chunk_is_set() {
        let map = ChunkMap::new();
        // An address far from anything a test maps: the entry is set and cleared
        // again, and no chunk lies there for a lookup to read.
        let a = (1usize << (ADDRESS_BITS - 1)) + (5 << CHUNK_SHIFT);
        map.set(a);
        map.clear(a);
        let t = &crate::size_class::OBJECT_CHECKS;
        // SAFETY: an entry was set above, so the copy is complete and never written
        // again (ProcessStatic's invariant).
        let copy = unsafe { &*PROCESS.checks.0.get() };
        assert_eq!(copy.magic, t.magic);
        assert_eq!(copy.limit, t.limit);
        assert_eq!(CHECKS_STATE.load(Ordering::Acquire), 2);
    }

    #[test]
    fn process_map_rejects_addresses_beyond_user_space() {
        let map = ChunkMap::new();
        assert!(!map.contains(core::ptr::null()));
        assert!(!map.contains(usize::MAX as *const u8));
        assert!(!map.contains((1usize << ADDRESS_BITS) as *const u8));
    }
}
