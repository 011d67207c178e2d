//! A sleeping thread's cache drained by another thread (the background purge
//! thread), so that what idle threads cache goes back to the central tier without
//! their help, and without a cost on the fast paths (they are unchanged: no flag,
//! no fence, no atomic instruction).
//!
//! # The protocol
//!
//! Owner: every slow path and every API call that changes the heap (refill, flush,
//! budget, thread exit) holds the heap's `drain_lock` (rank `ThreadHeap`, below the
//! central tier's). The fast paths (`pop`, `try_push`) take no lock: each loads
//! the heap pointer from the thread's TLS slot, then touches the list's head, its
//! first object's link word, `len` and `allocs`, and nothing else.
//!
//! Drainer ([`ThreadHeap::try_drain_idle`], under the pool lock):
//! 1. The heap's activity ([`ThreadHeap::activity`], a sum of counters that grows
//!    with every pop, push and move) was the same at the last `passes` passes: its
//!    thread has not used it for that long.
//! 2. Take `drain_lock` without waiting (held: the owner is in a slow path; skip).
//! 3. Swap the owner's TLS slot from the heap to the `Drained` sentinel (a CAS: an
//!    exiting thread's slot holds `DEAD` instead, and nothing is done), then a
//!    SeqCst fence.
//! 4. Read the owner's scheduler state (`/proc/self/task/<tid>/stat`): it must be
//!    `S`, blocked in an interruptible wait in the kernel, and inside a system
//!    call (`/proc/self/task/<tid>/syscall` names one; `platform::thread_sleeping`).
//!    Otherwise put the slot back (CAS) and stop.
//! 5. Move every list's objects but the first two to the central tier; lower the
//!    maxima to what is left; mark the heap `drained`; release the lock. The slot
//!    stays at the sentinel.
//!
//! Owner, later: its next operation loads the sentinel, whose fast paths miss
//! (empty lists, `max == 0`); the slow path finds its heap again through the
//! thread key (`global`), takes `drain_lock`, recounts the lists (`settle`), points
//! the slot back at the heap and goes on.
//!
//! # Why the owner cannot be using the lists meanwhile
//!
//! - Its slow paths hold `drain_lock`, which the drainer holds from step 2 to 5.
//! - An operation that starts after step 3 loads the sentinel: the owner was
//!   blocked in the kernel at step 4, after the drainer's swap and fence; when it
//!   wakes, the kernel's scheduling (run-queue lock, full barriers) orders its
//!   next load of the slot after the drainer's read of its state, so it reads the
//!   sentinel (the store-buffering pattern with a fence on both sides).
//! - An operation that loaded the heap pointer before step 3 and is still under
//!   way: a fast path makes no system call, so a thread found asleep inside one
//!   is not inside a fast path, except where a signal handler interrupted a
//!   `malloc` and then waits in a system call of its own. (Preempted: `R`; a
//!   page-fault wait: `D`, or `S` with no system call, as on `userfaultfd`
//!   memory or in the cgroup freezer's stop after an interrupt; stopped or
//!   traced: `T`, `t`; all refused.) For that one case, step 5 leaves the first
//!   two objects of every list: the one operation that can be in flight (a thread runs one at a time,
//!   and a signal handler may not allocate) touches only the head and the first
//!   object's link (a pop reads `e0`'s link and stores the head; a push writes the
//!   new object's link and stores the head), never the link of `e1` that the cut
//!   rewrites, nor any object after it. The drainer reads the head and the first
//!   two links with volatile loads and gives a class up if they do not decode
//!   (a pop that cleared `e0`'s link under it); `try_push` stores the new link
//!   before the head (a compiler fence keeps that order; x86-64 keeps stores in
//!   order), so a head the drainer sees always links on. Only in that stopped
//!   case, and only if the thread resumes during the drain itself (microseconds),
//!   do the two touch the same words at once; the drain is built for x86-64 Linux
//!   only, whose stores are seen in program order. The in-flight operation may
//!   write a stale `len`: `settle` recounts.
//! - A thread that exits: `on_thread_exit` points its slot at `DEAD` (the CAS of
//!   step 3 then fails), and the heap's retirement takes `drain_lock`, settles and
//!   turns drains off before the thread's TLS goes away.
//! - A forked child: heaps of threads that do not exist there are never drained
//!   (`forget_drains_after_fork`), and the forking thread's heap takes its new
//!   thread id.

use super::ThreadHeap;
use crate::backend::Backend;
use crate::link::{FreeObj, end_to_null};
use crate::os::Os;
use crate::size_class::{CLASS_BATCH, CLASS_SIZE, SizeClass};
use crate::sync::{AtomicPtr, LockGuard, Ordering, fence};
use core::ptr;

/// Objects each list keeps through a drain (see the module docs: the most an
/// operation in flight can touch).
pub const KEEP: u32 = 2;

impl ThreadHeap {
    /// A number that grows whenever the heap's owner allocates, frees or moves
    /// objects through it (any thread may ask): pops count in `allocs`, pushes in
    /// `len` until a flush moves them (`returned`), refills in `received`.
    pub fn activity(&self) -> u64 {
        let mut a = self.received.get().wrapping_add(self.returned.get());
        for l in &self.lists {
            a = a
                .wrapping_add(l.allocs.get())
                .wrapping_add(u64::from(l.len.get()));
        }
        a
    }

    /// Makes the heap drainable: its owner is thread `tid`, whose TLS slot is at
    /// `slot`. The owner calls it once its slot points at the heap and the thread
    /// key holds it (so that it finds the heap again after a drain).
    pub fn enable_drain(&self, tid: u32, slot: *const AtomicPtr<ThreadHeap>) {
        // Relaxed: read by the drainer under `drain_lock`, which the owner takes
        // before its next slow path; a drainer that misses the values skips.
        self.slot.store(slot as usize, Ordering::Relaxed);
        self.tid.store(tid, Ordering::Relaxed);
    }

    /// No more drains (the owner's exit, with `drain_lock` held, or a forked child
    /// for heaps whose threads are gone).
    pub fn disable_drain(&self) {
        // Relaxed: under `drain_lock` (or in a child with one thread).
        self.tid.store(0, Ordering::Relaxed);
        self.slot.store(0, Ordering::Relaxed);
    }

    /// Whether a drainer may reach the heap (an owner's thread id and slot set).
    pub fn drainable(&self) -> bool {
        // Relaxed: a reading for validation (the owner's, or under the pool lock).
        self.tid.load(Ordering::Relaxed) != 0 || self.slot.load(Ordering::Relaxed) != 0
    }

    /// A forked child's own heap: its thread has a new id there.
    pub fn set_drain_tid(&self, tid: u32) {
        if self.tid.load(Ordering::Relaxed) != 0 {
            self.tid.store(tid, Ordering::Relaxed);
        }
    }

    /// Takes the heap's drain lock (the owner, around a slow path).
    #[inline]
    pub(crate) fn lock_for_owner(&self) -> LockGuard<'_> {
        self.drain_lock.guard()
    }

    /// Runs `f` with the heap's drain lock held (the owner's slow paths, for the
    /// models and tests outside the crate).
    pub fn with_drain_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.lock_for_owner();
        f()
    }

    /// Whether a drain emptied the heap since its owner last settled it.
    #[inline]
    pub fn was_drained(&self) -> bool {
        // Acquire: pairs with the drainer's Release store; the lock already orders
        // the drain's writes before the owner's (both hold it).
        self.drained.load(Ordering::Acquire)
    }

    /// After a drain: recounts every list (an operation that was in flight during
    /// the drain may have stored a stale `len`), fits the maxima and clears the
    /// mark.
    ///
    /// # Safety
    /// The calling thread owns the heap and holds its drain lock.
    pub unsafe fn settle(&self) {
        if !self.was_drained() {
            return;
        }
        for (ci, list) in self.lists.iter().enumerate() {
            let c = SizeClass(ci as u8);
            let mut n = 0u32;
            let mut p = list.head.get();
            while !p.is_null() {
                n += 1;
                // SAFETY: a free object of the list (invariant 1), ours.
                p = unsafe { FreeObj::next(p, c) };
            }
            list.len.set(n);
            if list.max.get() < n {
                list.max.set(n);
            }
        }
        self.max_bytes.set(self.lists_max_bytes());
        // Relaxed: under the lock.
        self.drained.store(false, Ordering::Relaxed);
    }

    /// Drains the heap if its owner has left it alone for `passes` calls in a row
    /// (0: whatever it did before: `release_memory`) and sleeps now (the module
    /// docs' protocol); the bytes moved to the central
    /// tier. `sentinel` is the `Drained` heap the owner's slot is pointed at;
    /// `sleeping` tells whether a thread id's thread is blocked in the kernel.
    ///
    /// # Safety
    /// The caller holds the pool lock (the heap stays on the list of all heaps and
    /// the bookkeeping fields are the caller's), `sentinel` is a `Drained` sentinel
    /// and `be` the backend of the heap's objects.
    pub unsafe fn try_drain_idle<O: Os>(
        &self,
        sentinel: *mut ThreadHeap,
        passes: u32,
        sleeping: impl Fn(u32) -> Option<bool>,
        be: &Backend<O>,
    ) -> usize {
        // Relaxed throughout the bookkeeping: the pool lock serialises drainers.
        if self.tid.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        if passes > 0 {
            let now = self.activity();
            if now != self.idle_activity.load(Ordering::Relaxed) {
                self.idle_activity.store(now, Ordering::Relaxed);
                self.idle_passes.store(0, Ordering::Relaxed);
                return 0;
            }
            let seen = self.idle_passes.load(Ordering::Relaxed).saturating_add(1);
            self.idle_passes.store(seen, Ordering::Relaxed);
            if seen < passes {
                return 0;
            }
        }
        if self.drained.load(Ordering::Relaxed) {
            return 0;
        }
        // Nothing beyond what a drain keeps: not worth the system calls.
        if self.lists.iter().all(|l| l.len.get() <= KEEP) {
            return 0;
        }
        if !self.drain_lock.try_lock() {
            return 0;
        }
        let bytes = self.drain_locked(sentinel, &sleeping, be);
        self.drain_lock.unlock();
        if bytes > 0 {
            // The heap changed: the next pass must see it idle again from here.
            self.idle_activity.store(self.activity(), Ordering::Relaxed);
        }
        bytes
    }

    /// Steps 3 to 5 of the protocol, with `drain_lock` held.
    fn drain_locked<O: Os>(
        &self,
        sentinel: *mut ThreadHeap,
        sleeping: &impl Fn(u32) -> Option<bool>,
        be: &Backend<O>,
    ) -> usize {
        // Relaxed: written by the owner before a slow path it took the lock for,
        // or under the lock at exit.
        let slot = self.slot.load(Ordering::Relaxed) as *const AtomicPtr<ThreadHeap>;
        let tid = self.tid.load(Ordering::Relaxed);
        if slot.is_null() || tid == 0 {
            return 0;
        }
        let me = ptr::from_ref(self).cast_mut();
        // SAFETY: `slot` is the owner's TLS slot, alive while the heap is drainable
        // (the owner turns drains off under this lock before its TLS goes away),
        // aligned for a pointer; the owner reads and writes it with single
        // 8-byte moves (`platform::thread_slot!`), so it is an atomic pointer to
        // this access (under loom, the model's own atomic).
        let slot = unsafe { &*slot };
        // SeqCst: the swap, then the fence, then the read of the owner's state:
        // the store-buffering order of the module docs.
        if slot
            .compare_exchange(me, sentinel, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return 0;
        }
        // Mutant: no fence between the swap and the read of the owner's state.
        #[cfg(not(strata_mutant = "drain_no_fence"))]
        fence(Ordering::SeqCst);
        if sleeping(tid) != Some(true) {
            // SeqCst: as above. Fails only if the owner's exit stored DEAD since.
            let _ = slot.compare_exchange(sentinel, me, Ordering::SeqCst, Ordering::Relaxed);
            return 0;
        }
        // The owner sleeps and finds the sentinel when it wakes: we own the heap
        // until the lock is released (see the module docs for the one operation
        // that may be in flight, and why the first two objects stay).
        #[cfg(strata_loom)]
        self.touch();
        self.begin_move();
        let mut bytes = 0;
        for (ci, (list, &size)) in self.lists.iter().zip(CLASS_SIZE.iter()).enumerate() {
            // SAFETY: this thread owns the heap (above).
            let n = unsafe { self.drain_class(ci, be) };
            if n > 0 {
                self.returned.add(n as u64);
                bytes += n * size as usize;
                list.max.set(KEEP);
            } else if list.max.get() > KEEP && list.len.get() <= KEEP {
                list.max.set(KEEP);
            }
            list.forget_growth();
        }
        self.note_flow(-(bytes as isize), be);
        self.max_bytes.set(self.lists_max_bytes());
        // SAFETY: this thread owns the heap for the drain (above).
        unsafe { self.give_back_room(be) };
        self.end_move();
        // Release: the owner's Acquire load in `was_drained` (the lock orders it
        // too; this keeps the mark meaningful to a reader without the lock).
        self.drained.store(true, Ordering::Release);
        bytes
    }

    /// Moves every object of list `ci` after its first [`KEEP`] to the central
    /// tier; how many.
    ///
    /// # Safety
    /// The calling thread owns the heap for the drain (`drain_locked`).
    unsafe fn drain_class<O: Os>(&self, ci: usize, be: &Backend<O>) -> usize {
        let c = SizeClass(ci as u8);
        let list = &self.lists[ci];
        if list.len.get() <= KEEP {
            return 0;
        }
        // The head and the first two links may be what an operation in flight
        // (module docs) is writing: volatile loads, and a class whose words do not
        // decode is left alone. From the third object on nothing can change.
        let e0 = end_to_null(list.head.raw_volatile());
        if e0.is_null() {
            return 0;
        }
        // SAFETY: `e0` is the list's first object (invariant 1), ours.
        let Some(e1) = (unsafe { self.peek_link(e0) }) else {
            return 0;
        };
        if e1.is_null() {
            return 0;
        }
        // SAFETY: as for `e0`: the list's second object.
        let Some(mut rest) = (unsafe { self.peek_link(e1) }) else {
            return 0;
        };
        // SAFETY: `e1` is ours (above); the list now ends after it.
        unsafe { FreeObj::set_next(e1, ptr::null_mut()) };
        let mut moved = 0;
        let batch = CLASS_BATCH[ci] as usize;
        while !rest.is_null() {
            // Up to a batch, each link read once and checked (a corrupt one
            // aborts).
            let mut n = 1;
            let mut tail = rest;
            // SAFETY: `tail` is a free object of the cut chain, ours.
            let mut next = unsafe { FreeObj::next(tail, c) };
            while n < batch && !next.is_null() {
                tail = next;
                // SAFETY: as above.
                next = unsafe { FreeObj::next(tail, c) };
                n += 1;
            }
            // SAFETY: `tail` is ours; the batch ends here.
            unsafe { FreeObj::set_next(tail, ptr::null_mut()) };
            // SAFETY: `rest` starts a null-terminated chain of exactly `n` class-c
            // objects of `be`, which nobody uses now.
            unsafe { be.flush(c, rest, n) };
            moved += n;
            rest = next;
        }
        list.len.set(KEEP);
        moved
    }

    /// The decoded link of `obj` (`FreeObj::peek_next` with the heap's key copy).
    ///
    /// # Safety
    /// `obj` is an object of one of the heap's lists.
    unsafe fn peek_link(&self, obj: *mut FreeObj) -> Option<*mut FreeObj> {
        // SAFETY: forwarded contract; the key is the process's (invariant 5).
        unsafe { FreeObj::peek_next(obj, self.link_key.get()) }
    }
}
