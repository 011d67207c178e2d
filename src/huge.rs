//! Huge blocks: requests above [`HUGE_THRESHOLD`](crate::size_class::HUGE_THRESHOLD)
//! (or aligned beyond what a span can be trimmed to) get a mapping of their own. A
//! small registry (hash of records from the metadata arena, under a lock) remembers
//! each mapping's length, so that `free` without a size, `realloc` by `mremap`, and
//! "is this pointer ours?" work for them too. Huge requests are rare and each costs a
//! syscall, so the lock is never the bottleneck.
//!
//! # The cache
//! A program that keeps allocating and freeing blocks of a few MiB (buffers, images,
//! decompression windows) would otherwise pay a fresh mapping each time, and then a
//! page fault and the kernel's zeroing for every 4 KiB it touches: glibc, whose
//! mmap threshold rises to 32 MiB after the first such free, reuses its heap for them
//! instead and was 14× faster on `malloc-large`. So a freed mapping of up to
//! [`MAX_CACHED_BLOCK`] bytes is kept, resident, in a small cache (at most
//! [`CACHE_SLOTS`] mappings and the byte budget the backend passes, 64 MiB by
//! default, or a third of the live huge bytes if that is more: [`LIVE_SHARE_DIV`]),
//! and a later huge request takes the smallest one that fits, or else is built from
//! the largest ones: a fresh mapping into which `mremap` moves their pages (no copy,
//! no page fault), fresh pages after them (or, from one mapping alone, the mapping
//! grown by `remap`). A block so built may span several OS mappings: each block and
//! cached mapping counts them (at most [`MAX_VMAS`], and [`MAX_EXTRA_VMAS`] more
//! than one a block in all), and `realloc` moves such a block to a new one when
//! `mremap` refuses it. From a
//! mapping more than a quarter longer than the request the block is split off
//! (`Os::split`), and the tail, if at least the huge threshold and the cache has room
//! without pushing anything out, stays cached with its pages for a later request. A mapping
//! that has waited longer than the page heap's purge delay, or that a new one pushes
//! out (oldest first), is unmapped; `release_memory` unmaps them all. A zeroed
//! request (`calloc`) takes a cached mapping too and clears the part that held data
//! (a memset of resident pages costs less than faulting in fresh ones, and a cache
//! that `calloc` never drew from would hold dead memory: +22 MiB of peak RSS in
//! mstress); alignments above a page skip the cache. The cache lives under the registry's lock; its unmaps run after
//! the lock is released ([`Evicted`]). A mapping whose unmap the OS refuses (ENOMEM
//! at `vm.max_map_count`) comes back into the cache if a slot is free, whatever the
//! budget ([`HugeRegistry::keep_refused`]), to be reused or tried again when it
//! expires; else its pages are purged and only its address range is lost.

use crate::meta::MetaArena;
use crate::os::Os;
use crate::size_class::CHUNK_SIZE;
use crate::sync::{LockRank, RawLock, UnsafeCell};
use core::ptr;

const BUCKETS: usize = 256;

/// Freed mappings the cache holds at most.
pub const CACHE_SLOTS: usize = 32;
/// Largest mapping the cache keeps (32 MiB, glibc's largest mmap threshold); larger
/// ones are unmapped when freed.
pub const MAX_CACHED_BLOCK: usize = 8 * CHUNK_SIZE;
/// Default byte budget of the cache (64 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 16 * CHUNK_SIZE;
/// The cache may also hold up to live huge bytes / this, when that is more than the
/// set budget (a budget of 0 still turns the cache off): a program whose huge
/// working set is larger replaces larger amounts at a time. On `malloc-large` (20
/// blocks of 5-25 MiB, ~300 MiB live; `benches/large_ring/malloc_large.c`, 1,000
/// replacements) 2 took peak RSS to 410 MiB, 3 to 391 MiB and 4 to 391 MiB, for
/// 120,000, 134,000 and 175,000 page faults, of which the first 20 blocks take
/// 77,000 (tcmalloc 178,000 faults, 510 MiB; glibc 362,000, 536 MiB).
pub const LIVE_SHARE_DIV: usize = 3;
/// Cached mappings one request may be built from ([`HugeRegistry::take_cached`]).
pub const MAX_PIECES: usize = 4;
/// Most OS mappings (Linux VMAs) a block built from pieces may span: a bound on
/// what building blocks adds to the process's count of them (`vm.max_map_count`).
pub const MAX_VMAS: u32 = 64;
/// Most OS mappings that blocks built from pieces may add to the process, all
/// together: the sum of `vmas - 1` over records and cached mappings stays below it.
pub const MAX_EXTRA_VMAS: usize = 4096;

/// A freed mapping kept for reuse.
#[derive(Clone, Copy)]
struct Cached {
    ptr: usize,
    len: usize,
    /// At most how many OS mappings the range spans (one unless built from
    /// pieces); where they begin is in `Inner::cache_vmas`.
    vmas: u32,
    freed_ms: u64,
}

struct Record {
    ptr: usize,
    len: usize,
    /// The OS mappings the block spans.
    vmas: Vmas,
    next: *mut Record,
}

struct Inner {
    buckets: [*mut Record; BUCKETS],
    spare: *mut Record,
    count: usize,
    bytes: usize,
    /// Freed mappings, oldest first: `cache[..cached]`.
    cache: [Cached; CACHE_SLOTS],
    cached: usize,
    cached_bytes: usize,
    /// The OS mappings of the cached mappings, `cache_vmas[i]` for `cache[i]`: an
    /// array of `CACHE_SLOTS` in the metadata arena, allocated with the first record
    /// (kept out of the registry, so that a backend stays small enough to be built
    /// on a small stack, as the loom models do).
    cache_vmas: *mut Vmas,
    /// The sum of `vmas - 1` over records and cached mappings.
    extra_vmas: usize,
}

impl Inner {
    /// The byte budget in force: the set `budget`, or a share of the live huge bytes
    /// if that is more (and the cache is on).
    fn budget(&self, budget: usize) -> usize {
        if budget == 0 {
            0
        } else {
            budget.max(self.bytes / LIVE_SHARE_DIV)
        }
    }

    /// Whether a mapping can be cached at all: the table of where their OS mappings
    /// begin is there.
    fn can_cache(&self) -> bool {
        !self.cache_vmas.is_null()
    }

    /// The OS mappings of `cache[i]`, `i < cached`.
    fn vmas_at(&self, i: usize) -> Vmas {
        debug_check!(i < self.cached, "HugeRegistry: a cache entry past the end");
        // SAFETY: invariant 5: `i < cached`, so the table is there and its entry `i`
        // was written when `cache[i]` was.
        unsafe { *self.cache_vmas.add(i) }
    }

    /// Removes `cache[i]` (`i < cached`), keeping the rest in age order.
    fn uncache(&mut self, i: usize) -> (Cached, Vmas) {
        let (e, v) = (self.cache[i], self.vmas_at(i));
        self.cache.copy_within(i + 1..self.cached, i);
        // SAFETY: invariant 5: entries `i + 1..cached` of the table are written
        // (`i < cached`, so it is there); they move down one, within it.
        unsafe {
            ptr::copy(
                self.cache_vmas.add(i + 1),
                self.cache_vmas.add(i),
                self.cached - i - 1,
            )
        };
        self.cached -= 1;
        self.cached_bytes -= e.len;
        self.extra_vmas -= e.vmas as usize - 1;
        (e, v)
    }

    /// Adds a mapping as the newest entry; the caller made room (a free slot, the
    /// budget) and checked `can_cache`.
    fn append(&mut self, ptr: usize, len: usize, vmas: Vmas, now_ms: u64) {
        // Not older than any entry: clocks are monotonic, and a `now_ms` read before
        // another thread's later entry is clamped up to it.
        let last = if self.cached > 0 {
            self.cache[self.cached - 1].freed_ms
        } else {
            0
        };
        self.cache[self.cached] = Cached {
            ptr,
            len,
            vmas: vmas.count(),
            freed_ms: now_ms.max(last),
        };
        debug_check!(self.can_cache(), "HugeRegistry: cached with no table");
        // SAFETY: invariant 5: the caller checked that the table is there, and
        // `cached < CACHE_SLOTS` (room was made), inside it.
        unsafe { self.cache_vmas.add(self.cached).write(vmas) };
        self.cached += 1;
        self.cached_bytes += len;
        self.extra_vmas += vmas.count() as usize - 1;
    }

    /// Moves the oldest cached mapping to `ev` while `more` holds (and one is left).
    fn evict_oldest_while(&mut self, ev: &mut Evicted, more: impl Fn(&Inner) -> bool) {
        while self.cached > 0 && more(self) {
            let (e, _) = self.uncache(0);
            ev.push(e.ptr, e.len, e.vmas);
        }
    }

    /// Moves every cached mapping freed more than `delay_ms` ago to `ev`.
    fn expire(&mut self, now_ms: u64, delay_ms: u64, ev: &mut Evicted) {
        // Oldest first: the expired ones are a prefix.
        self.evict_oldest_while(ev, |h| {
            now_ms.saturating_sub(h.cache[0].freed_ms) > delay_ms
        });
    }
}

/// The registry of huge mappings, and the cache of freed ones.
///
/// Invariants: 1. every live huge block has exactly one record, in bucket
/// `hash(ptr)`; 2. `count`/`bytes` are the number and total length of records;
/// 3. `cache[..cached]` are whole mappings of ours (or blocks built of several) that
/// no record names, each at most `MAX_CACHED_BLOCK` bytes, freed in non-decreasing
/// `freed_ms` order, with `cached_bytes` their total length; 4. every record and
/// cached mapping spans `1..=MAX_VMAS` OS mappings at most (`vmas`, valid for its
/// length: `Vmas` invariants 1 and 2), and `extra_vmas` is the sum of
/// `vmas.count() - 1` over them; 5. if `cached > 0`, `cache_vmas` points at
/// `CACHE_SLOTS` `Vmas` of the metadata arena, used by nothing else, whose first
/// `cached` are the OS mappings of `cache[..cached]` (`cache[i].vmas` their count).
pub struct HugeRegistry {
    lock: RawLock,
    inner: UnsafeCell<Inner>,
}

// SAFETY: `inner` is only touched with `lock` held.
unsafe impl Sync for HugeRegistry {}
// SAFETY: `inner`'s records and cached mappings are process-wide memory, only
// touched with `lock` held, whichever thread holds it.
unsafe impl Send for HugeRegistry {}

fn hash(p: usize) -> usize {
    ((p >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) % BUCKETS
}

impl HugeRegistry {
    crate::sync::loom_const_fn! {
        /// An empty registry with an empty cache.
        pub fn new() -> HugeRegistry {
            HugeRegistry {
                lock: RawLock::new(LockRank::HugeRegistry),
                inner: UnsafeCell::new(Inner {
                    buckets: [ptr::null_mut(); BUCKETS],
                    spare: ptr::null_mut(),
                    count: 0,
                    bytes: 0,
                    // Slots past `cached` hold nothing (invariant 3): all zero
                    // bytes, so that the process's statics stay in `.bss`
                    // (TransferStack invariant 1; `benches/footprint.sh` warns).
                    cache: [Cached { ptr: 0, len: 0, vmas: 0, freed_ms: 0 }; CACHE_SLOTS],
                    cached: 0,
                    cached_bytes: 0,
                    cache_vmas: ptr::null_mut(),
                    extra_vmas: 0,
                }),
            }
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let _g = self.lock.guard();
        // SAFETY: lock held; every access to `inner` goes through here, so this is
        // the only reference to it while it lives.
        self.inner.with_mut(|i| f(unsafe { &mut *i }))
    }

    /// Records a block of `len` bytes at `p` spanning the OS mappings `vmas`; false
    /// if no record could be had.
    pub fn insert(
        &self,
        os: &impl Os,
        meta: &MetaArena,
        p: *mut u8,
        len: usize,
        vmas: &Vmas,
    ) -> bool {
        self.with(|h| {
            if h.cache_vmas.is_null() {
                // Null if the arena has no room: then nothing is cached.
                h.cache_vmas = meta
                    .alloc(
                        os,
                        core::mem::size_of::<[Vmas; CACHE_SLOTS]>(),
                        core::mem::align_of::<Vmas>(),
                    )
                    .cast();
            }
            let mut r = h.spare;
            if r.is_null() {
                r = meta.alloc(os, core::mem::size_of::<Record>(), 16).cast();
                if r.is_null() {
                    return false;
                }
            } else {
                // SAFETY: spare records are ours under the lock.
                h.spare = unsafe { (*r).next };
            }
            let b = hash(p as usize);
            // SAFETY: `r` is an unused record from the arena or the spare list.
            unsafe {
                r.write(Record {
                    ptr: p as usize,
                    len,
                    vmas: *vmas,
                    next: h.buckets[b],
                })
            };
            h.buckets[b] = r;
            h.count += 1;
            h.bytes += len;
            h.extra_vmas += vmas.count() as usize - 1;
            true
        })
    }

    /// The length of the mapping starting at `p`, if `p` is a huge block.
    pub fn lookup(&self, p: *const u8) -> Option<usize> {
        self.with(|h| {
            // SAFETY: a bucket head, under the lock.
            unsafe { chain(h.buckets[hash(p as usize)]) }
                .find(|r| r.ptr == p as usize)
                .map(|r| r.len)
        })
    }

    /// Resizes the huge block at `p` with `resize(old_len)`, which returns the
    /// block's address afterwards (`p` if it stayed, null if it could not be
    /// resized, the record then untouched), and moves the record with it: new
    /// address, length `new_len`. None if `p` is not a huge block.
    ///
    /// `resize` runs under the registry lock. Once a remap has moved a block, the
    /// OS may hand its old address to another thread's new huge block at once; if
    /// that block's record could be inserted while ours still names the address,
    /// the two records would share it, and our `remove` could take the newcomer's,
    /// leaving a record with the wrong length for a later `free` to unmap (found by
    /// the loom model `loom-tests/tests/huge_blocks.rs`). Moving the record in place
    /// also needs no allocation, so it cannot fail halfway.
    pub fn resize(
        &self,
        p: *const u8,
        new_len: usize,
        resize: impl FnOnce(usize) -> *mut u8,
    ) -> Option<*mut u8> {
        self.with(|h| {
            let link = link_to(h, p)?;
            // SAFETY: `link` points at `p`'s record; links and records are ours under
            // the lock.
            unsafe {
                let r = *link;
                let old_len = (*r).len;
                let q = resize(old_len);
                if !q.is_null() {
                    *link = (*r).next;
                    (*r).ptr = q as usize;
                    (*r).len = new_len;
                    h.bytes = h.bytes - old_len + new_len;
                    // A shrink drops the mappings past the new end; a grow succeeds
                    // only on a single one, which this bounds too.
                    let old = (*r).vmas.count();
                    (*r).vmas = (*r).vmas.split(new_len).0;
                    h.extra_vmas -= (old - (*r).vmas.count()) as usize;
                    let nb = hash(q as usize);
                    (*r).next = h.buckets[nb];
                    h.buckets[nb] = r;
                }
                Some(q)
            }
        })
    }

    /// Forgets the mapping at `p`; returns its length.
    pub fn remove(&self, p: *const u8) -> Option<usize> {
        self.with(|h| remove_locked(h, p).map(|(len, _)| len))
    }

    /// Forgets the live block at `p` (returning its length, None if `p` is not a huge
    /// block) and keeps its mapping in the cache if it fits: at most
    /// `MAX_CACHED_BLOCK` and `budget` bytes, pushing out the oldest mappings to make
    /// room. Also expires mappings older than `delay_ms`. What leaves (or does not
    /// enter) the cache comes back in `Evicted`, for the caller to unmap.
    pub fn retire(
        &self,
        p: *const u8,
        now_ms: u64,
        delay_ms: u64,
        budget: usize,
    ) -> (Option<usize>, Evicted) {
        let mut ev = Evicted::NONE;
        let len = self.with(|h| {
            let (len, vmas) = remove_locked(h, p)?;
            h.expire(now_ms, delay_ms, &mut ev);
            let budget = h.budget(budget);
            if len > MAX_CACHED_BLOCK || len > budget || !h.can_cache() {
                ev.push(p as usize, len, vmas.count());
                return Some(len);
            }
            // Room for it (`len <= budget`, so an empty cache has room).
            h.evict_oldest_while(&mut ev, |h| {
                h.cached == CACHE_SLOTS || h.cached_bytes + len > budget
            });
            h.append(p as usize, len, vmas, now_ms);
            Some(len)
        });
        (len, ev)
    }

    /// Takes cached mappings for a new block of `len` bytes: the smallest that is
    /// at least `len` long; else, if `build`, the ones with the most bytes per OS
    /// mapping (at most [`MAX_PIECES`], spanning at most [`MAX_VMAS`] OS mappings
    /// together) until they add up to `len`, for the caller to build the block
    /// from; else the largest alone (to be grown). Empty if the cache holds nothing (after
    /// expiring mappings older than `delay_ms`, which come back in `Evicted`). The
    /// mappings are the caller's: it must `insert` them, cache them again or unmap
    /// them.
    pub fn take_cached(
        &self,
        len: usize,
        now_ms: u64,
        delay_ms: u64,
        build: bool,
    ) -> (Pieces, Evicted) {
        let mut ev = Evicted::NONE;
        let mut got = Pieces::NONE;
        self.with(|h| {
            h.expire(now_ms, delay_ms, &mut ev);
            let fit = (0..h.cached)
                .filter(|&i| h.cache[i].len >= len)
                .min_by_key(|&i| h.cache[i].len);
            if let Some(i) = fit {
                let (e, v) = h.uncache(i);
                got.push(e.ptr, e.len, v);
                return;
            }
            // Nothing fits: the largest (to be grown), or with `build` the ones with
            // the most bytes per OS mapping until they add up to `len`; together
            // below `MAX_VMAS` (and `MAX_EXTRA_VMAS` in all), which leaves room for
            // the fresh pages that may end the block. `mremap` moves a range one OS
            // mapping at a time, ~6 us each here (against ~2.4 us for the fault of
            // a fresh page): on `malloc-large`, 5,000 replacements, the largest
            // first faulted 386,000 pages in 1.52 s of system time, the densest
            // first 369,000 in 1.35 s (a model of the cache: 70,000 OS mappings
            // moved against 43,000).
            while got.as_slice().is_empty()
                || (build && got.as_slice().len() < MAX_PIECES && got.bytes() < len)
            {
                let vmas = got.vmas();
                let Some(i) = (0..h.cached)
                    .filter(|&i| {
                        let v = vmas + h.cache[i].vmas;
                        v < MAX_VMAS && h.extra_vmas + v as usize <= MAX_EXTRA_VMAS
                    })
                    .max_by_key(|&i| {
                        let e = &h.cache[i];
                        if build {
                            e.len / e.vmas as usize
                        } else {
                            e.len
                        }
                    })
                else {
                    break;
                };
                let (e, v) = h.uncache(i);
                got.push(e.ptr, e.len, v);
                if !build {
                    break;
                }
            }
        });
        (got, ev)
    }

    /// Keeps `[p, p+len)`, the unused tail of a cached mapping just taken (and split
    /// off it), in the cache if it fits without pushing anything out: a free slot,
    /// `budget` not exceeded, at most `MAX_CACHED_BLOCK`. False if it does not (the
    /// caller unmaps it). Its pages stay resident for the next request to grow.
    pub fn keep_tail(&self, p: usize, len: usize, vmas: Vmas, now_ms: u64, budget: usize) -> bool {
        self.with(|h| {
            let budget = h.budget(budget);
            if h.cached == CACHE_SLOTS
                || h.cached_bytes + len > budget
                || len > MAX_CACHED_BLOCK
                || !h.can_cache()
            {
                return false;
            }
            h.append(p, len, vmas, now_ms);
            true
        })
    }

    /// Keeps `[p, p+len)`, a whole mapping of ours that nothing names, spanning at
    /// most `vmas` OS mappings, that the OS refused to unmap, in the cache if a slot
    /// is free and it is at most `MAX_CACHED_BLOCK`, whatever the byte budget:
    /// better held (resident, reused by a later request, unmapped again when it
    /// expires) than lost. False if it does not fit.
    pub fn keep_refused(&self, p: usize, len: usize, vmas: u32, now_ms: u64) -> bool {
        self.with(|h| {
            if h.cached == CACHE_SLOTS || len > MAX_CACHED_BLOCK || !h.can_cache() {
                return false;
            }
            h.append(p, len, Vmas::unknown(vmas), now_ms);
            true
        })
    }

    /// Expires cached mappings freed more than `delay_ms` ago (the background purge
    /// thread's pass); they come back in `Evicted`.
    pub fn expire_cache(&self, now_ms: u64, delay_ms: u64) -> Evicted {
        let mut ev = Evicted::NONE;
        self.with(|h| h.expire(now_ms, delay_ms, &mut ev));
        ev
    }

    /// Empties the cache (`release_memory`): every mapping comes back in `Evicted`.
    pub fn drain_cache(&self) -> Evicted {
        let mut ev = Evicted::NONE;
        self.with(|h| h.evict_oldest_while(&mut ev, |_| true));
        ev
    }

    /// Live huge blocks, their bytes, and the bytes of cached mappings, read at once.
    pub fn totals(&self) -> (usize, usize, usize) {
        self.with(|h| (h.count, h.bytes, h.cached_bytes))
    }

    /// Calls `f(ptr, len)` for every huge block, under the registry lock (the checked
    /// mode's leak report and block validator). `f` must not call back into the
    /// registry.
    #[cfg(feature = "checked")]
    pub fn for_each(&self, mut f: impl FnMut(*mut u8, usize)) {
        self.with(|h| {
            for &first in &h.buckets {
                // SAFETY: a bucket head, under the lock.
                for rec in unsafe { chain(first) } {
                    f(rec.ptr as *mut u8, rec.len);
                }
            }
        })
    }

    /// Holds the lock (fork handlers).
    pub fn lock(&self) {
        self.lock.lock();
    }
    /// Releases `lock`.
    pub fn unlock(&self) {
        self.lock.unlock();
    }
}

/// The records of a bucket chain starting at `first`.
///
/// # Safety
/// `first` is null or a record of one of the registry's buckets (or a record's
/// `next`), and the registry lock is held for as long as the iterator is used: the
/// records are live and nobody relinks them meanwhile.
unsafe fn chain<'a>(first: *mut Record) -> impl Iterator<Item = &'a Record> {
    core::iter::successors(
        // SAFETY: per the contract.
        unsafe { first.as_ref() },
        // SAFETY: per the contract, for the next record of the chain.
        |r| unsafe { r.next.as_ref() },
    )
}

/// The link (a bucket head or a record's `next`) that points at `p`'s record, if
/// `p` is recorded. With the lock held (`h` comes from under it).
fn link_to(h: &mut Inner, p: *const u8) -> Option<*mut *mut Record> {
    let mut link: *mut *mut Record = &mut h.buckets[hash(p as usize)];
    // SAFETY: links and records are ours under the lock.
    unsafe {
        while !(*link).is_null() {
            if (**link).ptr == p as usize {
                return Some(link);
            }
            link = &mut (**link).next;
        }
    }
    None
}

/// `HugeRegistry::remove` with the lock held; also returns the record's `vmas`.
fn remove_locked(h: &mut Inner, p: *const u8) -> Option<(usize, Vmas)> {
    let link = link_to(h, p)?;
    // SAFETY: `link` points at `p`'s record; links and records are ours under the lock.
    unsafe {
        let r = *link;
        *link = (*r).next;
        (*r).next = h.spare;
        h.spare = r;
        h.count -= 1;
        h.bytes -= (*r).len;
        h.extra_vmas -= (*r).vmas.count() as usize - 1;
        Some(((*r).len, (*r).vmas))
    }
}

mod pieces;
mod validate;
mod vmas;
pub use pieces::{Evicted, Piece, Pieces};
pub use vmas::Vmas;

impl Default for HugeRegistry {
    fn default() -> Self {
        Self::new()
    }
}
