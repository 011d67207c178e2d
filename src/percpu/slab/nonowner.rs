//! What a thread that is not running on a CPU may do to that CPU's stacks: lock
//! the headers, fence, work, store the new `current` still locked, fence again and
//! unlock (see "Non-owners" in `slab.rs`); widen a capacity without the lock; and
//! read snapshots. Split from `slab.rs`, which keeps the layout, the critical
//! sections' wrappers and the validator.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::{DrainError, Hdr, LOCKED_BEGIN, Slab};

impl Slab {
    /// Locks the headers of `classes` on `cpu` and fences, runs `work` on each
    /// (class, unpacked header with `current` stable), stores the header `work`
    /// returns (with begin and end restored), and unlocks.
    pub(super) fn with_locked(
        &self,
        cpu: u32,
        classes: core::ops::Range<usize>,
        mut work: impl FnMut(usize, Hdr) -> Hdr,
    ) -> Result<(), DrainError> {
        if cpu >= self.ncpu || classes.end > self.nclasses {
            return Err(DrainError::OutOfRange);
        }
        self.fence.map_err(DrainError::NoFence)?;
        for k in classes.clone() {
            if !self.lock(cpu, k) {
                for j in classes.start..k {
                    self.unlock(cpu, j);
                }
                return Err(DrainError::Busy);
            }
        }
        // (The mutant switch, for loom-tests/run-mutants.sh: no fence, so a section
        // in flight may commit while the non-owner works.)
        let fenced = if cfg!(strata_mutant = "percpu_no_first_fence") {
            Ok(())
        } else {
            self.rseq_fence(cpu)
        };
        if let Err(e) = fenced {
            for k in classes {
                self.unlock(cpu, k);
            }
            return Err(DrainError::NoFence(e));
        }
        for k in classes.clone() {
            // Acquire: pairs with the fence's barrier on `cpu`; the slots below
            // `current` were written before the commit that set it.
            let h = Hdr::unpack(self.header(cpu, k).load(Ordering::Acquire));
            let new = work(k, h);
            self.set_locked(cpu, k, new);
        }
        // A section that started while the headers were locked read `current`
        // and then its bound in two loads: had it read the old `current` and we
        // unlocked before it read the bound, it would pass the check and commit
        // a stack top computed from the old `current` over the new one (objects
        // this non-owner took would come back: seen as duplicates). So the new
        // `current` goes in while still locked, and a second fence makes every
        // section that may have read the old one restart before the bounds
        // come back. Without that fence the headers stay locked (safe: every
        // section on them fails, and the slow paths go to the central tier).
        // (The mutant switch is the old bug, for loom-tests/run-mutants.sh: the new
        // `current` published by the unlock with no fence in between.)
        let mut fenced = if cfg!(strata_mutant = "percpu_one_fence") {
            Ok(())
        } else {
            self.rseq_fence(cpu)
        };
        for _ in 0..3 {
            if fenced.is_ok() {
                break;
            }
            fenced = self.rseq_fence(cpu);
        }
        if let Err(e) = fenced {
            return Err(DrainError::NoFence(e));
        }
        for k in classes {
            self.unlock(cpu, k);
        }
        Ok(())
    }

    /// Stores `new.current` and `new.end_copy` into the locked header of `class`
    /// on `cpu`, keeping it locked (after the fence: nothing else writes it).
    pub(super) fn set_locked(&self, cpu: u32, class: usize, new: Hdr) {
        let hdr = self.header(cpu, class);
        // Relaxed: the CAS below decides.
        let mut w = hdr.load(Ordering::Relaxed);
        loop {
            let h = Hdr::unpack(w);
            debug_check!(h.locked(), "Slab::set_locked: header not locked");
            let l = Hdr {
                current: new.current,
                end_copy: new.end_copy,
                ..h
            };
            // Release: the slots this non-owner wrote (none today) before the
            // `current` that covers them; the unlock publishes the rest.
            match hdr.compare_exchange_weak(w, l.pack(), Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => w = now,
            }
        }
    }

    /// Header lock (module docs): false if another non-owner holds it.
    pub(super) fn lock(&self, cpu: u32, class: usize) -> bool {
        let hdr = self.header(cpu, class);
        // Relaxed: the CAS below decides.
        let mut w = hdr.load(Ordering::Relaxed);
        loop {
            let h = Hdr::unpack(w);
            if h.locked() {
                return false;
            }
            let l = Hdr {
                end: 0,
                begin: LOCKED_BEGIN,
                ..h
            };
            // SeqCst: the lock must be visible before the fence asks the CPU to
            // restart; the fence itself is a full barrier there. A commit of a section
            // racing with us changes `current` and fails this CAS: retry.
            match hdr.compare_exchange_weak(w, l.pack(), Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// Unlocks: restores begin and end (from `end_copy`), keeping `current` as it
    /// is: the one [`Slab::set_locked`] stored before the second fence, or, after
    /// a failed lock or fence, whatever a late commit left.
    pub(super) fn unlock(&self, cpu: u32, class: usize) {
        let hdr = self.header(cpu, class);
        let b = self.begin[class];
        // Relaxed: the CAS below decides.
        let mut w = hdr.load(Ordering::Relaxed);
        loop {
            let h = Hdr::unpack(w);
            debug_check!(h.locked(), "Slab::unlock: header not locked");
            let u = Hdr {
                end: h.end_copy,
                begin: b,
                ..h
            };
            // Release: publishes the drained or resized state (and the slots the
            // non-owner wrote, if any) to the next critical section on that CPU.
            match hdr.compare_exchange_weak(w, u.pack(), Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => w = now,
            }
        }
    }

    /// Hands every object cached on CPU `cpu` to `f` as `(class, object)`, top of
    /// each stack first, leaving them cached: the headers are locked and the CPU
    /// fenced meanwhile ("Non-owners"), so no section on it pushes or pops while `f`
    /// looks. Stops at the first `Err` of `f` and returns it (after unlocking).
    pub fn inspect_cpu<E>(
        &self,
        cpu: u32,
        mut f: impl FnMut(usize, NonNull<u8>) -> Result<(), E>,
    ) -> Result<Result<(), E>, DrainError> {
        let mut res = Ok(());
        self.with_locked(cpu, 0..self.nclasses, |k, h| {
            if res.is_ok() {
                self.take_above(cpu, k, h.current, self.begin[k], &mut |k, p| {
                    if res.is_ok() {
                        res = f(k, p);
                    }
                });
            }
            h
        })?;
        Ok(res)
    }

    /// Empties `class` on CPU `cpu` from any thread, handing each object to `f`
    /// (top of the stack first); returns how many. See "Non-owners".
    pub fn drain(
        &self,
        cpu: u32,
        class: usize,
        mut f: impl FnMut(NonNull<u8>),
    ) -> Result<usize, DrainError> {
        let mut n = 0;
        self.with_locked(cpu, class..class + 1, |k, h| {
            n += self.take_above(cpu, k, h.current, self.begin[k], &mut |_, p| f(p));
            Hdr {
                current: self.begin[k],
                ..h
            }
        })?;
        Ok(n)
    }

    /// Empties every class on CPU `cpu` (one fence for all), handing `(class,
    /// object)` to `f`; returns how many objects.
    pub fn drain_cpu(
        &self,
        cpu: u32,
        mut f: impl FnMut(usize, NonNull<u8>),
    ) -> Result<usize, DrainError> {
        let mut n = 0;
        self.with_locked(cpu, 0..self.nclasses, |k, h| {
            n += self.take_above(cpu, k, h.current, self.begin[k], &mut f);
            Hdr {
                current: self.begin[k],
                ..h
            }
        })?;
        Ok(n)
    }

    /// Sets the capacity of `class` on CPU `cpu` (at most its `max_cap`), handing the
    /// objects above a lowered capacity to `f`; returns how many it handed over.
    pub fn set_capacity(
        &self,
        cpu: u32,
        class: usize,
        cap: u16,
        mut f: impl FnMut(NonNull<u8>),
    ) -> Result<usize, DrainError> {
        if class >= self.nclasses || cap > self.max_cap[class] {
            return Err(DrainError::OutOfRange);
        }
        self.set_ends(cpu, class..class + 1, |_| cap, |_, p| f(p))
    }

    /// Raises the capacity of `class` on CPU `cpu` to `cap` (at most the class's
    /// `max_cap`) from any thread, without the lock or a fence; returns whether it
    /// did (false when the header is locked by a non-owner or its capacity is
    /// already `cap` or more).
    ///
    /// Widening is safe beside the critical sections: one CAS swaps `end` and
    /// `end_copy` in the header word, and fails (to be retried) if a section
    /// committed a new `current` since the word was read; a section that read the
    /// old word checks against the old, lower bound, which is still inside the
    /// class's slots (header invariant 1 holds before and after). Lowering it
    /// would not be: a push that read the old bound could fill a slot above the new
    /// one, so [`Slab::set_capacities`] locks and fences.
    pub fn grow_capacity(&self, cpu: u32, class: usize, cap: u16) -> bool {
        if cpu >= self.ncpu || class >= self.nclasses {
            return false;
        }
        let cap = cap.min(self.max_cap[class]);
        let new_end = self.begin[class] + cap;
        let hdr = self.header(cpu, class);
        // Relaxed: the CAS below decides.
        let mut w = hdr.load(Ordering::Relaxed);
        loop {
            let h = Hdr::unpack(w);
            // (The mutant switch, for loom-tests/run-mutants.sh: a locked header
            // widened, which lets pushes in while a non-owner works.)
            let locked = h.locked() && !cfg!(strata_mutant = "percpu_grow_locked");
            if locked || h.end >= new_end {
                return false;
            }
            let u = Hdr {
                end: new_end,
                end_copy: new_end,
                ..h
            };
            // Relaxed: the new bound publishes no memory (slots above `current`
            // are written by the section that fills them, before its commit).
            match hdr.compare_exchange_weak(w, u.pack(), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// Sets the capacity of every class on CPU `cpu` at once, class `k` to
    /// `caps[k]` (clamped to its `max_cap`; classes beyond `caps.len()` keep
    /// theirs), with one lock-and-fence for all ("Non-owners"); objects above a
    /// lowered capacity are handed to `f` as `(class, object)`, top first. Returns
    /// how many it handed over.
    pub fn set_capacities(
        &self,
        cpu: u32,
        caps: &[u16],
        f: impl FnMut(usize, NonNull<u8>),
    ) -> Result<usize, DrainError> {
        let classes = 0..self.nclasses.min(caps.len());
        self.set_ends(cpu, classes, |k| caps[k].min(self.max_cap[k]), f)
    }

    /// Sets the capacity of each class in `classes` on CPU `cpu` to `cap(k)` (at
    /// most its `max_cap`, which the callers checked or applied) under the lock
    /// and its fences, handing what lies above a lowered capacity to `f`; returns
    /// how many objects that was. The body of both capacity setters.
    fn set_ends(
        &self,
        cpu: u32,
        classes: core::ops::Range<usize>,
        cap: impl Fn(usize) -> u16,
        mut f: impl FnMut(usize, NonNull<u8>),
    ) -> Result<usize, DrainError> {
        let mut n = 0;
        self.with_locked(cpu, classes, |k, h| {
            let new_end = self.begin[k] + cap(k);
            let keep = h.current.min(new_end);
            n += self.take_above(cpu, k, h.current, keep, &mut f);
            Hdr {
                current: keep,
                end_copy: new_end,
                ..h
            }
        })?;
        Ok(n)
    }

    /// The capacity, in bytes, of every class on CPU `cpu` together, for objects of
    /// `sizes[k]` bytes in class `k` (a snapshot; 0 for a CPU out of range).
    pub fn capacity_bytes(&self, cpu: u32, sizes: &[u32]) -> usize {
        let mut total = 0;
        for (k, &size) in sizes.iter().enumerate().take(self.nclasses) {
            if let Some((_, cap)) = self.len_and_capacity(cpu, k) {
                total += cap * size as usize;
            }
        }
        total
    }

    /// The header word of `class` on CPU `cpu` (a snapshot): what changes at every
    /// push and pop there; 0 when out of range.
    pub fn header_word(&self, cpu: u32, class: usize) -> u64 {
        if cpu >= self.ncpu || class >= self.nclasses {
            return 0;
        }
        // Relaxed: a snapshot; no other memory is read on its strength.
        self.header(cpu, class).load(Ordering::Relaxed)
    }

    /// Hands the objects in slots `[to, from)` of `class` on `cpu` to `f`, top first.
    pub(super) fn take_above(
        &self,
        cpu: u32,
        class: usize,
        from: u16,
        to: u16,
        f: &mut impl FnMut(usize, NonNull<u8>),
    ) -> usize {
        let mut n = 0;
        let mut u = from;
        while u > to {
            u -= 1;
            // Relaxed: ordered by the Acquire load of the header after the fence.
            let p = self.slot(cpu, u).load(Ordering::Relaxed) as *mut u8;
            match NonNull::new(p) {
                Some(p) => {
                    f(class, p);
                    n += 1;
                }
                None => {
                    debug_check!(false, "Slab: null object in a slot (header invariant 3)");
                }
            }
        }
        n
    }
}
