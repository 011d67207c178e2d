//! The process-wide allocator: the one [`Backend`], the thread-local heap pointer,
//! thread set-up and tear-down, and `impl GlobalAlloc for Strata`.
//!
//! TLS: one slot per thread (see `mod tls`), no registration, no allocation. It
//! starts pointing at the `EMPTY` sentinel, whose lists are empty with `max == 0`, so a thread's first alloc or free
//! misses the fast path and the slow path sets up a real heap. Tear-down runs from a
//! `pthread_key_create` destructor (after every `thread_local!` destructor); it
//! flushes the heap, pools it, and points the thread at `DEAD`, whose slow paths go
//! straight to the central tier, so frees that glibc makes afterwards still work.

use crate::Violation;
use crate::backend::{Locks, Route, route};
#[cfg(any(feature = "c-abi", feature = "checked"))]
use crate::chunk::{ChunkHeader, SpanKind, small_object};
use crate::front::Allocator as Backend;
use crate::front::FrontEnd;
use crate::front::thread_cache::{HeapState, ThreadHeap};
use crate::os::SysOs;
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
use crate::size_class::{C_TABLE_MAX, class_for_c, class_for_c_table};
use crate::size_class::{SizeClass, class_for};
// The plain `GlobalAlloc` impl's (`checked` has its own).
#[cfg(not(feature = "checked"))]
use crate::{Strata, os::OS_PAGE};
#[cfg(not(feature = "checked"))]
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

/// The front end that serves the process's small objects (static dispatch through
/// [`FrontEnd`]; its per-thread `Cache` is what the TLS slot points at).
type Front = crate::front::thread_cache::ThreadCaches;

/// The shared tiers of the process.
pub(crate) static BACKEND: Backend<SysOs> = Backend::new(SysOs);

/// The sentinel heaps, shared by every thread at once: only ever read, through
/// `&ThreadHeap` (ThreadHeap invariant 7: both fast paths miss on them before any
/// write, and the slow paths check `state()` before writing).
static EMPTY: ThreadHeap = ThreadHeap::new(HeapState::Empty);
static DEAD: ThreadHeap = ThreadHeap::new(HeapState::Dead);

/// A sentinel as the TLS slot holds it. The `*mut` is never written through
/// (invariant 7); every use makes a `&ThreadHeap`.
const fn sentinel(s: &'static ThreadHeap) -> *mut ThreadHeap {
    s as *const ThreadHeap as *mut ThreadHeap
}

// The thread's heap pointer lives in one TLS slot. On x86-64 Linux it is a symbol of
// our own in .tdata, read with the initial-exec model (`@GOTTPOFF`: one load from the
// GOT, one %fs-relative load), because stable Rust gives a cdylib only the
// general-dynamic model, a call to `__tls_get_addr` per access (measured: 11
// instructions per call plus spills around it in `free`). In an executable the linker
// relaxes this to local-exec. The slot starts as the address of EMPTY: glibc applies
// the relocation to the TLS image before copying it for the first thread, and copies
// the relocated image for every later one. The cost: a library using it must be
// loaded at start-up (LD_PRELOAD, DT_NEEDED) or fit glibc's surplus static TLS when
// dlopen'ed (8 bytes here), as with mimalloc and jemalloc.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(strata_portable_tls)))]
mod tls {
    use super::{EMPTY, ThreadHeap};

    core::arch::global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        ".hidden __strata_tls_heap",
        ".globl __strata_tls_heap",
        ".type __strata_tls_heap,@object",
        ".size __strata_tls_heap,8",
        "__strata_tls_heap:",
        ".quad {empty}",
        ".popsection",
        empty = sym EMPTY,
    );

    /// The calling thread's heap pointer.
    #[inline(always)]
    pub(super) fn get() -> *mut ThreadHeap {
        let p: *mut ThreadHeap;
        // SAFETY: reads this thread's slot through the initial-exec TLS sequence;
        // the slot always holds EMPTY, DEAD or the thread's live heap.
        unsafe {
            core::arch::asm!(
                "mov {p}, qword ptr [rip + __strata_tls_heap@GOTTPOFF]",
                "mov {p}, qword ptr fs:[{p}]",
                p = out(reg) p,
                options(nostack, readonly, preserves_flags, pure),
            );
        }
        p
    }

    /// Points the calling thread's slot at `h`.
    #[inline]
    pub(super) fn set(h: *mut ThreadHeap) {
        // SAFETY: writes this thread's slot through the initial-exec TLS sequence.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + __strata_tls_heap@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {h}",
                t = out(reg) _,
                h = in(reg) h,
                options(nostack, preserves_flags),
            );
        }
    }
}

// Elsewhere (and on x86-64 Linux with `--cfg strata_portable_tls`, which CI builds
// so that this path is compiled and tested): a const-initialised `Cell` with no
// destructor is a bare TLS slot (no registration, no allocation).
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(strata_portable_tls))))]
mod tls {
    use super::{EMPTY, ThreadHeap, sentinel};
    use core::cell::Cell;

    thread_local! {
        static HEAP: Cell<*mut ThreadHeap> = const { Cell::new(sentinel(&EMPTY)) };
    }

    #[inline(always)]
    pub(super) fn get() -> *mut ThreadHeap {
        HEAP.with(|h| h.get())
    }

    #[inline]
    pub(super) fn set(h: *mut ThreadHeap) {
        HEAP.with(|slot| slot.set(h));
    }
}

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

/// The pthread key whose destructor tears thread heaps down; None if it could not
/// be created (threads then keep their caches until exit; nothing is lost but the
/// cached objects).
fn thread_key() -> Option<libc::pthread_key_t> {
    loop {
        // Acquire: pairs with the Release below; KEY is visible once READY is.
        match KEY_STATE.load(Ordering::Acquire) {
            KEY_READY => return Some(KEY.load(Ordering::Relaxed)),
            KEY_FAILED => return None,
            KEY_NONE => {
                if KEY_STATE
                    .compare_exchange(KEY_NONE, KEY_BUSY, Ordering::Acquire, Ordering::Acquire)
                    .is_ok()
                {
                    let mut key: libc::pthread_key_t = 0;
                    // SAFETY: pthread_key_create writes the key; it does not allocate.
                    let rc = unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) };
                    KEY.store(key, Ordering::Relaxed);
                    // Release: publishes KEY to readers of READY.
                    KEY_STATE.store(
                        if rc == 0 { KEY_READY } else { KEY_FAILED },
                        Ordering::Release,
                    );
                }
            }
            _ => core::hint::spin_loop(),
        }
    }
}

/// Gives the calling thread a live heap; null if the OS refuses memory.
#[cold]
fn init_thread() -> *mut ThreadHeap {
    let key = thread_key();
    let h = BACKEND.threads.attach(&BACKEND);
    if h.is_null() {
        return h;
    }
    // Point TLS at the heap *before* pthread_setspecific: for keys >= 32 glibc
    // callocs there, and that calloc must find a live heap, not recurse into here.
    tls::set(h);
    if let Some(key) = key {
        // SAFETY: a valid key; the value is our heap pointer.
        unsafe { libc::pthread_setspecific(key, h.cast()) };
    }
    // After the heap is live, for the same reason (pthread_atfork may allocate).
    register_fork_handlers();
    h
}

/// pthread key destructor: the thread is exiting.
extern "C" fn on_thread_exit(h: *mut libc::c_void) {
    let h = h.cast::<ThreadHeap>();
    tls::set(sentinel(&DEAD));
    // SAFETY: `h` is this thread's live heap (we set it as the key's value) and the
    // thread will not touch it again: TLS now points at DEAD.
    unsafe { BACKEND.threads.detach(h, &BACKEND) };
}

#[cold]
#[inline(never)]
fn alloc_small_slow(h: *mut ThreadHeap, c: SizeClass) -> *mut u8 {
    // SAFETY: `h` is the calling thread's heap pointer (live or a sentinel); shared,
    // as other threads may read it (statistics, or everyone for a sentinel).
    let heap = unsafe { &*h };
    debug_check!(
        heap.state() == HeapState::Live || heap.is_empty(),
        "a sentinel or pooled heap holds objects"
    );
    let p = match heap.state() {
        // SAFETY: a live heap is the calling thread's own.
        HeapState::Live => unsafe { BACKEND.threads.alloc_slow(heap, c, &BACKEND) },
        HeapState::Empty => {
            let nh = init_thread();
            if nh.is_null() {
                BACKEND.alloc_small_direct(c)
            } else {
                // SAFETY: a fresh live heap of this thread.
                unsafe { BACKEND.threads.alloc_slow(&*nh, c, &BACKEND) }
            }
        }
        HeapState::Dead | HeapState::Pooled => BACKEND.alloc_small_direct(c),
    };
    enomem_if_null(p)
}

/// Sets `errno = ENOMEM` when an allocation fails. Done here, in the slow paths,
/// rather than in the C entry points, so that `malloc`'s fast path can tail-call the
/// slow path and keep no stack frame. Harmless for Rust callers.
#[inline(always)]
pub(crate) fn enomem_if_null(p: *mut u8) -> *mut u8 {
    if p.is_null() {
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
    }
    p
}

#[cold]
#[inline(never)]
unsafe fn free_small_slow(p: *mut u8, c: SizeClass, h: *mut ThreadHeap) {
    // SAFETY: `h` is the calling thread's heap pointer (live or a sentinel); shared,
    // as other threads may read it (statistics, or everyone for a sentinel).
    let heap = unsafe { &*h };
    debug_check!(
        heap.state() == HeapState::Live || heap.is_empty(),
        "a sentinel or pooled heap holds objects"
    );
    let live = match heap.state() {
        HeapState::Live => h,
        HeapState::Empty => init_thread(),
        HeapState::Dead | HeapState::Pooled => ptr::null_mut(),
    };
    // SAFETY: the caller gives up `p`, a class-c block of ours; `live` is null or
    // this thread's live heap.
    unsafe {
        if live.is_null() {
            BACKEND.free_small_direct(c, p)
        } else {
            BACKEND.threads.free_slow(&*live, c, p, &BACKEND)
        }
    }
}

/// Small-object alloc: TLS load, pop, one branch (budget ~16 instructions; with
/// `harden`, 5 more: the decode and check of the popped object's link, and the
/// store that clears it).
#[inline(always)]
fn alloc_small(c: SizeClass) -> *mut u8 {
    let h = heap();
    // SAFETY: `h` is this thread's heap or a sentinel; c is a valid class.
    let p = unsafe { Front::alloc_fast(&*h, c) };
    if p.is_null() {
        alloc_small_slow(h, c)
    } else {
        p
    }
}

/// Small-object free: TLS load, push, one branch (budget ~12 instructions; with
/// `harden`, 8 more: the key load and two XORs encoding the link, and the test of
/// the block's own first word that catches a double free of a cached block).
///
/// # Safety
/// `p` is a live class-`c` block of ours that the caller gives up.
#[inline(always)]
unsafe fn free_small(c: SizeClass, p: *mut u8) {
    let h = heap();
    // SAFETY: `h` is this thread's heap or a sentinel; the caller's contract.
    unsafe {
        if !Front::free_fast(&*h, c, p) {
            free_small_slow(p, c, h);
        }
    }
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
            crate::stats::Counters::bump(&c.reallocs);
            if in_place {
                crate::stats::Counters::bump(&c.reallocs_in_place);
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

/// C `malloc(size)`: [`alloc_bytes`] at 16-byte alignment (size 0 included).
/// Budget: 17 instructions up to 1 KiB on a hit (callgrind and `objdump -d` of
/// `malloc` in the `c-abi` build): class table 6, TLS 2, pop 9, two branches. A
/// miss and larger sizes go to `alloc_c_slow`, which looks the class up again, so
/// that only `size` has to stay live across the fast path (keeping the class for
/// `alloc_small_slow` would cost three moves).
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
#[inline(always)]
pub(crate) fn alloc_c(size: usize) -> *mut u8 {
    if size <= C_TABLE_MAX {
        let c = class_for_c_table(size);
        let h = heap();
        // SAFETY: `h` is this thread's heap or a sentinel; c is a valid class.
        let p = unsafe { Front::alloc_fast(&*h, c) };
        if !p.is_null() {
            return p;
        }
    }
    alloc_c_slow(size)
}

/// `alloc_c` for a miss or a size above 1 KiB (not cold: sizes up to 256 KiB are
/// still small and served from the thread cache here).
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
#[inline(never)]
fn alloc_c_slow(size: usize) -> *mut u8 {
    match class_for_c(size) {
        Some(c) => alloc_small(c),
        None => alloc_other(size, 16, false),
    }
}

/// What a pointer is, found by address without reading through it.
#[cfg(any(feature = "c-abi", feature = "checked"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// An object of this class in one of our chunks.
    Small(SizeClass),
    /// The start of a Large span of this many bytes.
    Large(usize),
    /// The start of a huge mapping of this many bytes.
    Huge(usize),
    /// Not the start of a block of ours.
    Foreign,
}

/// Classifies `p` by address (chunk map, page entries, huge registry). Small objects
/// must be object starts inside their span (`chunk::small_object`); the checked
/// mode adds its own, stricter checks on top.
#[cfg(any(feature = "c-abi", feature = "checked"))]
#[inline]
pub(crate) fn owner_of(p: *const u8) -> Owner {
    if BACKEND.page_heap.owns(p) {
        // SAFETY: `p` lies in a mapped chunk (chunk map), so the header is readable;
        // page entries and kinds are atomics.
        unsafe {
            if let Some(c) = small_object(p as usize) {
                return Owner::Small(c);
            }
            let span = &*(*ChunkHeader::of(p)).span_of(p);
            // The page-map entry of a Large block's interior page may be stale (Span
            // invariant 2): only the span's own start counts.
            match span.kind() {
                SpanKind::Large if ptr::eq(span.base(), p) => Owner::Large(span.bytes()),
                _ => Owner::Foreign,
            }
        }
    } else {
        match BACKEND.huge.lookup(p) {
            Some(len) => Owner::Huge(len),
            None => Owner::Foreign,
        }
    }
}

/// The class of `p` if it is the start of an object in a Small span of ours: the hot
/// part of `free` by address (chunk map entry, page entry, one multiply; never reads
/// `p`). An interior or misaligned pointer pushed on a free list would later hand
/// out overlapping memory, so `small_object` checks both, and the span's tail.
#[cfg(any(feature = "c-abi", feature = "checked"))]
#[inline(always)]
fn small_class_of(p: *const u8) -> Option<SizeClass> {
    if !BACKEND.page_heap.owns(p) {
        return None;
    }
    // SAFETY: `p` lies in a mapped chunk (chunk map).
    unsafe { small_object(p as usize) }
}

/// Frees a block of ours found by address; false (and nothing done) if `p` is null
/// or not the start of a block of ours.
///
/// Budget: 30 instructions for a small object whose list has room (`objdump -d` of
/// `free` in the `c-abi` build without `harden`): chunk map 8 (`ChunkMap::contains`;
/// null and high addresses included), page entry and object check 10
/// (`chunk::small_object`), TLS 2 and push 10; three branches to the slow path, none
/// taken. `harden` adds 5 to the push (see `alloc_small`/`free_small`).
///
/// # Safety
/// If `p` is ours, it is live and the caller gives it up.
#[cfg(any(feature = "c-abi", feature = "checked"))]
#[inline(always)]
pub(crate) unsafe fn free_by_address(p: *mut u8) -> bool {
    if let Some(c) = small_class_of(p) {
        let h = heap();
        // SAFETY: `p` is a live class-c object of ours (contract), given up; `h` is
        // this thread's heap or a sentinel.
        if unsafe { Front::free_fast(&*h, c, p) } {
            return true;
        }
    }
    // A full list (or a sentinel heap) takes the slow path too, which looks `p` up
    // again: then nothing but `p` has to stay live across the fast path, where
    // keeping the class for `free_small_slow` costs a register and three moves.
    // SAFETY: forwarded contract; if the push failed, nothing was done.
    unsafe { free_by_address_slow(p) }
}

/// `free_by_address` for everything but small objects that fit their list, out of
/// line so that the hot path saves no registers.
///
/// # Safety
/// As for `free_by_address`.
#[cfg(any(feature = "c-abi", feature = "checked"))]
#[cold]
#[inline(never)]
unsafe fn free_by_address_slow(p: *mut u8) -> bool {
    if p.is_null() {
        return false;
    }
    // SAFETY: per the contract; each arm frees through the path the block came from.
    unsafe {
        match owner_of(p) {
            Owner::Small(c) => free_small(c, p),
            Owner::Large(_) => BACKEND.free_large(p),
            Owner::Huge(_) => BACKEND.free_huge(p),
            Owner::Foreign => {
                #[cfg(all(feature = "c-abi", not(feature = "checked")))]
                crate::bad_free::report(crate::bad_free::Op::Free, p);
                return false;
            }
        }
    }
    true
}

/// Resizes a block found by address, keeping `min(old, new)` bytes; new blocks get
/// `align`. Null (and `p` untouched) on failure or if `p` is not ours.
///
/// # Safety
/// If `p` is ours, it is live; on success the caller uses the result instead.
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
pub(crate) unsafe fn realloc_by_address(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    // SAFETY: forwarded contract.
    let q = unsafe { realloc_by_address_uncounted(p, new_size, align) };
    count_realloc(p, q);
    q
}

/// `realloc_by_address` without the statistics.
///
/// # Safety
/// As for `realloc_by_address`.
#[cfg(all(feature = "c-abi", not(feature = "checked")))]
unsafe fn realloc_by_address_uncounted(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    let owner = owner_of(p);
    let old_size = match owner {
        Owner::Small(c) => {
            if class_for(new_size, align) == Some(c) {
                return p;
            }
            c.size_bytes()
        }
        Owner::Large(bytes) => {
            if route(new_size, align) == Route::Large {
                // SAFETY: `p` is the start of a live Large span of ours.
                let in_place = unsafe { BACKEND.resize_large_in_place(p, new_size) };
                if in_place {
                    return p;
                }
            }
            bytes
        }
        Owner::Huge(len) => {
            if route(new_size, align) == Route::Huge {
                // SAFETY: a live huge block; its mapping starts at `p` (the registry
                // says so), so mremap of the whole mapping is valid. C's realloc
                // promises only the default alignment, which mremap keeps.
                return unsafe { BACKEND.realloc_huge(p, new_size) };
            }
            len
        }
        Owner::Foreign => {
            crate::bad_free::report(crate::bad_free::Op::Realloc, p);
            return ptr::null_mut();
        }
    };
    let q = alloc_bytes(new_size, align, false);
    if !q.is_null() {
        // SAFETY: both blocks are live, distinct, and at least min(old, new) long;
        // `p` is ours (not Foreign) and given up.
        unsafe {
            ptr::copy_nonoverlapping(p, q, old_size.min(new_size));
            free_by_address(p);
        }
    }
    q
}

// ---- fork ------------------------------------------------------------------------
//
// A child of `fork()` has one thread, the one that forked: a lock another thread held
// at that moment stays held in the child forever. The handlers below hold every lock
// of the allocator across the fork (taken in the lock order, `sync/rank.rs`) and
// release them on both sides. They are registered once per process, by whichever
// comes first: the first thread heap or Large/huge block (`register_fork_handlers`,
// every build: a `#[global_allocator]` program forks too), or the C library's
// load-time constructor (`ffi::configure`).

const FORK_NONE: u8 = 0;
const FORK_BUSY: u8 = 1;
const FORK_DONE: u8 = 2;
const FORK_FAILED: u8 = 3;
/// The once-state of the fork handlers' registration.
static FORK_STATE: AtomicU8 = AtomicU8::new(FORK_NONE);

/// Registers the fork handlers unless that is done or under way (once per process).
/// Does not wait for a registration under way in another thread: nothing here
/// depends on it having finished, and a waiter could spin forever in a child forked
/// meanwhile. Call with no allocator lock held (`pthread_atfork` takes libc's fork
/// lock, which `fork()` holds while our prepare handler takes ours). On failure
/// (`ENOMEM` from libc) it reports once on stderr and goes on: forks then work as
/// without the handlers, a child may inherit a held lock.
///
/// Known limit: glibc holds its atfork lock while it runs any library's fork
/// handlers, so if the process's very first strata allocation were made inside
/// another library's fork handler, `pthread_atfork` here would wait for that lock
/// forever. It takes a fork before any allocation at all (the C library registers
/// from its constructor, and a Rust program allocates before `main`).
#[inline]
pub(crate) fn register_fork_handlers() {
    // Relaxed: a hint; the CAS below decides who registers, and nothing is
    // published with the state (the handlers are plain functions).
    if FORK_STATE.load(Ordering::Relaxed) != FORK_NONE {
        return;
    }
    register_fork_handlers_slow();
}

#[cold]
#[inline(never)]
fn register_fork_handlers_slow() {
    if FORK_STATE
        .compare_exchange(FORK_NONE, FORK_BUSY, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    crate::sync::assert_none_held("registering the fork handlers");
    // SAFETY: three plain extern "C" functions that live as long as the process.
    // glibc keeps the first 48 registrations in static storage; past that it may
    // allocate, which finds this thread's heap live (callers set it up first).
    let rc =
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    FORK_STATE.store(
        if rc == 0 { FORK_DONE } else { FORK_FAILED },
        Ordering::Relaxed,
    );
    if rc != 0 {
        crate::report::write_all(
            2,
            b"strata: pthread_atfork failed; a child of fork() may inherit a held allocator lock\n",
        );
    }
}

/// Fork prepare handler: takes every allocator lock in the lock order (background
/// purge control, quarantine shards, then the backend's through `lock_set`), so that
/// no lock is held by a thread that will not exist in the child.
extern "C" fn fork_prepare() {
    crate::purge_thread::lock_for_fork();
    #[cfg(feature = "checked")]
    crate::checked::lock_all();
    BACKEND.lock_set(Locks::ALL);
}

/// Releases what `fork_prepare` took.
fn unlock_all_after_fork() {
    BACKEND.unlock_set(Locks::ALL);
    #[cfg(feature = "checked")]
    crate::checked::unlock_all();
    crate::purge_thread::unlock_after_fork();
}

/// Fork parent handler.
extern "C" fn fork_parent() {
    unlock_all_after_fork();
}

/// Fork child handler. Only the forking thread exists; it took the locks, so it may
/// release them as the parent does. A once-state another thread left busy at the
/// fork would stay busy forever here: `KEY_STATE` goes back to none (that thread's
/// `pthread_key_create` may have succeeded in the parent's copy; a key is lost, no
/// more), and `FORK_STATE` to done (this handler runs, so they are registered). The
/// background purge thread does not exist in the child; `purge_thread` knows that
/// by the process id.
extern "C" fn fork_child() {
    unlock_all_after_fork();
    // Relaxed: the child has one thread.
    let _ = KEY_STATE.compare_exchange(KEY_BUSY, KEY_NONE, Ordering::Relaxed, Ordering::Relaxed);
    FORK_STATE.store(FORK_DONE, Ordering::Relaxed);
}

/// See [`crate::flush_thread_cache`].
pub(crate) fn flush_thread_cache() {
    let h = heap();
    // SAFETY: this thread's heap or a sentinel; only a live heap is written.
    unsafe {
        if (*h).state() == HeapState::Live {
            BACKEND.threads.flush(&*h, &BACKEND);
        }
    }
}

/// See [`crate::release_memory`].
pub(crate) fn release_memory() -> usize {
    #[cfg(feature = "checked")]
    crate::checked::drain_quarantine();
    flush_thread_cache();
    BACKEND.release_shared()
}

/// See [`crate::validate_heap`].
pub(crate) fn validate_heap() -> Result<(), Violation> {
    let h = heap();
    // SAFETY: this thread's heap or a sentinel, only read.
    unsafe { BACKEND.threads.validate(&*h, &BACKEND) }?;
    BACKEND.validate()?;
    #[cfg(feature = "checked")]
    crate::checked::validate_blocks()?;
    Ok(())
}

/// See [`crate::set_thread_cache_budget`].
pub(crate) fn set_thread_cache_budget(bytes: usize) {
    BACKEND.set_cache_budget(bytes);
    let h = heap();
    // SAFETY: this thread's heap or a sentinel; only a live heap is written.
    unsafe {
        if (*h).state() == HeapState::Live {
            BACKEND.threads.set_budget(&*h, bytes, &BACKEND);
        }
    }
}

/// See [`crate::set_purge_delay_ms`].
pub(crate) fn set_purge_delay_ms(ms: u64) {
    BACKEND.page_heap.set_purge_delay_ms(ms);
}

/// See [`crate::set_huge_cache_bytes`].
pub(crate) fn set_huge_cache_bytes(bytes: usize) {
    BACKEND.set_huge_cache_budget(bytes);
}

/// See [`crate::usable_size`].
pub(crate) fn usable_size(p: *const u8) -> Option<usize> {
    #[cfg(feature = "checked")]
    return crate::checked::usable_size(p);
    #[cfg(not(feature = "checked"))]
    BACKEND.usable_size(p)
}

/// See [`crate::heap_counts`].
pub(crate) fn heap_counts() -> crate::HeapCounts {
    let ph = BACKEND.page_heap.stats();
    let (huge_blocks, huge_bytes, huge_cached) = BACKEND.huge.totals();
    let (threads_live, threads_created) = BACKEND.thread_heaps();
    crate::HeapCounts {
        chunks: ph.chunks,
        mapped_bytes: ph.mapped_bytes + huge_bytes + huge_cached,
        free_page_bytes: ph.free_bytes,
        free_zeroed_bytes: ph.free_zeroed_bytes,
        purged_bytes_total: ph.purged_bytes_total,
        unmapped_bytes_total: ph.unmapped_bytes_total,
        huge_blocks,
        huge_bytes,
        metadata_bytes: BACKEND.meta.mapped_bytes(),
        thread_heaps_live: threads_live,
        thread_heaps_created: threads_created,
    }
}

/// See [`crate::stats`].
pub(crate) fn stats() -> crate::Stats {
    #[allow(unused_mut)]
    let mut s = BACKEND.stats();
    #[cfg(feature = "checked")]
    {
        s.requested_bytes = Some(crate::checked::leak_report().total().bytes as u64);
    }
    s
}

// Checked builds route `Strata` through `checked`, not the thread heaps.
#[cfg(all(test, not(feature = "checked")))]
mod tests {
    use super::*;

    /// ThreadHeap invariant 7: many fresh threads allocate and free through the
    /// fast and slow paths, starting at `EMPTY` and, after a simulated thread exit,
    /// ending at `DEAD`; neither sentinel is ever written.
    #[test]
    fn sentinels_stay_empty_while_threads_start_and_exit() {
        let sizes = [8usize, 24, 64, 200, 1024, 4096, 40 << 10];
        std::thread::scope(|s| {
            for t in 0..8usize {
                s.spawn(move || {
                    assert_eq!(heap(), sentinel(&EMPTY), "a fresh thread starts at EMPTY");
                    let mut live = Vec::new();
                    for i in 0..2_000usize {
                        let l = Layout::from_size_align(sizes[(i + t) % sizes.len()], 8).unwrap();
                        // SAFETY: a non-zero size.
                        let p = unsafe { Strata.alloc(l) };
                        assert!(!p.is_null());
                        live.push((p, l));
                        if i % 3 == 0 {
                            let (p, l) = live.swap_remove(i % live.len());
                            // SAFETY: a live block of this layout.
                            unsafe { Strata.dealloc(p, l) };
                        }
                    }
                    // What the key destructor does at thread exit; then the key's
                    // value is cleared so that it does not run a second time.
                    let h = heap();
                    // SAFETY: this thread's heap, only read.
                    assert_eq!(unsafe { (*h).state() }, HeapState::Live);
                    on_thread_exit(h.cast());
                    if let Some(key) = thread_key() {
                        // SAFETY: a valid key; null means "no destructor call".
                        unsafe { libc::pthread_setspecific(key, ptr::null()) };
                    }
                    assert_eq!(heap(), sentinel(&DEAD));
                    // Frees (and allocations) after exit go straight to the central
                    // tier, through DEAD's fast paths, which miss.
                    for (p, l) in live.drain(..) {
                        // SAFETY: a live block of this layout.
                        unsafe { Strata.dealloc(p, l) };
                    }
                    let l = Layout::from_size_align(64, 8).unwrap();
                    // SAFETY: a non-zero size; the block is freed at once.
                    unsafe { Strata.dealloc(Strata.alloc(l), l) };
                });
            }
        });
        for (s, state) in [(&EMPTY, HeapState::Empty), (&DEAD, HeapState::Dead)] {
            assert_eq!(s.state(), state);
            assert!(s.is_empty(), "a sentinel heap was written");
            assert_eq!(s.counters(), Default::default());
            // SAFETY: a sentinel, only read.
            unsafe { s.validate(&BACKEND) }.unwrap();
        }
    }
}
