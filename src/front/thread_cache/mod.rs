//! The thread-cache front end: per thread, per size class, an intrusive free list.
//! The only fast path.
//!
//! Who calls whom: `global` calls the fast paths (`pop`, `try_push`) and, on a
//! miss, the slow paths (`slow`), through the [`crate::front::FrontEnd`]
//! interface, which `ThreadCaches` implements; the slow paths call the backend's
//! narrow front-end interface (`Backend::refill`, `Backend::flush`,
//! `Backend::note_flow`) and nothing below it. `pool` keeps every heap; `stats`
//! reads the heaps' atomic counters from above. Files: this one (the heap, its
//! lists, the fast paths and the counters others read), `slow` (refill, flush,
//! adaptive maxima), `pool`, `validate`.
//!
//! Call tree (global.rs drives it):
//! ```text
//! alloc:  size→class ─ tls heap ─ pop(c) ─── hit: one branch + the link check
//!                                  └ miss ─ alloc_slow(c) ─ Backend::refill ─ Central::refill ─ (TransferStack::pop | carve spans)
//! free:   size→class ─ tls heap ─ try_push ── hit: one branch
//!                                  └ full ─ free_slow(c, p) ─ grow max | Backend::flush ─ Central::flush ─ (push | spans)
//! ```
//! Budget, measured with callgrind (`examples/callgrind_pairs.sh`): 53.5
//! instructions per `GlobalAlloc` alloc+free pair net of the harness, class lookup
//! included (57.5 before the list end below, in the same checkout; the split of the
//! harness into codegen units moves it by up to 4); 44.5 without the `harden`
//! feature (the script prints both). Through the C ABI
//! (`benches/c_ring/callgrind.sh`, `global::alloc_c` and
//! `global::free_by_address`): 66.0 a pair with the benchmark's loop (16 of them;
//! mimalloc 66.6 in the same run), 57.0 without `harden`; unhardened, `malloc` is 14
//! instructions up to 1 KiB (size check 2, list 2: the table's address and
//! `list_direct`'s load, TLS 2, pop 8 with the empty-list test) and `free` 27 (chunk
//! map 8, page entry and object check 9, TLS and push 10). The statistics counter
//! `FreeList::allocs` is 1 of them.
//! `harden` is the other 9: `pop` has no empty-list test (an empty list's head is
//! the end of every list, `link::end`, whose link never decodes: the check below
//! fails on it, and only then does `pop` look whether the object is the end, −2),
//! loads the key off the heap, XORs it with the object's address and the link word
//! (the word's load folds into the XOR) and tests the result against the mask (a
//! memory operand: the heap's copy, `LinkMask`), a branch taken only at the end of
//! the list, and clears the object's link word so that a block handed out neither
//! gives the key away nor looks free (+3 in all); `try_push` loads the key and XORs
//! in the object's address once (the salt), tests whether the block's own first
//! word decodes as a link (a block already in a free list: a double free, which
//! `free_slow` confirms by walking the list): a load, an XOR with the salt, the
//! mask test and a branch never taken in a correct program, and encodes the new
//! link with one more XOR, the head its memory operand (6).
//! What the check costs beyond instructions: its load of the freed block's first
//! word is the one load of the block on the free path, and when the block is cold
//! (a program dropping a large collection) it misses and holds up retirement, where
//! the link's store alone would wait in the store buffer. Lists are addressed as
//! the heap pointer plus a [`ListOffset`] (`c_lists`), which the compiler folds into
//! each access; C `malloc` loads the offset straight from the size.
//! Keep other statistics, checks and zeroing out of `pop`/`try_push`.
//!
//! The two sentinel heaps (`EMPTY`: thread not set up yet; `DEAD`: thread torn down)
//! have every list empty with `max == 0`, so both fast paths miss on them without
//! a separate state check, and they are never written (`ThreadHeap` invariant 7).
//!
//! Aliasing: every method takes `&self`. A heap is reached by its owner, by the
//! pool (under the pool lock, while no thread owns it), by statistics on any thread
//! (through the list of all heaps), and the sentinels by every thread at once, so
//! no `&mut ThreadHeap` may exist. The fields the owner changes are `OwnerCell`s
//! (plain loads and stores, no `noalias` promise) or owner-written atomics
//! (`OwnedU32`/`OwnedU64`, which any thread may read).
//!
//! Each list's `max` adapts (tcmalloc's slow start): it starts at 0, grows by a batch
//! when a free overflows it (past a batch and 64 KiB, only if the list swings:
//! `FreeList::underflowed`, `slow::FREE_GROWTH_BYTES`), up to the class's cap, as long as the sum
//! of `max × size` over classes stays within the thread's byte budget; over budget,
//! a heap whose lists miss often (`slow`, `note_slow`) borrows room from the
//! process-wide pool, else other classes' `max` are lowered (stolen from) round
//! robin; a heap whose misses are rare grows a list past the budget only up to a
//! batch.

use crate::link::{FreeObj, HARDENED, LinkKey, LinkMask, ensure_key};
use crate::size_class::{NUM_CLASSES, SizeClass};
#[cfg(strata_loom)]
use crate::sync::UnsafeCell;
use crate::sync::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, LockRank, Ordering, OwnedU32, OwnedU64, RawLock,
    fence,
};
use cells::{ListHead, OwnerCell};
use core::ptr;

/// Default byte budget of one thread's cache (sum over classes of `max × size`): the
/// room each thread has of its own; one whose working set overflows it borrows more
/// from the process-wide `CachePool`, up to `BORROW_CAP_FACTOR` times this (`slow`).
pub const DEFAULT_CACHE_BUDGET: usize = 2 << 20;

/// One size class's free list.
///
/// Invariants: 1. `head` starts a chain of exactly `len` free objects of the class,
/// linked through their encoded first words (`link`) and ending at the list end
/// (`link::end()`, which a hardened head holds for an empty list: never null).
/// 2. after any free, `len <= max` or the list was just refilled (a refill may leave
/// `len` above `max`; the next free then flushes).
///
/// `len` and `allocs` are owner-written cells so that `stats()` on another thread
/// may read them; the owner's updates still compile to plain `add`/`sub` on memory.
/// `allocs` sits in the list (32 bytes, a power of two for the index) so that the
/// pop that counts it needs no second base register.
#[repr(C, align(32))]
pub struct FreeList {
    head: ListHead,
    len: OwnedU32,
    max: OwnerCell<u32>,
    /// Objects the next refill asks for (0: the class's first refill size). Starts
    /// small and doubles with every refill up to the batch (slow start, as `max`),
    /// so that a class a program uses a little costs it a little resident memory.
    refill_want: OwnerCell<u32>,
    /// Whether the list ran empty (a refill) since it last overflowed its max: the
    /// sign that its length swings over its whole range, so that a longer list would
    /// save misses at both ends (`free_slow` grows a long list's `max` only then,
    /// or in the same run of frees).
    underflowed: OwnerCell<bool>,
    /// Whether the list's last overflow past a batch grew `max`, and the low bits
    /// of `allocs` then: an overflow with no allocation since one that grew
    /// continues the same run of frees (`free_slow`).
    grew: OwnerCell<bool>,
    overflow_mark: OwnerCell<u16>,
    /// Objects of this class handed to the program by this heap, ever.
    allocs: OwnedU64,
}

#[cfg(not(strata_loom))]
const_assert!(core::mem::size_of::<FreeList>() == 32);

impl FreeList {
    crate::sync::loom_const_fn! {
        fn new() -> FreeList {
            FreeList {
                head: ListHead::new(),
                len: OwnedU32::new(0),
                max: OwnerCell::new(0),
                refill_want: OwnerCell::new(0),
                underflowed: OwnerCell::new(false),
                grew: OwnerCell::new(false),
                overflow_mark: OwnerCell::new(0),
                allocs: OwnedU64::new(0),
            }
        }
    }

    /// Forgets what the list learnt of its use: the next refill starts small
    /// again and no overflow counts as a swing (a flushed or drained list).
    fn forget_growth(&self) {
        self.refill_want.set(0);
        self.underflowed.set(false);
        self.grew.set(false);
    }
}

/// Bytes of net flow (objects received from minus returned to the central tier) a
/// heap accumulates before adding it to the process-wide figure behind
/// `peak_allocated_bytes`. Keeps that shared counter off the refill path; the figure
/// is then exact to within this much per thread.
const PUBLISH_BYTES: isize = 256 << 10;

/// What a heap has counted since it was created (never reset, also across reuse
/// through the pool), read by `stats()` from any thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapCounters {
    /// Objects handed to the program (pops, and the object a refill returns).
    pub allocs: u64,
    /// Objects received from the central tier.
    pub received: u64,
    /// Objects returned to the central tier (flushes, and frees sent there directly).
    pub returned: u64,
    /// Objects cached now.
    pub cached: u64,
    /// Reallocations, and those that kept the block in place.
    pub reallocs: u64,
    pub reallocs_in_place: u64,
}

impl HeapCounters {
    /// Frees into this heap: every object in or out of it is accounted for, so
    /// `received + frees == allocs + returned + cached` (each free is a push or a
    /// direct return; each alloc a pop).
    pub fn frees(&self) -> u64 {
        (self.allocs + self.returned + self.cached).saturating_sub(self.received)
    }
}

/// Lifecycle of the heap a thread's TLS points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HeapState {
    /// The shared sentinel for threads that have not allocated yet.
    Empty = 0,
    /// A real heap, owned by one thread.
    Live = 1,
    /// The shared sentinel for threads whose heap was torn down.
    Dead = 2,
    /// A heap in the pool, waiting for a new thread.
    Pooled = 3,
    /// The shared sentinel a drained heap's owner finds in its slot (`drain`): its
    /// slow path finds its heap again through the thread key.
    Drained = 4,
}

/// A thread's cache.
///
/// Invariants: those of `FreeList` for every class, and
/// 3. `max_bytes == Σ lists[c].max × size(c)`, and `max_bytes <= budget_bytes()` except
///    transiently while a smaller budget is being applied.
/// 8. the budget (`budget_bytes()`) is `base_budget + borrowed`, `borrowed` is room taken from the
///    backend's `CachePool` (invariant 1 there) and `borrowed <= BORROW_CAP_FACTOR ×
///    base_budget`; a heap that is not live borrows nothing.
/// 4. `received + frees == allocs + returned + Σ len` (see `HeapCounters`); the
///    counters only grow, and only the owner writes them.
/// 5. a live heap's `link_key` is the process's link key (`LinkKey::current()`);
///    every heap's `link_mask` is `LinkMask::BAD`.
/// 6. `move_seq` is odd exactly while the owner is moving objects between its lists
///    and the central tier (see [`ThreadHeap::move_seq`]); it only grows.
/// 7. A sentinel (`HeapState::Empty` or `Dead`, the process-wide statics every
///    thread's TLS starts or ends at) is never written: every list's `head` is the
///    end (`link::end()`, read as null), `len == 0` and `max == 0`, so `pop` returns
///    after failing to decode the end's link (it reads only the head and the end) and
///    `try_push` after reading `len >= max`, before any store; every other method
///    that writes is called only on a live or pooled heap (`global` checks `state()`
///    first). Many threads read a sentinel at once, through `&ThreadHeap` only.
///
/// 9. A live heap's lists are changed outside `pop` and `try_push` only with
///    `drain_lock` held: by its owner's slow paths, or by a drainer while the
///    owner sleeps and its TLS slot points at the `Drained` sentinel (`drain`).
///    While `drained` is set, `len` may be off (an operation in flight during the
///    drain) and the owner recounts (`settle`) before it trusts it. A heap that
///    is not live is not drainable (`tid` and `slot` 0: its retirement turned
///    drains off under the lock).
/// 10. The miss-rate measure (`slow`, `note_slow`): `since_rate < RATE_EVENTS`, and
///     `allocs_mark` is a sum of the lists' `allocs` taken at the last measure or
///     activation, so never above `allocs_total()` (the counters only grow).
///
/// Ownership: the plain fields (`OwnerCell`s) are read and written only by the
/// heap's owner: the thread whose TLS points at it while it is Live (or a drainer,
/// under `drain_lock`, while the owner sleeps and its slot points away from the
/// heap: `drain`), else whoever holds it under the pool lock. Any thread may read the atomic counters (`counters`,
/// `cached`, `class_allocs`, `move_seq`) at any time, and nothing else.
#[repr(C)]
pub struct ThreadHeap {
    lists: [FreeList; NUM_CLASSES],
    /// Statistics (invariant 4); the one on the fast path is `FreeList::allocs`.
    received: OwnedU64,
    returned: OwnedU64,
    reallocs: OwnedU64,
    reallocs_in_place: OwnedU64,
    /// The write side of a sequence lock over the heap's moves (invariant 6): a move
    /// takes objects out of one tier before it puts them in the other, and may wait
    /// for a class lock in between, so a snapshot reading both tiers meanwhile would
    /// count them as live. Only the owner writes it.
    move_seq: AtomicU64,
    /// Net bytes received from the central tier not yet added to the backend's
    /// figure (see `PUBLISH_BYTES`).
    unpublished: OwnerCell<isize>,
    /// The process's free-list link key (`link`), copied here when the heap goes
    /// live so that `pop` and `try_push` load it off the heap pointer they already
    /// hold (the static costs a GOT load more).
    link_key: OwnerCell<LinkKey>,
    /// The check's mask (`LinkMask::BAD`, in every heap, sentinels included), in
    /// memory beside the key so that the fast paths test against it as a memory
    /// operand (see [`LinkMask`]).
    link_mask: OwnerCell<LinkMask>,
    state: OwnerCell<HeapState>,
    steal_next: OwnerCell<u8>,
    max_bytes: OwnerCell<usize>,
    /// The thread's own budget (`set_thread_cache_budget`); the budget the maxima
    /// must fit adds the room borrowed (`budget_bytes()`, invariant 8, `slow`).
    base_budget: OwnerCell<usize>,
    /// Bytes borrowed from the backend's `CachePool` (any thread may read it).
    borrowed: OwnedU64,
    /// Slow-path events since the budget last held a list back (`slow`, the shrink).
    calm: OwnerCell<u32>,
    /// Slow-path events since the heap last measured its miss rate, the sum of its
    /// lists' `allocs` then, and whether that rate was high (`slow`, `note_slow`):
    /// only a heap that misses often borrows room.
    since_rate: OwnerCell<u32>,
    allocs_mark: OwnerCell<u64>,
    hot: OwnerCell<bool>,
    /// Link in the pool of heaps for reuse (read and written under the pool lock).
    pool_next: OwnerCell<*mut ThreadHeap>,
    /// Link in the list of every heap ever created (set once, under the pool lock,
    /// before the heap is linked; read by walkers of that list, which hold the lock).
    all_next: OwnerCell<*mut ThreadHeap>,
    /// Drains by another thread (`drain`, invariant 9): the owner holds it over each
    /// slow path, a drainer while it moves the heap's objects.
    drain_lock: RawLock,
    /// The owner's thread id and the address of its TLS slot while the heap may be
    /// drained; 0 when not (`enable_drain`, `disable_drain`).
    tid: AtomicU32,
    slot: AtomicUsize,
    /// Set by a drain, cleared by the owner's `settle` (invariant 9).
    drained: AtomicBool,
    /// The drainer's bookkeeping, under the pool lock: the heap's activity at the
    /// last pass, and for how many passes in a row it stayed the same.
    idle_activity: AtomicU64,
    idle_passes: AtomicU32,
    /// Loom only: a cell every method that touches the plain fields writes, so that
    /// loom reports two threads using one heap with no handoff (the pool lock)
    /// ordering them even where they would touch different fields.
    #[cfg(strata_loom)]
    owner: UnsafeCell<()>,
}

// SAFETY: the plain fields (`OwnerCell`s) are touched by the heap's owner only (one
// thread at a time, handed on under the pool lock, whose Release/Acquire orders the
// old owner's accesses before the new one's); other threads read only the atomics.
// The sentinels, shared by every thread, are only read (invariant 7). The methods
// that write are `unsafe fn`s whose contract is ownership, except `note_realloc`,
// which writes owner-written atomics only.
unsafe impl Sync for ThreadHeap {}

/// Empty lists for a new heap.
#[cfg(not(strata_loom))]
const fn new_lists() -> [FreeList; NUM_CLASSES] {
    [const { FreeList::new() }; NUM_CLASSES]
}
#[cfg(strata_loom)]
fn new_lists() -> [FreeList; NUM_CLASSES] {
    core::array::from_fn(|_| FreeList::new())
}

impl ThreadHeap {
    crate::sync::loom_const_fn! {
        /// A heap in `state` with empty lists (for sentinels and fresh heaps).
        pub fn new(state: HeapState) -> ThreadHeap {
            ThreadHeap {
                lists: new_lists(),
                received: OwnedU64::new(0),
                returned: OwnedU64::new(0),
                reallocs: OwnedU64::new(0),
                reallocs_in_place: OwnedU64::new(0),
                move_seq: AtomicU64::new(0),
                unpublished: OwnerCell::new(0),
                link_key: OwnerCell::new(LinkKey::UNSET),
                link_mask: OwnerCell::new(LinkMask::BAD),
                state: OwnerCell::new(state),
                steal_next: OwnerCell::new(0),
                max_bytes: OwnerCell::new(0),
                base_budget: OwnerCell::new(DEFAULT_CACHE_BUDGET),
                borrowed: OwnedU64::new(0),
                calm: OwnerCell::new(0),
                since_rate: OwnerCell::new(0),
                allocs_mark: OwnerCell::new(0),
                hot: OwnerCell::new(false),
                pool_next: OwnerCell::new(ptr::null_mut()),
                all_next: OwnerCell::new(ptr::null_mut()),
                drain_lock: RawLock::new(LockRank::ThreadHeap),
                tid: AtomicU32::new(0),
                slot: AtomicUsize::new(0),
                drained: AtomicBool::new(false),
                idle_activity: AtomicU64::new(0),
                idle_passes: AtomicU32::new(0),
                #[cfg(strata_loom)]
                owner: UnsafeCell::new(()),
            }
        }
    }

    /// Loom only: records a use of the heap's plain state by the calling thread.
    #[cfg(strata_loom)]
    #[inline]
    fn touch(&self) {
        self.owner.with_mut(|_| ());
    }

    /// The heap's state (its owner, or any thread on a sentinel).
    #[inline]
    pub fn state(&self) -> HeapState {
        self.state.get()
    }

    /// The next heap in the pool's free list.
    ///
    /// # Safety
    /// The caller holds the pool lock and the heap is pooled (it owns the heap).
    #[inline]
    pub unsafe fn pool_next(&self) -> *mut ThreadHeap {
        self.pool_next.get()
    }

    /// Links the heap into the pool's free list before `next`.
    ///
    /// # Safety
    /// The caller holds the pool lock and owns the heap (no thread uses it).
    #[inline]
    pub unsafe fn set_pool_next(&self, next: *mut ThreadHeap) {
        self.pool_next.set(next);
    }

    /// The next heap in the list of every heap ever created.
    ///
    /// # Safety
    /// The caller holds the pool lock (`all_next` is written once, under it, before
    /// the heap is linked, and never again).
    #[inline]
    pub unsafe fn all_next(&self) -> *mut ThreadHeap {
        self.all_next.get()
    }

    /// Sets the link in the list of every heap ever created (once, at creation).
    ///
    /// # Safety
    /// The caller holds the pool lock and the heap is not yet on that list.
    #[inline]
    pub unsafe fn set_all_next(&self, next: *mut ThreadHeap) {
        self.all_next.set(next);
    }

    /// Makes a pooled or fresh heap live with the given budget.
    ///
    /// # Safety
    /// The caller owns the heap (a fresh heap, or one taken off the pool under its
    /// lock); it is not a sentinel.
    pub unsafe fn activate(&self, budget_bytes: usize) {
        #[cfg(strata_loom)]
        self.touch();
        debug_check!(self.is_empty(), "activate: the heap still caches objects");
        // The fast paths encode with this copy from now on.
        ensure_key();
        self.link_key.set(LinkKey::current());
        debug_check!(self.borrowed.get() == 0, "activate: the heap still borrows");
        self.state.set(HeapState::Live);
        self.base_budget.set(budget_bytes);
        self.calm.set(0);
        self.max_bytes.set(0);
        self.restart_rate();
    }

    /// Marks a flushed heap as pooled.
    ///
    /// # Safety
    /// The calling thread owns the heap and gives it up to the pool next; it is not
    /// a sentinel.
    pub unsafe fn retire(&self) {
        #[cfg(strata_loom)]
        self.touch();
        self.state.set(HeapState::Pooled);
    }

    /// The list at offset `l`, addressed as the heap pointer plus the offset (the
    /// compiler then folds the offset into each access, where an index into
    /// `lists` is scaled into a separate list pointer first).
    ///
    /// # Safety
    /// `l` is the offset of the list of a valid class (`< NUM_CLASSES`).
    #[inline(always)]
    unsafe fn list_at(&self, l: ListOffset) -> &FreeList {
        // SAFETY: `l` is `c · size_of::<FreeList>()` for a class `c` (the contract),
        // so this is `lists[c]`: `lists` is the heap's first field (`c_lists`'
        // assertion).
        unsafe {
            &*ptr::from_ref(self)
                .cast::<u8>()
                .add(l.bytes())
                .cast::<FreeList>()
        }
    }

    /// Fast path: an object of class `c`, or null when the list is empty.
    ///
    /// # Safety
    /// `c` is a valid class (`< NUM_CLASSES`); the heap belongs to the calling thread
    /// or is a sentinel (which this only reads: invariant 7).
    #[inline(always)]
    pub unsafe fn pop(&self, c: SizeClass) -> *mut u8 {
        // SAFETY: c < NUM_CLASSES by the contract.
        unsafe { self.pop_at(ListOffset::of(c)) }
    }

    /// [`ThreadHeap::pop`] by the list's offset (C `malloc` looks it up from the
    /// size directly: `c_lists`).
    ///
    /// # Safety
    /// As for `pop`: `l` is `ListOffset::of` a valid class, or `list_for_c`'s.
    #[inline(always)]
    pub unsafe fn pop_at(&self, l: ListOffset) -> *mut u8 {
        #[cfg(strata_loom)]
        self.touch();
        // SAFETY: `l` is the offset of the list of a valid class (the contract).
        let list = unsafe { self.list_at(l) };
        let c = l.class();
        let obj = list.head.raw();
        // No test for an empty list: the link check of `pop_next` fails on the end
        // (`link::end()`), and only then does it look whether `obj` is the end.
        // SAFETY: by invariant 1 the head is the end or a free class-c object of
        // ours whose first word links the rest of the chain; a link overwritten
        // since it was pushed aborts here instead of being handed out. The key is
        // the process's on a live heap (invariant 5); a sentinel's, unset, meets
        // only the end (invariant 7).
        let Some(next) =
            (unsafe { FreeObj::pop_next(obj, c, self.link_key.get(), self.link_mask.get()) })
        else {
            return ptr::null_mut();
        };
        // Not a sentinel from here on (invariant 7: their heads are the end).
        // SAFETY: `pop_next` gave a link, so `obj` is an object of ours, not the end
        // (the only head that is not an object), and no object is at address 0.
        unsafe { core::hint::assert_unchecked(!obj.is_null()) };
        list.head.set_raw(next);
        // SAFETY: the object is ours to hand out now; its link is spent.
        unsafe { FreeObj::clear(obj) };
        list.len.sub(1);
        list.allocs.add(1);
        obj.cast()
    }

    /// Fast path: caches `p` in class `c`'s list; false when the list is full, or
    /// (hardened) when `p` is already its head, a double free (the caller then takes
    /// `free_slow`, which reports the double free).
    ///
    /// # Safety
    /// `p` is a block of class `c` that the caller gives up; the heap belongs to the
    /// calling thread or is a sentinel (which this only reads: invariant 7).
    #[inline(always)]
    pub unsafe fn try_push(&self, c: SizeClass, p: *mut u8) -> bool {
        // SAFETY: forwarded contract; the offset is class c's list.
        unsafe { self.try_push_at(ListOffset::of(c), p) }
    }

    /// [`ThreadHeap::try_push`] to the list at offset `l` (C `free`, which knows the
    /// page code of `p`'s class, not the class: `ListOffset::of_code`).
    ///
    /// # Safety
    /// As for `try_push`: `l` is `ListOffset::of` the class of `p`.
    #[inline(always)]
    pub unsafe fn try_push_at(&self, l: ListOffset, p: *mut u8) -> bool {
        #[cfg(strata_loom)]
        self.touch();
        // The key is loaded first, and volatile so that it stays first: loaded after
        // the list's address is formed (where the compiler puts a plain load), it
        // costs a register copy of the heap pointer and a split `len` increment, 2
        // instructions more (callgrind).
        let key = if HARDENED {
            self.link_key.get_volatile()
        } else {
            LinkKey::UNSET
        };
        // SAFETY: `l` is a class's list (the contract).
        let list = unsafe { self.list_at(l) };
        let obj = p.cast::<FreeObj>();
        // Hardened: a block whose first word decodes as a link may already be in a
        // free list, this one included (a block handed out has that word cleared):
        // `free_slow` looks for it and reports a double free (three instructions and
        // a branch never taken in a correct program).
        // A sentinel returns here (invariant 7: `len == max == 0`).
        if list.len.get() >= list.max.get() {
            return false;
        }
        // `p ^ key` once, for the test and the encode.
        let salt = FreeObj::salt(obj, key);
        // SAFETY: the caller gives up `p`, a block of ours of at least 8 bytes; a
        // list with room is a live heap's, whose key copy is set (`activate`).
        if unsafe { FreeObj::looks_free_salted(obj, salt, self.link_mask.get()) } {
            return false;
        }
        // The head is loaded here, after the checks, so that the encode's XOR takes
        // it as a memory operand (loaded before them, it costs a load of its own).
        let head = list.head.raw();
        // SAFETY: the block is ours now and at least 8 bytes (the smallest class);
        // the salt is of its address under the process's key (above).
        unsafe { FreeObj::set_next_salted(obj, head, salt) };
        // The link before the head, for a drainer that reads this head while this
        // push is in flight (`drain`'s module docs); no instruction.
        core::sync::atomic::compiler_fence(Ordering::Release);
        list.head.set_raw(obj);
        list.len.add(1);
        true
    }

    /// Opens a move (invariant 6 and [`ThreadHeap::move_seq`]): the odd sequence is
    /// stored before any of the move's writes, which the fence keeps after it.
    #[inline]
    fn begin_move(&self) {
        // Relaxed, then the Release fence: any write of the move that a reader sees
        // (the reader's Acquire fence after it) brings this store with it.
        let s = self.move_seq.load(Ordering::Relaxed);
        debug_check!(s % 2 == 0, "moves do not nest");
        #[cfg(not(strata_mutant = "stats_ignore_moves"))]
        self.move_seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Closes a move: Release, so that a reader who sees the even value sees every
    /// write of the move.
    #[inline]
    fn end_move(&self) {
        let s = self.move_seq.load(Ordering::Relaxed);
        self.move_seq.store(s + (s & 1), Ordering::Release);
    }

    /// The read side of the heap's move sequence lock (any thread). A reader of the
    /// heap's lists and the central tier takes this (Acquire) first, reads, issues an
    /// Acquire fence, and takes [`ThreadHeap::move_seq_again`]: when both are the same
    /// even number, no move of this heap was under way or ran in between, so no
    /// object of the heap was out of both tiers.
    pub fn move_seq(&self) -> u64 {
        self.move_seq.load(Ordering::Acquire)
    }

    /// The second read of [`ThreadHeap::move_seq`] (after the reader's Acquire fence).
    pub fn move_seq_again(&self) -> u64 {
        self.move_seq.load(Ordering::Relaxed)
    }

    /// Whether no list holds an object and every max is 0 (a flushed heap, or a
    /// sentinel: invariant 7). Its owner, or any thread on a sentinel.
    pub fn is_empty(&self) -> bool {
        self.lists
            .iter()
            .all(|l| l.len.get() == 0 && l.head.get().is_null() && l.max.get() == 0)
    }

    /// Objects cached in class `c` now (any thread may ask; a recent value).
    pub fn cached(&self, c: SizeClass) -> usize {
        // Mutant: a reader on another thread loads an owner-only cell (a data race
        // that loom reports through the cell).
        #[cfg(strata_mutant = "stats_read_owner_field")]
        core::hint::black_box(self.lists[c.index()].max.get());
        self.lists[c.index()].len.get() as usize
    }

    /// Objects of class `c` this heap handed out, ever (any thread may ask).
    pub fn class_allocs(&self, c: SizeClass) -> u64 {
        self.lists[c.index()].allocs.get()
    }

    /// Objects the heap's lists handed out, ever (the sum of their `allocs`; any
    /// thread may ask).
    pub(super) fn allocs_total(&self) -> u64 {
        self.lists.iter().map(|l| l.allocs.get()).sum()
    }

    /// The heap's counters (any thread may ask; each a recent value, so invariant 4
    /// holds exactly only while the owner is not allocating).
    pub fn counters(&self) -> HeapCounters {
        HeapCounters {
            allocs: self.allocs_total(),
            received: self.received.get(),
            returned: self.returned.get(),
            cached: self.lists.iter().map(|l| l.len.get() as u64).sum(),
            reallocs: self.reallocs.get(),
            reallocs_in_place: self.reallocs_in_place.get(),
        }
    }
}

mod c_lists;
mod cells;
mod drain;
mod pool;
mod slow;
mod validate;

pub use c_lists::ListOffset;
#[cfg(not(strata_loom))]
#[cfg_attr(
    not(all(feature = "c-abi", not(feature = "checked"))),
    allow(unused_imports)
)]
pub use c_lists::{C_DIRECT_MAX, list_direct, list_for_c};
pub use pool::{AllHeaps, ThreadCaches};

#[cfg(all(test, not(strata_loom)))]
mod budget_tests;
#[cfg(all(test, not(strata_loom)))]
mod drain_tests;
#[cfg(all(test, not(strata_loom)))]
mod refill_tests;
#[cfg(all(test, not(strata_loom)))]
mod tests;
