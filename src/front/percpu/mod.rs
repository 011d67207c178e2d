//! The per-CPU front end: small objects cached per CPU and size class in the rseq
//! slab of [`crate::percpu`], refilled from and flushed to the central tier in
//! batches (`Backend::refill`, `Backend::flush`). Memory cached here is bounded by
//! the CPU count, not the thread count: a thread that sleeps holds nothing.
//!
//! Which threads it serves ([`CpuCaches::thread_heaps_first`], read once,
//! without allocating, by the first fresh thread): by default those beyond the
//! first max(128, 8 x CPUs) live at a time (`STRATA_PERCPU_AFTER` sets the
//! number), which keep thread caches; with `STRATA_PERCPU=1` every thread, with
//! `auto` those beyond one per possible CPU, with `STRATA_PERCPU=0` none. The
//! slab is built when the first thread to be served per CPU asks for it, so a
//! program with fewer threads never maps it; it stays off when the kernel has no
//! rseq, when the process cannot fence (membarrier: non-owners could then not
//! drain CPUs), or when the slab cannot be built, and those threads then get
//! thread caches too. When on, `global` points every thread whose rseq area is usable at a
//! sentinel thread heap whose fast paths always miss, so the thread-cache fast
//! path is the same code as when off (the per-CPU test costs nothing there), and
//! the miss lands in `global`'s slow path, which calls [`CpuCaches::alloc`] /
//! [`CpuCaches::free`]. A thread whose area is not usable gets a thread heap, as
//! when the front end is off.
//!
//! Objects in a CPU's stack carry the free mark in their first word (in hardened
//! builds: an encoded link to null, as `FreeObj::set_next` writes it); it is
//! cleared when an object is handed out, so nothing encoded leaks to the program.
//! Objects leave for the central tier and come back as arrays of addresses
//! (`flush_array`, `refill`: `Backend::flush_array`/`refill_array`), so a whole
//! batch crosses without a read or write of its objects and keeps the mark; a
//! real link replaces it only where an object goes to a span or a thread cache. A
//! free whose block already carries the mark is checked against every CPU's
//! stack (`check_double_free`): a double free of a cached block stops the process
//! with a message naming it. Statistics: the objects count in the backend's
//! flow (handed out of the shared tiers) from their refill to their flush, like a
//! thread cache's; `stats()` counts the objects the CPUs hold as cached in front-end
//! caches (with the thread heaps', `thread_cached`), not as live, and each hit in
//! its CPU's pop counter in the slab (one increment after the pop's commit, which
//! can lose a count when a thread is moved between the two: the one cost the
//! per-CPU path has beyond its critical section); frees are derived
//! ([`CpuCaches::class_counts`]).
//!
//! Idle CPUs: the background purge thread drains a CPU whose stacks did not change
//! for a whole pause ([`CpuCaches::idle_pass`]).
//!
//! Capacities follow demand within a budget (`capacity.rs`): a miss widens its
//! class on its CPU, the background purge thread narrows what stopped moving.
//!
//! Hits: `global`'s miss functions (`alloc_small_miss`/`free_small_miss`, not
//! cold) test for the sentinel and call [`CpuCaches::alloc_hit`] /
//! [`CpuCaches::free_hit`] inline: 29 and 35 instructions from the miss
//! function's entry to its return (x86-64, `objdump -d`), no test of the
//! decision or the rseq mode (the sentinel implies both; only glibc's area is
//! used there, an own registration goes through the slow path). What they read
//! besides the slab (glibc's offset, the link key, the mask) are copies in this
//! struct, and the hit is counted by the pop section itself (`Slab::pops`). A
//! pair still costs more than the thread cache's on one thread: the sentinel's
//! miss first, and the two sections' loads and stores of the header word.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicIsize, AtomicU8, AtomicU64, AtomicUsize, Ordering};

mod capacity;
mod drain;

use crate::backend::Backend;
use crate::link::{FreeObj, LinkKey, LinkMask, end, ensure_key};
use crate::os::Os;
use crate::percpu::{FrontCounters, MAX_CLASSES, Mode, RseqArea, Slab};
use crate::size_class::{CLASS_BATCH, CLASS_CAP, CLASS_SIZE, NUM_CLASSES, SizeClass};

const_assert!(NUM_CLASSES <= MAX_CLASSES);

/// The most bytes one CPU caches of one class (at least one object; at most the
/// thread cache's cap for the class).
const CLASS_BYTES: usize = 64 << 10;

const UNDECIDED: u8 = 0;
const BUSY: u8 = 1;
const ON: u8 = 2;
const OFF: u8 = 3;

/// The capacity, in objects, of class `ci` on each CPU.
pub const fn cap_for(ci: usize) -> u16 {
    let by_bytes = CLASS_BYTES / CLASS_SIZE[ci] as usize;
    let cap = if by_bytes < CLASS_CAP[ci] as usize {
        by_bytes
    } else {
        CLASS_CAP[ci] as usize
    };
    if cap == 0 { 1 } else { cap as u16 }
}

/// The per-CPU front end's shared state: the decision, and the slab once on.
///
/// Invariants:
/// 1. `state` goes `UNDECIDED → BUSY → ON | OFF` once (back to `UNDECIDED` only
///    in a fork child whose parent was in the middle, [`CpuCaches::after_fork`]).
/// 2. `slab` is initialised exactly when `state == ON`, written only by the thread
///    that moved `state` to `BUSY`, before its Release store of `ON`; never
///    written or dropped afterwards.
/// 3. Every object in the slab is a class-`k` block of the process's backend
///    (slab class `k` is size class `k`), counted in the backend's flow, with the
///    free mark in its first word (hardened builds).
/// 4. `glibc_offset`, `key` and `mask` are written like the slab (invariant 2):
///    before the Release store of `ON`, never after. `glibc_offset` is then
///    `percpu::glibc_offset()` (non-zero exactly in glibc's rseq mode), `key` the
///    process's link key (set by then), `mask` `LinkMask::BAD`.
/// 5. `first_heaps` leaves `POLICY_UNREAD` once, by a compare-exchange, and never
///    changes again; `state` leaves `UNDECIDED` only after it was set to a value
///    other than `POLICY_NEVER` (the slab is asked for only by a thread beyond the
///    first `n`, which read the policy first: `global::via_cpu`).
/// 6. `threads` counts the threads pointed at the per-CPU sentinel; each was
///    counted after it saw `state == ON`, so `threads > 0` implies `ON`.
pub struct CpuCaches {
    state: AtomicU8,
    slab: UnsafeCell<MaybeUninit<Slab>>,
    /// Copies of process-wide values the hit paths need, kept here so that they
    /// load them off the allocator's own static, the same base as the slab's
    /// fields, rather than through the address table that statics of other
    /// modules can need (one load each instead of two).
    glibc_offset: AtomicIsize,
    key: UnsafeCell<LinkKey>,
    /// `LinkMask::BAD` once on (invariant 4): a memory operand for the free hit's
    /// test (in a cell so that the compiler cannot fold it into a 10-byte constant
    /// load). Uninitialised until then, not `BAD` from the start: a non-zero
    /// initial value would put the whole allocator static in `.data`, whose pages
    /// every process then reads from the file (52-60 KiB of resident memory in a
    /// small C program; `benches/footprint.sh` warns of it).
    mask: UnsafeCell<MaybeUninit<LinkMask>>,
    refills: AtomicU64,
    refilled_objects: AtomicU64,
    flushes: AtomicU64,
    drains: AtomicU64,
    /// Widenings on a miss and narrowing passes (`capacity.rs`).
    grows: AtomicU64,
    shrinks: AtomicU64,
    /// The budget for all CPUs' capacities, bytes; 0: the default (`capacity.rs`).
    budget: AtomicUsize,
    /// Which threads are served per CPU ([`CpuCaches::thread_heaps_first`]):
    /// `POLICY_UNREAD` until the first fresh thread reads the settings, then
    /// `POLICY_NEVER` (`STRATA_PERCPU=0`) or `n + 1`, the first `n` threads live
    /// at a time get a thread cache. Set once (a compare-exchange from unread),
    /// independently of `state`: the slab is built only when a thread beyond the
    /// first `n` asks for it.
    first_heaps: AtomicUsize,
    /// Threads ever pointed at the per-CPU sentinel ([`CpuCaches::note_thread`]).
    threads: AtomicUsize,
    /// Per class: objects handed out by a refill (statistics; those handed out
    /// from a CPU's stack are counted in the slab, `Slab::pops`).
    refill_allocs: [AtomicU64; NUM_CLASSES],
    /// Per class: objects received from the central tier.
    received: [AtomicU64; NUM_CLASSES],
    /// Per class: objects returned to the central tier.
    returned: [AtomicU64; NUM_CLASSES],
}

// SAFETY: `slab` and `key` are written once before being published (invariants 2
// and 4), the slab itself Sync and the key plain data; everything else is atomic.
unsafe impl Sync for CpuCaches {}

impl Default for CpuCaches {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuCaches {
    /// Undecided: the first call of [`CpuCaches::slab`] decides.
    pub const fn new() -> CpuCaches {
        CpuCaches {
            state: AtomicU8::new(UNDECIDED),
            slab: UnsafeCell::new(MaybeUninit::uninit()),
            glibc_offset: AtomicIsize::new(0),
            key: UnsafeCell::new(LinkKey::UNSET),
            mask: UnsafeCell::new(MaybeUninit::uninit()),
            refills: AtomicU64::new(0),
            refilled_objects: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            drains: AtomicU64::new(0),
            grows: AtomicU64::new(0),
            shrinks: AtomicU64::new(0),
            budget: AtomicUsize::new(0),
            first_heaps: AtomicUsize::new(POLICY_UNREAD),
            threads: AtomicUsize::new(0),
            refill_allocs: [const { AtomicU64::new(0) }; NUM_CLASSES],
            received: [const { AtomicU64::new(0) }; NUM_CLASSES],
            returned: [const { AtomicU64::new(0) }; NUM_CLASSES],
        }
    }

    /// Objects of class `c` handed out, freed (derived: every object received plus
    /// every free is handed out, returned or cached) and cached now, by this front
    /// end; zeros when off. Snapshots, each exact only when nothing moves.
    pub fn class_counts(&self, c: SizeClass) -> (u64, u64, u64) {
        let ci = c.index();
        let Some(slab) = self.slab_if_on() else {
            return (0, 0, 0);
        };
        // Relaxed: statistics.
        let mut allocs = self.refill_allocs[ci].load(Ordering::Relaxed);
        let mut cached = 0u64;
        for cpu in 0..slab.ncpu() {
            allocs += slab.pops(cpu, ci);
            if let Some((n, _)) = slab.len_and_capacity(cpu, ci) {
                cached += n as u64;
            }
        }
        // Relaxed: statistics.
        let received = self.received[ci].load(Ordering::Relaxed);
        let returned = self.returned[ci].load(Ordering::Relaxed);
        let frees = (allocs + returned + cached).saturating_sub(received);
        (allocs, frees, cached)
    }

    /// Counts `n` class-`ci` objects returned to the central tier.
    fn count_returned(&self, ci: usize, n: usize) {
        if let Some(r) = self.returned.get(ci) {
            // Relaxed: statistics.
            r.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// The slab if the front end is on (deciding on the first call).
    #[inline]
    pub fn slab(&self) -> Option<&Slab> {
        // Acquire: pairs with the Release store of ON; the slab is initialised.
        match self.state.load(Ordering::Acquire) {
            ON => Some(self.slab_on()),
            OFF => None,
            _ => self.decide(),
        }
    }

    /// The slab, if the decision was already made and is on (never decides).
    pub fn slab_if_on(&self) -> Option<&Slab> {
        // Acquire: as in `slab`.
        (self.state.load(Ordering::Acquire) == ON).then(|| self.slab_on())
    }

    /// The calling thread's glibc rseq area for a hit path, None outside glibc's
    /// mode (the caller takes the slow path). Only for a thread that saw ON with
    /// Acquire (the offset is written before it, invariant 4).
    #[inline(always)]
    fn hit_area(&self) -> Option<NonNull<RseqArea>> {
        // Relaxed: written before ON, which the caller loaded with Acquire.
        let off = self.glibc_offset.load(Ordering::Relaxed);
        (off != 0).then(|| crate::percpu::glibc_area_at(off))
    }

    fn slab_on(&self) -> &Slab {
        // SAFETY: callers saw ON with Acquire: the slab is initialised and never
        // written again (invariant 2).
        unsafe { (*self.slab.get()).assume_init_ref() }
    }

    #[cold]
    #[inline(never)]
    fn decide(&self) -> Option<&Slab> {
        loop {
            // Acquire: pairs with the Release store of the decision.
            match self.state.load(Ordering::Acquire) {
                ON => return Some(self.slab_on()),
                OFF => return None,
                UNDECIDED => {
                    if self
                        .state
                        .compare_exchange(UNDECIDED, BUSY, Ordering::Acquire, Ordering::Acquire)
                        .is_err()
                    {
                        continue;
                    }
                    let v = match build() {
                        Some(s) => {
                            // Relaxed: as above (invariant 4); `build` decided the
                            // mode, so the offset is final.
                            self.glibc_offset
                                .store(crate::percpu::glibc_offset(), Ordering::Relaxed);
                            ensure_key();
                            // SAFETY: we moved the state to BUSY: no one else writes
                            // or reads the slab, the key or the mask until the
                            // Release store below (invariants 2 and 4).
                            unsafe {
                                (*self.slab.get()).write(s);
                                *self.key.get() = LinkKey::current();
                                (*self.mask.get()).write(LinkMask::BAD);
                            }
                            ON
                        }
                        None => OFF,
                    };
                    // Release: publishes the slab to readers of ON.
                    self.state.store(v, Ordering::Release);
                }
                // Another thread builds the slab (a few system calls: the
                // mapping, membarrier's registration). Built when the first thread
                // beyond the thread caches starts, it often has company, and on
                // few CPUs a spinning waiter would keep the builder from running.
                _ => crate::platform::yield_now(),
            }
        }
    }

    /// How many threads at a time get a thread cache before the next ones are
    /// served per CPU (read from the settings on the first call, without
    /// allocating): `Some(0)` with `STRATA_PERCPU=1` (every thread per CPU),
    /// one per possible CPU with `auto`, and, with `STRATA_PERCPU` unset,
    /// `STRATA_PERCPU_AFTER` or [`crate::percpu::default_thread_caches`]; `None` with
    /// `STRATA_PERCPU=0` (never per CPU). Whether per-CPU service works at all
    /// (rseq, membarrier, the slab) is [`CpuCaches::slab`]'s to decide, asked
    /// only for a thread beyond these.
    #[inline]
    pub fn thread_heaps_first(&self) -> Option<usize> {
        // Relaxed: a plain value, set once; no other data is published with it.
        match self.first_heaps.load(Ordering::Relaxed) {
            POLICY_UNREAD => self.read_policy(),
            POLICY_NEVER => None,
            n => Some(n - 1),
        }
    }

    /// Counts a thread that is served per CPU from now on (once per thread), after
    /// it saw the front end on (invariant 6).
    pub fn note_thread(&self) {
        // Release: `validate` reads the count with Acquire and then expects ON,
        // which this thread loaded before (once per thread: no cost that shows).
        self.threads.fetch_add(1, Ordering::Release);
    }

    /// Threads ever served per CPU (a recent value).
    pub fn threads_served(&self) -> usize {
        // Relaxed: as in `note_thread`.
        self.threads.load(Ordering::Relaxed)
    }

    #[cold]
    #[inline(never)]
    fn read_policy(&self) -> Option<usize> {
        let v = match policy() {
            None => POLICY_NEVER,
            Some(n) => n.min(POLICY_NEVER - 2) + 1,
        };
        // Relaxed: as in `thread_heaps_first`. The first thread to read it sets
        // it; the others take that value (the environment may have changed).
        let v = match self.first_heaps.compare_exchange(
            POLICY_UNREAD,
            v,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => v,
            Err(set) => set,
        };
        (v != POLICY_NEVER).then(|| v - 1)
    }

    /// Fork child: a decision another thread had under way at the fork would stay
    /// busy forever; it is taken again (the half-built slab's mapping, if any, is
    /// lost).
    pub fn after_fork(&self) {
        // Relaxed: the child has one thread.
        let _ = self
            .state
            .compare_exchange(BUSY, UNDECIDED, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// One class-`c` object for the calling thread: from its CPU's stack, or (on a
    /// miss) from a batch refilled from the central tier, the rest of which goes
    /// onto the stack. Null if the OS refuses memory.
    ///
    /// # Safety
    /// `slab` is this front end's; `area` the calling thread's usable rseq area;
    /// `be` the backend whose objects the slab holds (invariant 3).
    #[inline]
    pub unsafe fn alloc<O: Os>(
        &self,
        slab: &Slab,
        area: NonNull<RseqArea>,
        c: SizeClass,
        be: &Backend<O>,
    ) -> *mut u8 {
        // SAFETY: c.index() < NUM_CLASSES = the slab's class count (`build`); the
        // slab covers every possible CPU (Slab::new checked it).
        if let Some(p) = unsafe { self.pop_hit(slab, area, c) } {
            return p.as_ptr();
        }
        // SAFETY: forwarded contract.
        unsafe { self.refill(slab, area, c, be) }
    }

    /// The hit path of a thread served per CPU, inlined where the thread-cache fast
    /// path missed on the `VIA_CPU` sentinel: one class-`c` object from the calling
    /// thread's CPU's stack, or null (an empty or locked stack, an area that is not
    /// glibc's or not registered), and the caller takes the slow path, which
    /// refills. No test of the decision or the mode: the caller's sentinel implies
    /// both.
    ///
    /// # Safety
    /// The calling thread saw this front end on (`slab` returned `Some`, whose
    /// Acquire load made the slab visible to it: invariant 2), and the slab holds
    /// objects of the process's backend.
    #[inline(always)]
    pub unsafe fn alloc_hit(&self, c: SizeClass) -> *mut u8 {
        let Some(area) = self.hit_area() else {
            return ptr::null_mut();
        };
        let slab = self.slab_on();
        // SAFETY: the slab is this front end's (the contract); `area` the calling
        // thread's glibc area (a section on an unregistered one fails).
        match unsafe { self.pop_hit(slab, area, c) } {
            Some(p) => p.as_ptr(),
            None => ptr::null_mut(),
        }
    }

    /// The free hit path beside [`CpuCaches::alloc_hit`]: caches `p` on the calling
    /// thread's CPU, flushing a batch first if the stack is full; false (nothing
    /// done, `p` still the caller's and unmarked) if the area is not glibc's or `p`
    /// already carries the free mark: the slow path, [`CpuCaches::free`], then
    /// checks for a double free.
    ///
    /// # Safety
    /// As for `alloc_hit`; `p` is a live class-`c` block of `be`, the backend whose
    /// objects the slab holds, that the caller gives up (given up only if this
    /// returns true).
    #[inline(always)]
    pub unsafe fn free_hit<O: Os>(&self, c: SizeClass, p: NonNull<u8>, be: &Backend<O>) -> bool {
        let Some(area) = self.hit_area() else {
            return false;
        };
        let slab = self.slab_on();
        let q = p.as_ptr().cast::<FreeObj>();
        // SAFETY: the caller saw ON with Acquire (the contract): the key and the
        // mask were written before and never after (invariant 4).
        let (key, mask) = unsafe { (*self.key.get(), (*self.mask.get()).assume_init()) };
        let salt = FreeObj::salt(q, key);
        // SAFETY: the caller gives `p` up, a class-c block of ours: readable, and
        // its first word free for the mark. The key is set: `p` was handed out by
        // the backend, whose carving links objects only after `ensure_key`, and
        // reached this thread after that (as in `free`).
        unsafe {
            if FreeObj::looks_free_salted(q, salt, mask) {
                return false;
            }
            // The mark is a link to the list end as lists store it (`link::end()`:
            // the static end object when hardened), the word `free`'s
            // `set_next(q, null)` writes.
            FreeObj::set_next_salted(q, end(), salt);
        }
        // SAFETY: the slab is this front end's, `area` the thread's; `p` is given
        // up, marked, and live until now, so in no slot (invariant 3).
        unsafe { self.cache_marked(slab, area, c, p, be) };
        true
    }

    /// Pushes `p`, which carries the free mark, onto the calling thread's CPU's
    /// stack; on a full (or locked) stack, [`CpuCaches::free_full`] makes room or
    /// sends it to the central tier. The tail of both frees.
    ///
    /// # Safety
    /// As for `free`, and `p` already carries the free mark.
    #[inline(always)]
    unsafe fn cache_marked<O: Os>(
        &self,
        slab: &Slab,
        area: NonNull<RseqArea>,
        c: SizeClass,
        p: NonNull<u8>,
        be: &Backend<O>,
    ) {
        // SAFETY: the slab is this front end's, `area` the thread's (contract);
        // `p` is in no slot, so pushing it keeps header invariant 3.
        if unsafe { slab.push(area, c.index(), p) } {
            return;
        }
        // SAFETY: `p` is given up, marked, in no slot: what `free_full` takes.
        unsafe { self.free_full(slab, area, c, p, be) }
    }

    /// One class-`c` object from the calling thread's CPU's stack, its free mark
    /// cleared and counted; None on an empty (or locked) stack.
    ///
    /// # Safety
    /// `slab` is this front end's; `area` the calling thread's rseq area (a
    /// section on one not registered fails).
    #[inline(always)]
    unsafe fn pop_hit(
        &self,
        slab: &Slab,
        area: NonNull<RseqArea>,
        c: SizeClass,
    ) -> Option<NonNull<u8>> {
        // SAFETY: c.index() < NUM_CLASSES = the slab's class count (`build`); the
        // slab covers every possible CPU (Slab::new checked it). The pop counts
        // itself in the slab.
        let p = unsafe { slab.pop(area, c.index()) }?;
        // SAFETY: popped: ours to hand out; its free mark is spent.
        unsafe { FreeObj::clear(p.as_ptr().cast()) };
        Some(p)
    }

    /// # Safety
    /// As for `alloc`.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn refill<O: Os>(
        &self,
        slab: &Slab,
        area: NonNull<RseqArea>,
        c: SizeClass,
        be: &Backend<O>,
    ) -> *mut u8 {
        // The batch as an array of objects that carry the free mark, copied from
        // its descriptor when a per-CPU flush left it so: no object is read (each
        // read a cache miss, as they were freed on another CPU); a chain (a thread
        // cache's flush) is walked by the central tier, and a carve fills the
        // array directly.
        let mut objs = [ptr::null_mut::<u8>(); MAX_BATCH];
        let n = be.refill_array(c, &mut objs);
        if n == 0 {
            return ptr::null_mut();
        }
        // An empty stack: room for more next time, if the budget allows.
        self.grow_on_miss(slab, area, c.index());
        let size = c.size_bytes();
        be.note_flow((n * size) as isize);
        // Relaxed: statistics.
        self.refills.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = self.received.get(c.index()) {
            // Relaxed: statistics.
            r.fetch_add(n as u64, Ordering::Relaxed);
        }
        if let Some(a) = self.refill_allocs.get(c.index()) {
            // Relaxed: statistics.
            a.fetch_add(1, Ordering::Relaxed);
        }
        // The first for the caller, the rest onto the CPU's stack in one critical
        // section.
        let first = objs[0];
        // SAFETY: the first object goes to the caller: no free mark.
        unsafe { FreeObj::clear(first.cast()) };
        // SAFETY: the caller's contract; objs[1..n] came from the central tier, so
        // they are in no slot, distinct, non-null, class c (invariant 3).
        let pushed = unsafe { slab.push_batch(area, c.index(), &objs[1..n]) };
        let rest = &objs[1 + pushed..n];
        if !rest.is_empty() {
            // Full (or locked, or migrated to a full CPU): the rest goes back.
            // SAFETY: objects of ours that nobody uses, not in the slab.
            unsafe { flush_array(be, c, rest) };
            self.count_returned(c.index(), rest.len());
        }
        // Relaxed: statistics.
        self.refilled_objects
            .fetch_add(pushed as u64, Ordering::Relaxed);
        first
    }

    /// Caches `p` on the calling thread's CPU; on a full stack, flushes a batch
    /// from it to the central tier first.
    ///
    /// # Safety
    /// As for `alloc`, and `p` is a live class-`c` block of `be` that the caller
    /// gives up.
    #[inline]
    pub unsafe fn free<O: Os>(
        &self,
        slab: &Slab,
        area: NonNull<RseqArea>,
        c: SizeClass,
        p: NonNull<u8>,
        be: &Backend<O>,
    ) {
        let q = p.as_ptr().cast::<FreeObj>();
        // SAFETY: the caller gives `p` up, a class-c block of ours: readable, and
        // its first word free for the mark. A block already marked is in a CPU's
        // stack (a double free) unless the program's data looks like the mark.
        unsafe {
            if FreeObj::looks_free(q, LinkKey::current()) {
                self.check_double_free(slab, c, p);
            }
            FreeObj::set_next(q, ptr::null_mut());
        }
        // SAFETY: forwarded contract; `p` now carries the mark, and is live until
        // now, so in no slot (invariant 3 holds for every object in the slab).
        unsafe { self.cache_marked(slab, area, c, p, be) }
    }

    /// A block being freed carries the free mark: if some CPU's stack of class `c`
    /// holds it, the program frees it twice, and the process stops with a message
    /// naming it; else its data only looked like the mark (or it sits in a cache
    /// this cannot see, as with the thread caches). Each CPU is looked at with its
    /// headers locked and fenced ([`Slab::inspect_cpu`]); one another non-owner
    /// holds is skipped.
    #[cold]
    #[inline(never)]
    fn check_double_free(&self, slab: &Slab, c: SizeClass, p: NonNull<u8>) {
        for cpu in 0..slab.ncpu() {
            let found = slab.inspect_cpu(cpu, |k, q| {
                if k == c.index() && q == p {
                    Err(())
                } else {
                    Ok(())
                }
            });
            if matches!(found, Ok(Err(()))) {
                crate::link::double_free_percpu(p.as_ptr(), c);
            }
        }
    }

    /// # Safety
    /// As for `free`.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_full<O: Os>(
        &self,
        slab: &Slab,
        area: NonNull<RseqArea>,
        c: SizeClass,
        p: NonNull<u8>,
        be: &Backend<O>,
    ) {
        let ci = c.index();
        // A full stack: widen it if the budget allows, and the object fits.
        // SAFETY: as in `alloc`; `p` is given up and in no slot.
        if self.grow_on_miss(slab, area, ci) && unsafe { slab.push(area, ci, p) } {
            return;
        }
        let want = (CLASS_BATCH[ci] as usize)
            .min(cap_for(ci) as usize)
            .min(MAX_BATCH - 1);
        let mut objs = [ptr::null_mut::<u8>(); MAX_BATCH];
        // SAFETY: as in `alloc`.
        let mut n = unsafe { slab.pop_batch(area, ci, &mut objs[..want]) };
        // SAFETY: per the contract `p` is given up and in no slot.
        if !unsafe { slab.push(area, ci, p) } {
            objs[n] = p.as_ptr();
            n += 1;
        }
        if n > 0 {
            // SAFETY: popped from the slab (ours, cached, unused by anyone:
            // invariant 3) or given up by the caller.
            unsafe { flush_array(be, c, &objs[..n]) };
            self.count_returned(ci, n);
            // Relaxed: statistics.
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes cached on all CPUs (a snapshot); 0 when off.
    pub fn cached_bytes(&self) -> usize {
        let Some(slab) = self.slab_if_on() else {
            return 0;
        };
        let mut total = 0;
        for cpu in 0..slab.ncpu() {
            for (k, &size) in CLASS_SIZE.iter().enumerate() {
                if let Some((n, _)) = slab.len_and_capacity(cpu, k) {
                    total += n * size as usize;
                }
            }
        }
        total
    }

    /// Checks the slab's invariants and invariant 3 (nothing to check when off):
    /// every cached object is the start of a class-`k` object of a Small span of
    /// `be`'s (looked up in its chunk map), each CPU inspected with its headers
    /// locked and fenced ([`Slab::inspect_cpu`]). A CPU another non-owner holds is
    /// skipped. Not checked: that no object sits in two slots (that needs a set,
    /// and this runs without allocating).
    pub fn validate<O: Os>(&self, be: &Backend<O>) -> Result<(), crate::Violation> {
        self.validate_policy()?;
        let Some(slab) = self.slab_if_on() else {
            return Ok(());
        };
        slab.validate()?;
        for cpu in 0..slab.ncpu() {
            let r = slab.inspect_cpu(cpu, |k, p| {
                let a = p.as_ptr() as usize;
                // SAFETY: `small_object` reads the header of a chunk the chunk map
                // says is mapped (`owns` checked it first).
                let class = be
                    .owns(p.as_ptr())
                    .then(|| unsafe { crate::chunk::small_object(a) })
                    .flatten();
                if class == Some(SizeClass(k as u8)) {
                    Ok(())
                } else {
                    Err(crate::Violation {
                        structure: "front::percpu::CpuCaches",
                        invariant: 3,
                        what: "a cached object is not a class-k object of the backend",
                        addr: a,
                    })
                }
            });
            if let Ok(r) = r {
                r?;
            }
        }
        Ok(())
    }

    /// Invariants 5 and 6: a decided front end had its policy read (and it allowed
    /// threads per CPU); threads counted as served imply the front end is on.
    fn validate_policy(&self) -> Result<(), crate::Violation> {
        let bad = |invariant, what| crate::Violation {
            structure: "front::percpu::CpuCaches",
            invariant,
            what,
            addr: self as *const Self as usize,
        };
        // Acquire: pairs with `note_thread`'s Release; that thread saw ON first,
        // and ON is never left (a fork child resets only BUSY).
        let served = self.threads.load(Ordering::Acquire);
        // Acquire: pairs with the Release store of the decision, after which the
        // deciding thread's read of the policy is visible.
        let state = self.state.load(Ordering::Acquire);
        if served > 0 && state != ON {
            return Err(bad(
                6,
                "threads are counted as served per CPU, but it is not on",
            ));
        }
        // Relaxed: set once, before the decision (invariant 5).
        let policy = self.first_heaps.load(Ordering::Relaxed);
        if matches!(state, ON | OFF) && matches!(policy, POLICY_UNREAD | POLICY_NEVER) {
            return Err(bad(
                5,
                "decided without a policy that serves threads per CPU",
            ));
        }
        Ok(())
    }

    /// The slow paths' counters and the bytes cached now; None when off.
    pub fn counters(&self) -> Option<FrontCounters> {
        self.slab_if_on()?;
        // Relaxed: statistics.
        Some(FrontCounters {
            cached_bytes: self.cached_bytes() as u64,
            refills: self.refills.load(Ordering::Relaxed),
            refilled_objects: self.refilled_objects.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            drains: self.drains.load(Ordering::Relaxed),
            capacity_bytes: self.capacity_bytes() as u64,
            budget_bytes: self.budget_bytes() as u64,
            grows: self.grows.load(Ordering::Relaxed),
            shrinks: self.shrinks.load(Ordering::Relaxed),
        })
    }
}

/// The most objects a refill or flush moves at once (at least every class's batch).
const MAX_BATCH: usize = 64;
const_assert!({
    let mut ok = true;
    let mut k = 0;
    while k < NUM_CLASSES {
        ok &= (CLASS_BATCH[k] as usize) < MAX_BATCH;
        k += 1;
    }
    ok
});

/// Returns `objs` to the central tier as an array (a full batch goes on the
/// transfer stack in its descriptor without touching an object,
/// `Backend::flush_array`).
///
/// # Safety
/// `objs` are distinct class-`c` objects of `be`'s that nobody uses, that are in
/// no slot of the slab, each with the free mark in its first word (invariant 3
/// held while they were cached; the object a free gives up was marked by it).
unsafe fn flush_array<O: Os>(be: &Backend<O>, c: SizeClass, objs: &[*mut u8]) {
    ensure_key();
    // SAFETY: per the contract.
    unsafe { be.flush_array(c, objs) };
    be.note_flow(-((objs.len() * c.size_bytes()) as isize));
}

/// `first_heaps` before the settings are read.
const POLICY_UNREAD: usize = 0;
/// `first_heaps` with `STRATA_PERCPU` false: no thread is served per CPU.
const POLICY_NEVER: usize = usize::MAX;

/// The settings' answer for [`CpuCaches::thread_heaps_first`].
fn policy() -> Option<usize> {
    let env = crate::platform::environment();
    // SAFETY: `environment` returns null or the C library's environment block.
    let setting = unsafe { crate::env::getenv_raw(env, b"STRATA_PERCPU") };
    match setting {
        Some(v) if v.eq_ignore_ascii_case(b"auto") => {
            Some(crate::percpu::possible_cpus().unwrap_or(1) as usize)
        }
        Some(v) if crate::env::truthy(v) => Some(0),
        Some(_) => None,
        None => {
            // SAFETY: as above.
            let after = unsafe { crate::env::setting!(env, "PERCPU_AFTER") };
            match after.map(crate::env::parse_size) {
                Some(Some(n)) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Some(None) => {
                    crate::report::write_all(
                        crate::platform::STDERR,
                        b"strata: STRATA_PERCPU_AFTER: not a number; using the default\n",
                    );
                    Some(default_after())
                }
                None => Some(default_after()),
            }
        }
    }
}

/// [`default_thread_caches`] for the CPUs this thread may run on.
fn default_after() -> usize {
    crate::percpu::default_thread_caches(crate::percpu::usable_cpus().unwrap_or(1) as usize)
}

/// The slab, unless `STRATA_PERCPU` is false or the machine does not allow it.
/// Built when the first thread to be served per CPU asks for it.
fn build() -> Option<Slab> {
    let env = crate::platform::environment();
    // SAFETY: `environment` returns null or the C library's environment block.
    let setting = unsafe { crate::env::getenv_raw(env, b"STRATA_PERCPU") };
    let off = |v: &[u8]| !crate::env::truthy(v) && !v.eq_ignore_ascii_case(b"auto");
    if setting.is_some_and(off) {
        return None;
    }
    if crate::percpu::mode() == Mode::Off {
        return None;
    }
    let ncpu = crate::percpu::possible_cpus()?;
    let mut max = [0u16; NUM_CLASSES];
    let mut init = [0u16; NUM_CLASSES];
    for k in 0..NUM_CLASSES {
        max[k] = cap_for(k);
        init[k] = capacity::initial_cap(k);
    }
    let slab = Slab::new(ncpu, &max, &init).ok()?;
    slab.can_fence().ok()?;
    Some(slab)
}

#[cfg(all(test, not(strata_loom)))]
mod tests {
    use super::*;
    use crate::os::SysOs;

    fn violated(cc: &CpuCaches) -> Option<u32> {
        let be = Backend::new(SysOs);
        cc.validate(&be).err().map(|v| v.invariant)
    }

    #[test]
    fn validate_finds_served_threads_without_the_front_end_on() {
        let cc = CpuCaches::new();
        assert_eq!(violated(&cc), None);
        cc.note_thread();
        assert_eq!(violated(&cc), Some(6));
    }

    #[test]
    fn validate_finds_a_decision_taken_without_a_policy() {
        let cc = CpuCaches::new();
        cc.state.store(OFF, Ordering::Release);
        assert_eq!(violated(&cc), Some(5));
        cc.first_heaps.store(POLICY_NEVER, Ordering::Relaxed);
        assert_eq!(violated(&cc), Some(5));
        // `STRATA_PERCPU=1`: no thread cache first, then decided (off here).
        cc.first_heaps.store(1, Ordering::Relaxed);
        assert_eq!(violated(&cc), None);
    }
}
