//! The front end: the tier that serves the program's small objects, above the
//! backend, and the one interface through which the global allocator reaches it.
//!
//! Tier order (each uses only those below it; nothing below imports this module):
//! `global` → **front** ([`FrontEnd`]: the thread cache, `thread_cache`; and,
//! opt-in with `STRATA_PERCPU=1`, per-CPU caches, `percpu`, which `global` calls
//! from its slow paths, keeping the thread cache's fast path unchanged) →
//! `backend` (central tier, page heap, huge blocks) → platform. A front end reaches
//! the backend through a narrow interface: `Backend::refill` and `Backend::flush`
//! (batches to and from the central tier), `Backend::note_flow` (statistics),
//! `Backend::alloc_metadata` (memory for its own records) and `Backend::owns`
//! (validation); never the central tier, the page heap or the OS directly.
//! `stats` and `heap_map` sit above and only read it.
//!
//! [`Allocator`] is one allocator instance: the thread-cache front end's shared
//! state over a [`Backend`]. The process has one (in `global`); tests and loom
//! models build their own over any [`Os`]. It derefs to its backend, so the
//! backend's paths (large and huge blocks, direct small paths, purge) are reached
//! through it unchanged; its own `lock_set`, `with_locked` and `validate` add the
//! front end's pool lock (ranked first) to the backend's.

#[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
pub mod percpu;
pub mod thread_cache;

use crate::Violation;
use crate::backend::{Backend, Locks};
use crate::os::Os;
use crate::size_class::SizeClass;
use thread_cache::{AllHeaps, ThreadCaches, ThreadHeap};

/// What the global allocator needs of a front end. Static dispatch only: `global`
/// names one implementing type, every fast-path method is `#[inline(always)]`, so
/// the interface costs nothing (callgrind: the same instructions per pair as the
/// direct calls it replaced). A second front end (per-CPU caches) implements it
/// beside the thread cache; which one serves a process is chosen at start-up by
/// `global`, which keeps the per-thread handle (`Cache`) in its TLS slot.
///
/// The fast paths take the handle alone and return a miss (null, false) rather
/// than calling the backend, so that their bodies stay a few instructions; the
/// slow paths get the shared state and the backend.
pub trait FrontEnd {
    /// The per-thread (or per-CPU) cache a call works on, found by `global` once
    /// per call.
    type Cache;

    /// Fast path: an object of class `c`, or null on a miss.
    ///
    /// # Safety
    /// `c` is a valid class; `cache` is the calling thread's (or a sentinel).
    unsafe fn alloc_fast(cache: &Self::Cache, c: SizeClass) -> *mut u8;

    /// Fast path: caches `p`; false on a miss (full, or a suspected double free).
    ///
    /// # Safety
    /// `p` is a live class-`c` block of ours that the caller gives up; `cache` is
    /// the calling thread's (or a sentinel).
    unsafe fn free_fast(cache: &Self::Cache, c: SizeClass, p: *mut u8) -> bool;

    /// Slow path of alloc on a live cache: refill from the backend and return one
    /// object (null if the OS refuses memory).
    ///
    /// # Safety
    /// `cache` is live and the calling thread's.
    unsafe fn alloc_slow<O: Os>(
        &self,
        cache: &Self::Cache,
        c: SizeClass,
        be: &Backend<O>,
    ) -> *mut u8;

    /// Slow path of free on a live cache (it was full): make room, cache `p`.
    ///
    /// # Safety
    /// As for `free_fast`, and `cache` is live.
    unsafe fn free_slow<O: Os>(
        &self,
        cache: &Self::Cache,
        c: SizeClass,
        p: *mut u8,
        be: &Backend<O>,
    );

    /// A live cache for the calling thread; null if the OS refuses memory.
    fn attach<O: Os>(&self, be: &Backend<O>) -> *mut Self::Cache;

    /// The calling thread is exiting: flushes its cache and takes it back.
    ///
    /// # Safety
    /// `cache` came from `attach` and its thread will not use it again.
    unsafe fn detach<O: Os>(&self, cache: *mut Self::Cache, be: &Backend<O>);

    /// Returns every object `cache` holds to the backend.
    ///
    /// # Safety
    /// `cache` is live and the calling thread's.
    unsafe fn flush<O: Os>(&self, cache: &Self::Cache, be: &Backend<O>);

    /// Sets `cache`'s byte budget now (shrinking what it may hold if it dropped).
    ///
    /// # Safety
    /// `cache` is live and the calling thread's.
    unsafe fn set_budget<O: Os>(&self, cache: &Self::Cache, bytes: usize, be: &Backend<O>);

    /// Checks `cache`'s invariants (`validate_heap`).
    ///
    /// # Safety
    /// `cache` is the calling thread's, or a sentinel.
    unsafe fn validate<O: Os>(&self, cache: &Self::Cache, be: &Backend<O>)
    -> Result<(), Violation>;

    /// The byte budget of caches attached from now on.
    fn set_cache_budget(&self, bytes: usize);

    /// Caches in use, and ever created (statistics).
    fn caches(&self) -> (usize, usize);
}

impl FrontEnd for ThreadCaches {
    type Cache = ThreadHeap;

    #[inline(always)]
    unsafe fn alloc_fast(cache: &ThreadHeap, c: SizeClass) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { cache.pop(c) }
    }

    #[inline(always)]
    unsafe fn free_fast(cache: &ThreadHeap, c: SizeClass, p: *mut u8) -> bool {
        // SAFETY: forwarded contract.
        unsafe { cache.try_push(c, p) }
    }

    #[inline(always)]
    unsafe fn alloc_slow<O: Os>(
        &self,
        cache: &ThreadHeap,
        c: SizeClass,
        be: &Backend<O>,
    ) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { cache.alloc_slow(c, be) }
    }

    #[inline(always)]
    unsafe fn free_slow<O: Os>(
        &self,
        cache: &ThreadHeap,
        c: SizeClass,
        p: *mut u8,
        be: &Backend<O>,
    ) {
        // SAFETY: forwarded contract.
        unsafe { cache.free_slow(c, p, be) }
    }

    fn attach<O: Os>(&self, be: &Backend<O>) -> *mut ThreadHeap {
        self.new_thread_heap(be)
    }

    unsafe fn detach<O: Os>(&self, cache: *mut ThreadHeap, be: &Backend<O>) {
        // SAFETY: forwarded contract.
        unsafe { self.retire_thread_heap(cache, be) }
    }

    unsafe fn flush<O: Os>(&self, cache: &ThreadHeap, be: &Backend<O>) {
        // SAFETY: forwarded contract.
        unsafe { cache.flush_all(be) }
    }

    unsafe fn set_budget<O: Os>(&self, cache: &ThreadHeap, bytes: usize, be: &Backend<O>) {
        // SAFETY: forwarded contract (live, so not a sentinel).
        unsafe { cache.set_budget(bytes, be) }
    }

    unsafe fn validate<O: Os>(&self, cache: &ThreadHeap, be: &Backend<O>) -> Result<(), Violation> {
        // SAFETY: forwarded contract.
        unsafe { cache.validate(be) }
    }

    fn set_cache_budget(&self, bytes: usize) {
        ThreadCaches::set_cache_budget(self, bytes)
    }

    fn caches(&self) -> (usize, usize) {
        self.thread_heaps()
    }
}

/// One allocator instance: the thread-cache front end's shared state over the
/// shared tiers. Derefs to its [`Backend`].
pub struct Allocator<O: Os> {
    /// The front end's pool of thread heaps.
    pub threads: ThreadCaches,
    /// The per-CPU front end (used only by the process's instance in `global`, and
    /// there only with `STRATA_PERCPU=1`; undecided and empty in every other).
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    pub cpus: percpu::CpuCaches,
    /// The shared tiers.
    pub backend: Backend<O>,
}

impl<O: Os> core::ops::Deref for Allocator<O> {
    type Target = Backend<O>;
    #[inline(always)]
    fn deref(&self) -> &Backend<O> {
        &self.backend
    }
}

impl<O: Os> Allocator<O> {
    crate::sync::loom_const_fn! {
        /// An instance over `os` with nothing mapped yet.
        pub fn new(os: O) -> Allocator<O> {
            Allocator {
                threads: ThreadCaches::new(),
                #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
                cpus: percpu::CpuCaches::new(),
                backend: Backend::new(os),
            }
        }
    }

    /// A live thread heap (recycled from the pool when possible); null if the OS
    /// refuses memory.
    pub fn new_thread_heap(&self) -> *mut ThreadHeap {
        self.threads.new_thread_heap(&self.backend)
    }

    /// Flushes a thread's heap and puts it in the pool for the next thread.
    ///
    /// # Safety
    /// `h` came from `new_thread_heap` and its thread will not use it again.
    pub unsafe fn retire_thread_heap(&self, h: *mut ThreadHeap) {
        // SAFETY: forwarded contract.
        unsafe { self.threads.retire_thread_heap(h, &self.backend) }
    }

    /// Objects of class `c` handed out, freed and cached now by the per-CPU front
    /// end (zeros when it is off: `front::percpu::CpuCaches::class_counts`).
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(strata_loom)))]
    pub fn cpu_class_counts(&self, c: SizeClass) -> (u64, u64, u64) {
        self.cpus.class_counts(c)
    }

    /// As above, where there is no per-CPU front end.
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64", not(strata_loom))))]
    pub fn cpu_class_counts(&self, _c: SizeClass) -> (u64, u64, u64) {
        (0, 0, 0)
    }

    /// Thread heaps in use, and ever created.
    pub fn thread_heaps(&self) -> (usize, usize) {
        self.threads.thread_heaps()
    }

    /// The byte budget given to thread caches created from now on.
    pub fn set_cache_budget(&self, bytes: usize) {
        self.threads.set_cache_budget(bytes)
    }

    /// Runs `f` with the pool lock and then every class lock held, giving it every
    /// heap ever created (live ones are in use by their threads: read only their
    /// atomics) and the (live, created) counts.
    pub fn with_heaps_and_classes_locked<R>(
        &self,
        f: impl FnOnce(AllHeaps<'_>, (usize, usize)) -> R,
    ) -> R {
        self.threads.with_heaps(|heaps, counts| {
            self.backend
                .with_locked(Locks::CLASSES, || f(heaps, counts))
        })
    }

    /// [`Backend::lock_set`], and first, if `set` has [`Locks::POOL`], the front
    /// end's pool lock (ranked before every backend lock).
    pub fn lock_set(&self, set: Locks) {
        if set.has(Locks::POOL) {
            self.threads.lock();
        }
        self.backend.lock_set(set);
    }

    /// Releases what `lock_set(set)` took, in reverse order.
    pub fn unlock_set(&self, set: Locks) {
        self.backend.unlock_set(set);
        if set.has(Locks::POOL) {
            self.threads.unlock();
        }
    }

    /// Runs `f` with the locks in `set` held ([`Allocator::lock_set`]).
    pub fn with_locked<R>(&self, set: Locks, f: impl FnOnce() -> R) -> R {
        self.lock_set(set);
        let r = f();
        self.unlock_set(set);
        r
    }

    /// Checks every invariant of the front end's pool and of the shared tiers
    /// ([`Backend::validate`]), holding the pool lock and every class lock (in that
    /// order, as every walk).
    pub fn validate(&self) -> Result<(), Violation> {
        self.with_locked(Locks::POOL.and(Locks::CLASSES), || {
            // SAFETY: the pool lock is held.
            unsafe { self.threads.validate_locked(&self.backend) }?;
            // SAFETY: every class lock is held.
            unsafe { self.backend.validate_locked() }
        })
    }
}
