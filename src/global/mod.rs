//! The process-wide allocator: the one [`Backend`], the thread's heap slot, thread
//! set-up and tear-down, the small-object fast paths, and `impl GlobalAlloc for
//! Strata`.
//!
//! TLS: one slot per thread (`platform::thread_slot!`), no registration, no
//! allocation. It starts pointing at the `EMPTY` sentinel, whose lists are empty
//! with `max == 0`, so a thread's first alloc or free misses the fast path and the
//! slow path sets up a real heap. Tear-down runs from the platform's thread-exit
//! key (after every `thread_local!` destructor); it flushes the heap, pools it, and
//! points the thread at `DEAD`, whose slow paths go straight to the central tier,
//! so frees that glibc makes afterwards still work.
//!
//! Files: this one (statics, TLS, fast and slow paths, `GlobalAlloc`); `by_address`
//! (the C ABI's and checked mode's `free`/`realloc` by address); `c_malloc` (C
//! `malloc`'s fast path by the size); `fork` (the fork
//! handlers); `api` (what the public API's setters and reports reach). Checked mode
//! and the background purge thread sit above: this module names neither.

mod api;
#[cfg(any(feature = "c-abi", feature = "checked"))]
mod by_address;
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
mod c_malloc;
mod fork;
mod growth;
// Checked builds route `Strata` through `checked`, not the thread heaps.
#[cfg(all(test, not(feature = "checked")))]
mod tests;

pub(crate) use api::*;
#[cfg(any(feature = "c-abi", feature = "checked"))]
pub(crate) use by_address::*;
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
pub(crate) use c_malloc::alloc_c;
pub(crate) use fork::{ForkLocks, Upper, add_fork_locks, register_fork_handlers};
pub(crate) use growth::{GrowthHook, set_growth_hook};

use crate::backend::{Route, route};
use crate::front::Allocator as Backend;
use crate::front::FrontEnd;
use crate::front::thread_cache::{HeapState, ThreadHeap};
use crate::platform::{self, SysOs, ThreadKey};
use crate::size_class::{SizeClass, class_for};
// The plain `GlobalAlloc` impl's (`checked` has its own).
#[cfg(not(feature = "checked"))]
use crate::{Strata, platform::OS_PAGE};
#[cfg(not(feature = "checked"))]
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

/// The front end that serves the process's small objects (static dispatch through
/// [`FrontEnd`]; its per-thread `Cache` is what the TLS slot points at).
pub(crate) type Front = crate::front::thread_cache::ThreadCaches;

/// The shared tiers of the process.
pub(crate) static BACKEND: Backend<SysOs> = Backend::new(SysOs);

/// The sentinel heaps, shared by every thread at once: only ever read, through
/// `&ThreadHeap` (ThreadHeap invariant 7: both fast paths miss on them before any
/// write, and the slow paths check `state()` before writing).
static EMPTY: ThreadHeap = ThreadHeap::new(HeapState::Empty);
static DEAD: ThreadHeap = ThreadHeap::new(HeapState::Dead);
/// The sentinel of threads served by the per-CPU front end (`STRATA_PERCPU=1`):
/// like `EMPTY`, its fast paths always miss, so the thread-cache fast path stays
/// the same code whichever front end serves; the slow paths recognise it by
/// address and go to `BACKEND.cpus`.
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
static VIA_CPU: ThreadHeap = ThreadHeap::new(HeapState::Empty);

/// The sentinel a heap's owner finds in its slot after the heap was drained while
/// the thread slept (`front::thread_cache::drain`): its fast paths miss, and the
/// slow paths find the thread's heap again through the thread key ([`own_heap`]).
static DRAINED: ThreadHeap = ThreadHeap::new(HeapState::Drained);

/// Whether thread heaps can be drained by another thread here: the drainer
/// accesses a thread's slot through its address, which the x86-64 Linux slot
/// (assembly moves) allows and the portable one (a `Cell`) does not.
const DRAINS: bool = cfg!(all(
    target_arch = "x86_64",
    target_os = "linux",
    not(strata_portable_tls)
));

/// A sentinel as the TLS slot holds it. The `*mut` is never written through
/// (invariant 7); every use makes a `&ThreadHeap`.
const fn sentinel(s: &'static ThreadHeap) -> *mut ThreadHeap {
    s as *const ThreadHeap as *mut ThreadHeap
}

// The thread's heap pointer: the platform's one thread slot (on x86-64 Linux an
// initial-exec TLS symbol: two loads; see `platform::thread_slot!`). It starts as
// the address of EMPTY in every thread, with no code run at thread start.
platform::thread_slot!(mod tls: *mut ThreadHeap = EMPTY;);

/// The calling thread's heap: one TLS load.
#[inline(always)]
fn heap() -> *mut ThreadHeap {
    tls::get()
}

const KEY_NONE: u8 = 0;
const KEY_BUSY: u8 = 1;
const KEY_READY: u8 = 2;
const KEY_FAILED: u8 = 3;
static KEY_STATE: AtomicU8 = AtomicU8::new(KEY_NONE);
static KEY: AtomicU32 = AtomicU32::new(0);

/// The thread-exit key whose destructor tears thread heaps down; None if it could
/// not be created (threads then keep their caches until exit; nothing is lost but
/// the cached objects).
fn thread_key() -> Option<ThreadKey> {
    loop {
        // Acquire: pairs with the Release below; KEY is visible once READY is.
        match KEY_STATE.load(Ordering::Acquire) {
            KEY_READY => return Some(ThreadKey::from_bits(KEY.load(Ordering::Relaxed))),
            KEY_FAILED => return None,
            KEY_NONE => {
                if KEY_STATE
                    .compare_exchange(KEY_NONE, KEY_BUSY, Ordering::Acquire, Ordering::Acquire)
                    .is_ok()
                {
                    let key = platform::thread_key_create(on_thread_exit);
                    if let Ok(k) = key {
                        KEY.store(k.to_bits(), Ordering::Relaxed);
                    }
                    // Release: publishes KEY to readers of READY.
                    KEY_STATE.store(
                        if key.is_ok() { KEY_READY } else { KEY_FAILED },
                        Ordering::Release,
                    );
                }
            }
            _ => core::hint::spin_loop(),
        }
    }
}

/// Fork child: a key creation that another thread had under way at the fork would
/// stay busy forever; it goes back to none (that thread's key may exist in the
/// parent's copy: a key is lost, no more).
fn reset_thread_key_after_fork() {
    // Relaxed: the child has one thread.
    let _ = KEY_STATE.compare_exchange(KEY_BUSY, KEY_NONE, Ordering::Relaxed, Ordering::Relaxed);
}

/// Gives the calling thread a live heap; null if the OS refuses memory.
#[cold]
fn init_thread() -> *mut ThreadHeap {
    init_thread_within(usize::MAX).unwrap_or(ptr::null_mut())
}

/// As [`init_thread`], while fewer than `limit` thread heaps are live; None (and
/// the thread still without a heap) otherwise.
#[cold]
fn init_thread_within(limit: usize) -> Option<*mut ThreadHeap> {
    let key = thread_key();
    let h = BACKEND.threads.new_thread_heap_within(&BACKEND, limit)?;
    if h.is_null() {
        return Some(h);
    }
    // Point TLS at the heap *before* setting the key's value: for keys >= 32 glibc
    // callocs there, and that calloc must find a live heap, not recurse into here.
    tls::set(h);
    // If the value cannot be set (ENOMEM), the thread keeps its cache until exit,
    // as without a key: nothing is lost but the cached objects.
    if let Some(key) = key {
        if platform::thread_key_set(key, h.cast_const().cast()).is_ok() {
            // The heap may be drained while the thread sleeps: the key finds it
            // again (`own_heap`) and its exit turns drains off.
            enable_drain(h);
        }
    }
    // After the heap is live, for the same reason (pthread_atfork may allocate).
    register_fork_handlers();
    Some(h)
}

/// Lets the background drain reach `h`, the calling thread's new heap.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(strata_portable_tls)))]
fn enable_drain(h: *mut ThreadHeap) {
    // SAFETY: `h` is the calling thread's live heap (never freed).
    // The slot is an aligned pointer that the owner only moves whole (assembly
    // `mov`s): an `AtomicPtr` to the drainer (same size and alignment).
    unsafe {
        (*h).enable_drain(
            platform::thread_id(),
            tls::addr().cast::<core::sync::atomic::AtomicPtr<ThreadHeap>>(),
        )
    };
}
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(strata_portable_tls))))]
fn enable_drain(_h: *mut ThreadHeap) {}

/// The heap the thread key holds for the calling thread, without waiting for the
/// key's creation (null if the key is not ready: a heap is made drainable only
/// once the key holds it, so a drained heap's key is ready; a fork child may find
/// a creation another thread had under way, which would never finish there).
fn key_heap() -> *mut ThreadHeap {
    // Acquire: pairs with the Release that published KEY.
    if KEY_STATE.load(Ordering::Acquire) != KEY_READY {
        return ptr::null_mut();
    }
    let key = ThreadKey::from_bits(KEY.load(Ordering::Relaxed));
    platform::thread_key_get(key).cast::<ThreadHeap>()
}

/// The calling thread's slot holds `DRAINED`: takes its heap back (found through
/// the thread key), settles it under its drain lock (`ThreadHeap::settle`) and
/// points the slot at it again; the caller then retries its operation, fast path
/// first. None if the heap cannot be found (it then stays at the sentinel, whose
/// slow paths use the central tier directly).
fn take_back_drained_heap() -> Option<*mut ThreadHeap> {
    let p = key_heap();
    if p.is_null() {
        return None;
    }
    // SAFETY: the key's value is this thread's live heap (`init_thread`), never
    // freed; shared, as other threads read its counters.
    let heap = unsafe { &*p };
    let _g = heap.lock_for_owner();
    // SAFETY: this thread's heap, its drain lock held.
    unsafe { heap.settle() };
    tls::set(p);
    Some(p)
}

/// The calling thread's own live heap with its drain lock held, for a call that
/// changes it: the heap `h` (the thread's slot) points at, or the one a drain took
/// the slot from (taken back first); None for a thread without a live heap.
fn own_heap(mut h: *mut ThreadHeap) -> Option<OwnHeap> {
    if h == sentinel(&DRAINED) {
        h = take_back_drained_heap()?;
    }
    if h.is_null() {
        return None;
    }
    // SAFETY: the calling thread's slot holds its live heap or a sentinel, all
    // never freed; shared, as other threads read a heap's counters.
    let heap: &'static ThreadHeap = unsafe { &*h };
    if heap.state() != HeapState::Live {
        return None;
    }
    let guard = heap.lock_for_owner();
    // SAFETY: the heap is this thread's and its drain lock is held.
    unsafe { heap.settle() };
    Some(OwnHeap {
        heap,
        _guard: guard,
    })
}

/// The calling thread's live heap with its drain lock held (see [`own_heap`]).
struct OwnHeap {
    heap: &'static ThreadHeap,
    _guard: crate::sync::LockGuard<'static>,
}

/// Drains the caches of threads that left them alone through `passes` calls in a
/// row and sleep now (the background purge thread's pass; with 0, whatever they
/// did before: `release_memory`; `front::thread_cache::drain`): the bytes moved
/// to the central tier.
pub(crate) fn drain_idle_thread_caches(passes: u32) -> usize {
    if !DRAINS {
        return 0;
    }
    BACKEND.threads.drain_idle(
        &BACKEND.backend,
        sentinel(&DRAINED),
        passes,
        platform::thread_sleeping,
    )
}

/// Fork child, with the pool lock held (the fork handlers): only the forking
/// thread's heap stays drainable, under its new thread id.
fn forget_drains_in_child() {
    let mut mine = heap();
    if mine == sentinel(&DRAINED) {
        mine = key_heap();
    }
    let tid = if DRAINS { platform::thread_id() } else { 0 };
    // SAFETY: the fork handlers hold the pool lock.
    unsafe { BACKEND.threads.forget_drains_after_fork(mine, tid) };
}

/// Thread-exit key destructor: the thread is exiting.
extern "C" fn on_thread_exit(h: *mut c_void) {
    let h = h.cast::<ThreadHeap>();
    tls::set(sentinel(&DEAD));
    // SAFETY: `h` is this thread's live heap (we set it as the key's value) and the
    // thread will not touch it again: TLS now points at DEAD.
    unsafe { BACKEND.threads.detach(h, &BACKEND) };
}

/// The per-CPU front end's slab and the calling thread's rseq area, if the thread
/// is served per CPU: its slot holds `VIA_CPU`, or `EMPTY` (a fresh thread) and
/// the front end is on, in which case the slot moves to `VIA_CPU`. A fresh thread
/// whose rseq area is not usable stays `EMPTY`, and the caller gives it a thread
/// heap as when the front end is off. A fresh thread gets a thread heap while
/// fewer than `thread_heaps_first()` are live (`*h` becomes it, and the caller
/// serves from it: by default the first max(128, 8 x CPUs), with `auto` one per
/// CPU, with `STRATA_PERCPU=1` none); only the threads after those are served
/// per CPU, and only they build the slab, so programs with fewer threads keep
/// the thread cache's fast path and never map the slab.
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
#[inline(always)]
fn via_cpu(
    h: &mut *mut ThreadHeap,
) -> Option<(
    &'static crate::percpu::Slab,
    ptr::NonNull<crate::percpu::RseqArea>,
)> {
    if *h == sentinel(&VIA_CPU) {
        // Found on, with a usable area, before: no decision to take, and the area
        // is not checked again (a section on one no longer registered fails, and
        // the slow paths then use the central tier; in `Own` mode
        // `current_for_section` registers again, or the thread gets a heap).
        return Some((
            BACKEND.cpus.slab_if_on()?,
            crate::percpu::current_for_section()?,
        ));
    }
    if *h != sentinel(&EMPTY) {
        return None;
    }
    let first = BACKEND.cpus.thread_heaps_first()?;
    if first > 0 {
        match init_thread_within(first) {
            // A heap of its own; on no memory, per CPU after all.
            Some(nh) if !nh.is_null() => {
                *h = nh;
                return None;
            }
            _ => {}
        }
    }
    let slab = BACKEND.cpus.slab()?;
    let area = crate::percpu::current()?;
    // Thread caches that flush from now on hand whole batches over as arrays,
    // which this thread's CPU refills from without reading an object.
    BACKEND.backend.want_arrays();
    BACKEND.cpus.note_thread();
    tls::set(sentinel(&VIA_CPU));
    // After the slot is set, as in `init_thread`.
    register_fork_handlers();
    Some((slab, area))
}

#[cold]
#[inline(never)]
fn alloc_small_slow(mut h: *mut ThreadHeap, c: SizeClass) -> *mut u8 {
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    if let Some((slab, area)) = via_cpu(&mut h) {
        // SAFETY: the front end's slab and this thread's usable area; the slab
        // holds objects of BACKEND's only.
        let p = unsafe { BACKEND.cpus.alloc(slab, area, c, &BACKEND.backend) };
        growth::on_slow_path();
        return enomem_if_null(p);
    }
    // SAFETY: `h` is the calling thread's heap pointer (live or a sentinel); shared,
    // as other threads may read it (statistics, or everyone for a sentinel).
    let heap = unsafe { &*h };
    debug_check!(
        heap.state() == HeapState::Live || heap.is_empty(),
        "a sentinel or pooled heap holds objects"
    );
    let own = match heap.state() {
        HeapState::Live => own_heap(h),
        // Missed on the sentinel, not on the heap: taken back, the whole
        // operation again (its fast path may hit what the drain left).
        HeapState::Drained if take_back_drained_heap().is_some() => return alloc_small(c),
        HeapState::Empty => own_heap(init_thread()),
        HeapState::Drained | HeapState::Dead | HeapState::Pooled => None,
    };
    let p = match own {
        // SAFETY: the thread's own live heap, its drain lock held.
        Some(own) => unsafe { BACKEND.threads.alloc_slow(own.heap, c, &BACKEND) },
        None => BACKEND.alloc_small_direct(c),
    };
    growth::on_slow_path();
    enomem_if_null(p)
}

/// Sets `errno = ENOMEM` when an allocation fails. Done here, in the slow paths,
/// rather than in the C entry points, so that `malloc`'s fast path can tail-call the
/// slow path and keep no stack frame. Harmless for Rust callers.
#[inline(always)]
pub(crate) fn enomem_if_null(p: *mut u8) -> *mut u8 {
    if p.is_null() {
        platform::set_errno(platform::ENOMEM);
    }
    p
}

#[cold]
#[inline(never)]
unsafe fn free_small_slow(p: *mut u8, c: SizeClass, mut h: *mut ThreadHeap) {
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    if let (Some((slab, area)), Some(obj)) = (via_cpu(&mut h), ptr::NonNull::new(p)) {
        // SAFETY: as in `alloc_small_slow`; the caller gives up `obj`, a live
        // class-c block of BACKEND's.
        unsafe { BACKEND.cpus.free(slab, area, c, obj, &BACKEND.backend) };
        return;
    }
    // SAFETY: `h` is the calling thread's heap pointer (live or a sentinel); shared,
    // as other threads may read it (statistics, or everyone for a sentinel).
    let heap = unsafe { &*h };
    debug_check!(
        heap.state() == HeapState::Live || heap.is_empty(),
        "a sentinel or pooled heap holds objects"
    );
    let own = match heap.state() {
        HeapState::Live => own_heap(h),
        // As in `alloc_small_slow`: taken back, the whole operation again.
        HeapState::Drained if take_back_drained_heap().is_some() => {
            // SAFETY: the caller's contract, unchanged (`p` not touched yet).
            return unsafe { free_small(c, p) };
        }
        HeapState::Empty => own_heap(init_thread()),
        HeapState::Drained | HeapState::Dead | HeapState::Pooled => None,
    };
    // SAFETY: the caller gives up `p`, a class-c block of ours; `own` is this
    // thread's live heap with its drain lock held.
    unsafe {
        match own {
            Some(own) => BACKEND.threads.free_slow(own.heap, c, p, &BACKEND),
            None => BACKEND.free_small_direct(c, p),
        }
    }
}

/// Small-object alloc: TLS load, pop, one branch (budget ~16 instructions; with
/// `harden`, 3 more: the decode and check of the popped object's link, which also
/// finds an empty list (no null test), and the store that clears it).
#[inline(always)]
fn alloc_small(c: SizeClass) -> *mut u8 {
    let h = heap();
    // SAFETY: `h` is this thread's heap or a sentinel; c is a valid class.
    let p = unsafe { Front::alloc_fast(&*h, c) };
    if p.is_null() {
        alloc_small_miss(h, c)
    } else {
        p
    }
}

/// The thread cache's fast path missed. A thread served per CPU (its slot holds
/// `VIA_CPU`, whose fast paths always miss) is served here from its CPU's stack
/// (29 instructions to the return: the sentinel test, the area and slab, the
/// critical section and its count, the mark cleared); everything else goes on to the
/// cold slow path. Not cold itself: with the per-CPU front end on, this is the
/// fast path.
#[inline(never)]
fn alloc_small_miss(h: *mut ThreadHeap, c: SizeClass) -> *mut u8 {
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    if h == sentinel(&VIA_CPU) {
        // SAFETY: a slot holds VIA_CPU only after `via_cpu` saw the front end on
        // (`CpuCaches::slab` returned Some, Acquire) on this thread; its slab holds
        // BACKEND's objects only.
        let p = unsafe { BACKEND.cpus.alloc_hit(c) };
        if !p.is_null() {
            return p;
        }
    }
    alloc_small_slow(h, c)
}

/// Small-object free: TLS load, push, one branch (budget ~12 instructions; with
/// `harden`, 6 more: the key load, the block's address XORed into it once, the
/// test of the block's own first word that catches a double free of a cached block
/// (a load, an XOR, the mask test and a branch), and the XOR encoding the link,
/// which takes the list head as its memory operand).
///
/// # Safety
/// `p` is a live class-`c` block of ours that the caller gives up.
#[inline(always)]
unsafe fn free_small(c: SizeClass, p: *mut u8) {
    let h = heap();
    // SAFETY: `h` is this thread's heap or a sentinel; the caller's contract.
    unsafe {
        if !Front::free_fast(&*h, c, p) {
            free_small_miss(p, c, h);
        }
    }
}

/// The free beside [`alloc_small_miss`]: a thread served per CPU caches `p` on its
/// CPU here; everything else goes on to the cold slow path.
///
/// # Safety
/// As for `free_small`; `h` is the calling thread's slot.
#[inline(never)]
unsafe fn free_small_miss(p: *mut u8, c: SizeClass, h: *mut ThreadHeap) {
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    if h == sentinel(&VIA_CPU) {
        // SAFETY: `p` is a live block (the contract), so not null.
        let obj = unsafe { ptr::NonNull::new_unchecked(p) };
        // SAFETY: as in `alloc_small_miss`; the caller gives up `obj`, a live
        // class-c block of BACKEND's.
        if unsafe { BACKEND.cpus.free_hit(c, obj, &BACKEND.backend) } {
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { free_small_slow(p, c, h) }
}

/// Everything that is not a small request with a non-zero size.
#[cold]
#[inline(never)]
fn alloc_other(size: usize, align: usize, zero: bool) -> *mut u8 {
    let p = match route(size, align) {
        Route::Small(c) => {
            let p = alloc_small(c);
            if zero && !p.is_null() {
                // SAFETY: a fresh block of at least the class size >= size.
                unsafe { ptr::write_bytes(p, 0, c.size_bytes()) };
            }
            p
        }
        // A program whose first blocks are large has no thread heap yet.
        Route::Large => {
            register_fork_handlers();
            BACKEND.alloc_large(size, align, zero)
        }
        Route::Huge => {
            register_fork_handlers();
            BACKEND.alloc_huge(size, align, zero)
        }
    };
    growth::on_slow_path();
    enomem_if_null(p)
}

/// # Safety
/// `p` was allocated with `size`/`align` and is given up.
#[cfg(not(feature = "checked"))]
#[cold]
#[inline(never)]
unsafe fn free_other(p: *mut u8, size: usize, align: usize) {
    // SAFETY: per the contract; the route is the one alloc took.
    unsafe {
        match route(size, align) {
            Route::Small(c) => free_small(c, p),
            Route::Large => BACKEND.free_large(p),
            Route::Huge => BACKEND.free_huge(p),
        }
    }
}

// SAFETY: blocks are at least `layout.size()` bytes, aligned to `layout.align()`
// (size classes are multiples of the alignment and spans page aligned; large spans
// and huge mappings are trimmed to it); a block is never handed out twice before it
// is freed; failures return null; nothing here panics or unwinds.
// With the `checked` feature, `checked` implements it instead, on top of the by-address
// paths below.
#[cfg(not(feature = "checked"))]
unsafe impl GlobalAlloc for Strata {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_for(layout.size(), layout.align()) {
            Some(c) => alloc_small(c),
            None => alloc_other(layout.size(), layout.align(), false),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: the GlobalAlloc contract: `p` came from us with this layout.
        unsafe {
            match class_for(layout.size(), layout.align()) {
                Some(c) => free_small(c, p),
                None => free_other(p, layout.size(), layout.align()),
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_for(layout.size(), layout.align()) {
            Some(c) => {
                let p = alloc_small(c);
                if !p.is_null() {
                    // SAFETY: a fresh block of at least layout.size() bytes.
                    unsafe { ptr::write_bytes(p, 0, layout.size()) };
                }
                p
            }
            None => alloc_other(layout.size(), layout.align(), true),
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let q = unsafe { realloc_layout(p, layout, new_size) };
        count_realloc(p, q);
        q
    }
}

/// `GlobalAlloc::realloc` without the statistics.
///
/// # Safety
/// As for `GlobalAlloc::realloc`.
#[cfg(not(feature = "checked"))]
#[inline(always)]
unsafe fn realloc_layout(p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    let align = layout.align();
    match (route(layout.size(), align), route(new_size, align)) {
        (Route::Small(a), Route::Small(b)) if a == b => return p,
        (Route::Large, Route::Large) => {
            // SAFETY: the GlobalAlloc contract: `p` is a live Large block of ours.
            let in_place = unsafe { BACKEND.resize_large_in_place(p, new_size) };
            if in_place {
                return p;
            }
        }
        (Route::Huge, Route::Huge) if align <= OS_PAGE => {
            // SAFETY: `p` is a live huge block aligned to at most a page; on
            // failure it stays intact and we return null, as realloc must.
            return unsafe { BACKEND.realloc_huge(p, new_size) };
        }
        _ => {}
    }
    // SAFETY: align is the live layout's, a power of two; new_size is valid for it.
    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
    // SAFETY: as in alloc.
    let q = unsafe { Strata.alloc(new_layout) };
    if !q.is_null() {
        // SAFETY: both blocks are live, distinct, and at least min(old, new) long.
        unsafe {
            ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
            Strata.dealloc(p, layout);
        }
    }
    q
}

/// Counts a reallocation of `p` that returned `q` (in place when they are equal) in
/// the calling thread's heap, or in the backend's counters if it has none.
#[inline]
pub(crate) fn count_realloc(p: *mut u8, q: *mut u8) {
    if q.is_null() {
        return;
    }
    let in_place = p == q;
    let h = heap();
    // SAFETY: this thread's heap or a sentinel; only a live heap is written, by its
    // owner (us).
    unsafe {
        if (*h).state() == HeapState::Live {
            (*h).note_realloc(in_place);
        } else {
            let c = &BACKEND.counters;
            crate::backend::Counters::bump(&c.reallocs);
            if in_place {
                crate::backend::Counters::bump(&c.reallocs_in_place);
            }
        }
    }
}

/// Allocates `size` bytes at `align` (zeroed if `zero`): the entry for callers that
/// have no `Layout` (the C ABI). Null on failure.
#[cfg(any(feature = "c-abi", feature = "checked"))]
#[inline(always)]
pub(crate) fn alloc_bytes(size: usize, align: usize, zero: bool) -> *mut u8 {
    match class_for(size, align) {
        Some(c) => {
            let p = alloc_small(c);
            if zero && !p.is_null() {
                // SAFETY: a fresh block of at least `size` bytes.
                unsafe { ptr::write_bytes(p, 0, size) };
            }
            p
        }
        None => alloc_other(size, align, zero),
    }
}
