//! Huge blocks: requests above [`HUGE_THRESHOLD`](crate::size_class::HUGE_THRESHOLD)
//! (or aligned beyond what a span can be trimmed to) get a mapping of their own. A
//! small registry (hash of records from the metadata arena, under a lock) remembers
//! each mapping's length, so that `free` without a size, `realloc` by `mremap`, and
//! "is this pointer ours?" work for them too. Huge requests are rare and each costs a
//! syscall, so the lock is never the bottleneck.

use crate::meta::MetaArena;
use crate::os::Os;
use crate::sync::{RawLock, UnsafeCell};
use core::ptr;

const BUCKETS: usize = 256;

struct Record {
    ptr: usize,
    len: usize,
    next: *mut Record,
}

struct Inner {
    buckets: [*mut Record; BUCKETS],
    spare: *mut Record,
    count: usize,
    bytes: usize,
}

/// The registry of huge mappings.
///
/// Invariants: 1. every live huge block has exactly one record, in bucket
/// `hash(ptr)`; 2. `count`/`bytes` are the number and total length of records.
pub struct HugeRegistry {
    lock: RawLock,
    inner: UnsafeCell<Inner>,
}

// SAFETY: `inner` is only touched with `lock` held.
unsafe impl Sync for HugeRegistry {}
// SAFETY: as above.
unsafe impl Send for HugeRegistry {}

fn hash(p: usize) -> usize {
    ((p >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) % BUCKETS
}

impl HugeRegistry {
    crate::sync::loom_const_fn! {
        pub fn new() -> HugeRegistry {
            HugeRegistry {
                lock: RawLock::new(),
                inner: UnsafeCell::new(Inner { buckets: [ptr::null_mut(); BUCKETS], spare: ptr::null_mut(), count: 0, bytes: 0 }),
            }
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let _g = self.lock.guard();
        // SAFETY: lock held.
        self.inner.with_mut(|i| f(unsafe { &mut *i }))
    }

    /// Records a mapping; false if no record could be had.
    pub fn insert(&self, os: &impl Os, meta: &MetaArena, p: *mut u8, len: usize) -> bool {
        self.with(|h| {
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
                    next: h.buckets[b],
                })
            };
            h.buckets[b] = r;
            h.count += 1;
            h.bytes += len;
            true
        })
    }

    /// The length of the mapping starting at `p`, if `p` is a huge block.
    pub fn lookup(&self, p: *const u8) -> Option<usize> {
        self.with(|h| {
            let mut r = h.buckets[hash(p as usize)];
            while !r.is_null() {
                // SAFETY: records in buckets are ours under the lock.
                let rec = unsafe { &*r };
                if rec.ptr == p as usize {
                    return Some(rec.len);
                }
                r = rec.next;
            }
            None
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
            let b = hash(p as usize);
            let mut link: *mut *mut Record = &mut h.buckets[b];
            // SAFETY: links and records are ours under the lock.
            unsafe {
                while !(*link).is_null() {
                    let r = *link;
                    if (*r).ptr == p as usize {
                        let old_len = (*r).len;
                        let q = resize(old_len);
                        if !q.is_null() {
                            *link = (*r).next;
                            (*r).ptr = q as usize;
                            (*r).len = new_len;
                            h.bytes = h.bytes - old_len + new_len;
                            let nb = hash(q as usize);
                            (*r).next = h.buckets[nb];
                            h.buckets[nb] = r;
                        }
                        return Some(q);
                    }
                    link = &mut (*r).next;
                }
            }
            None
        })
    }

    /// Forgets the mapping at `p`; returns its length.
    pub fn remove(&self, p: *const u8) -> Option<usize> {
        self.with(|h| {
            let b = hash(p as usize);
            let mut link: *mut *mut Record = &mut h.buckets[b];
            // SAFETY: links and records are ours under the lock.
            unsafe {
                while !(*link).is_null() {
                    let r = *link;
                    if (*r).ptr == p as usize {
                        *link = (*r).next;
                        (*r).next = h.spare;
                        h.spare = r;
                        h.count -= 1;
                        h.bytes -= (*r).len;
                        return Some((*r).len);
                    }
                    link = &mut (*r).next;
                }
            }
            None
        })
    }

    /// Calls `f(ptr, len)` for every huge block, under the registry lock (the checked
    /// mode's leak report and block validator). `f` must not call back into the
    /// registry.
    #[cfg(feature = "checked")]
    pub fn for_each(&self, mut f: impl FnMut(*mut u8, usize)) {
        self.with(|h| {
            for &first in &h.buckets {
                let mut r = first;
                while !r.is_null() {
                    // SAFETY: records in buckets are ours under the lock.
                    let rec = unsafe { &*r };
                    f(rec.ptr as *mut u8, rec.len);
                    r = rec.next;
                }
            }
        })
    }

    /// Checks invariants 1 and 2: every record sits in bucket `hash(ptr)`, no pointer
    /// is recorded twice, and `count`/`bytes` add up.
    pub fn validate(&self) -> Result<(), crate::Violation> {
        use crate::page_heap::check;
        self.with(|h| {
            let (mut count, mut bytes) = (0, 0);
            for (b, &head) in h.buckets.iter().enumerate() {
                let mut r = head;
                while !r.is_null() {
                    // SAFETY: records in buckets are ours under the lock.
                    let rec = unsafe { &*r };
                    check(
                        hash(rec.ptr) == b,
                        "HugeRegistry",
                        1,
                        "record in the wrong bucket",
                        rec.ptr,
                    )?;
                    let mut later = rec.next;
                    while !later.is_null() {
                        // SAFETY: as above.
                        let other = unsafe { &*later };
                        check(
                            other.ptr != rec.ptr,
                            "HugeRegistry",
                            1,
                            "pointer recorded twice",
                            rec.ptr,
                        )?;
                        later = other.next;
                    }
                    count += 1;
                    bytes += rec.len;
                    r = rec.next;
                }
            }
            check(
                count == h.count && bytes == h.bytes,
                "HugeRegistry",
                2,
                "count/bytes differ from the records",
                0,
            )
        })
    }

    /// Number of huge blocks and their total mapped bytes.
    pub fn totals(&self) -> (usize, usize) {
        self.with(|h| (h.count, h.bytes))
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

impl Default for HugeRegistry {
    fn default() -> Self {
        Self::new()
    }
}
